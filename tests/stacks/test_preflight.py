"""stacks.preflight against STS in moto: the plant's account must be the credentials' account."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from moto import mock_aws

from stacks import preflight

from .conftest import PLANTS, RELEASES

MOTO_ACCOUNT = "123456789012"  # moto's default account, also the shipped plants' placeholder


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def run(*argv: str) -> tuple[int, str]:
    out = StringIO()
    code = preflight.main(
        ["--plants-dir", str(PLANTS), "--releases-dir", str(RELEASES), *argv], out=out
    )
    return code, out.getvalue()


def bootstrap() -> None:
    """What `cdk bootstrap` leaves that the CDK CLI reads: the bootstrap version parameter."""
    import boto3

    boto3.client("ssm", region_name="eu-west-1").put_parameter(
        Name=preflight.BOOTSTRAP_PARAMETER, Value="30", Type="String"
    )


def test_credentials_for_the_plants_account_pass(aws: None) -> None:
    bootstrap()
    code, text = run("--plant", "demo")
    assert code == 0
    assert text == (
        "ok: deploying LineGuard-Shared-123456789012-eu-west-1 and LineGuard-Plant-demo "
        "to 123456789012/eu-west-1\n"
    )


def test_credentials_for_another_account_are_refused_with_what_to_change(
    aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plants = tmp_path / "plants"
    plants.mkdir()
    source = (PLANTS / "demo.yaml").read_text().replace(MOTO_ACCOUNT, "210987654321")
    (plants / "demo.yaml").write_text(source)
    code = preflight.main(
        ["--plant", "demo", "--plants-dir", str(plants), "--releases-dir", str(RELEASES)]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {plants}/demo.yaml: account: the plant file says 210987654321")
    assert "credentials are for account 123456789012" in err


def test_a_region_not_bootstrapped_is_named_with_the_command(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--plant", "demo")[0] == 1
    assert capsys.readouterr().err.strip() == (
        "error: 123456789012/eu-west-1 is not bootstrapped for the CDK: run "
        "make bootstrap PLANT=demo"
    )


def test_no_credentials_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert run("--plant", "demo")[0] == 1
    assert capsys.readouterr().err.startswith(
        "error: no usable AWS credentials (NoCredentialsError"
    )


def test_unknown_plant_is_a_plant_file_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--plant", "nowhere")[0] == 2
    assert "unknown plant 'nowhere'" in capsys.readouterr().err


ARTIFACTS = "lineguard-artifacts-123456789012-eu-west-1"  # the demo plant's artifact bucket
S3_RELEASES = f"s3://{ARTIFACTS}/rollout/releases/"


def artifacts(*objects: tuple[str, bytes]) -> None:
    import boto3

    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(
        Bucket=ARTIFACTS, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    for key, body in objects:
        s3.put_object(Bucket=ARTIFACTS, Key=key, Body=body)


def test_a_first_deploy_from_the_s3_releases_passes_before_the_bucket_exists(aws: None) -> None:
    bootstrap()
    code, text = run("--plant", "demo", "--releases-dir", S3_RELEASES)
    assert code == 0 and text.startswith("ok: deploying")


def test_a_deploy_from_the_repository_after_a_promotion_is_refused(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap()
    artifacts(("rollout/releases/demo.json", (RELEASES / "demo.json").read_bytes()))
    # the default --releases-dir is the repository's bootstrap copy: it would revert the rings
    assert run("--plant", "demo")[0] == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the rollout controller keeps plant demo's release at ")
    assert f"-c releases_dir={S3_RELEASES}" in err
    # from the bucket, as make deploy does, it passes
    assert run("--plant", "demo", "--releases-dir", S3_RELEASES)[0] == 0


@pytest.mark.parametrize(("status", "refused"), [("in_progress", True), ("rolling_back", True),
                                                  ("completed", False), ("rolled_back", False)])  # fmt: skip
def test_a_deploy_during_a_promotion_is_refused(
    aws: None, capsys: pytest.CaptureFixture[str], status: str, refused: bool
) -> None:
    import json

    bootstrap()
    state = {"status": status, "model_version": "1.4.0"}
    artifacts(("rollout/state/demo.json", json.dumps(state).encode()))
    code, _ = run("--plant", "demo", "--releases-dir", S3_RELEASES)
    assert code == (1 if refused else 0)
    if refused:
        err = capsys.readouterr().err
        assert f"com.lineguard.Model 1.4.0 is {status.replace('_', ' ')}" in err
        assert f"python -m rollout rollback --plant demo --artifact-bucket {ARTIFACTS}" in err


def test_the_releases_url_of_a_plant(capsys: pytest.CaptureFixture[str]) -> None:
    from stacks import release_store

    assert release_store.main(["url", "--plant", "demo", "--plants-dir", str(PLANTS)]) == 0
    assert capsys.readouterr().out.strip() == S3_RELEASES
    assert release_store.main(["url", "--plant", "nope", "--plants-dir", str(PLANTS)]) == 2

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

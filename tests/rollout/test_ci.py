"""CI starts the CodeBuild promotion and follows it (rollout/ci.py, ``start-promotion``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from rollout.ci import follow, start_promotion
from rollout.cli import main
from rollout.errors import AwsError

REGION = "eu-west-1"
ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/lineguard-inspection/3"


@pytest.fixture
def codebuild(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        client = boto3.client("codebuild", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="promotion", AssumeRolePolicyDocument="{}")["Role"]
        client.create_project(
            name="lineguard-promotion",
            source={"type": "S3", "location": "bucket/source.zip"},
            artifacts={"type": "NO_ARTIFACTS"},
            environment={
                "type": "LINUX_CONTAINER",
                "image": "aws/codebuild/standard:7.0",
                "computeType": "BUILD_GENERAL1_SMALL",
            },  # fmt: skip
            serviceRole=role["Arn"],
        )
        yield client


def test_start_promotion_overrides_the_model_package_and_the_plant(codebuild: Any) -> None:
    sent: dict[str, Any] = {}
    codebuild.meta.events.register_first(
        "before-parameter-build.codebuild.StartBuild", lambda params, **_: sent.update(params)
    )
    build = start_promotion(codebuild, "lineguard-promotion", model_package_arn=ARN, plant="demo")
    assert build.startswith("lineguard-promotion:")
    (started,) = codebuild.batch_get_builds(ids=[build])["builds"]
    assert started["projectName"] == "lineguard-promotion"
    env = {v["name"]: v["value"] for v in sent["environmentVariablesOverride"]}
    assert env == {"MODEL_PACKAGE_ARN": ARN, "PLANTS": "demo"}  # what the buildspec reads
    with pytest.raises(AwsError, match="codebuild.start_build"):
        start_promotion(codebuild, "no-such-project", model_package_arn=ARN, plant="demo")


def test_the_cli_starts_and_follows_to_the_end(codebuild: Any, capsys: Any) -> None:
    code = main(["start-promotion", "--plant", "demo", "--model-package", ARN,
                 "--project", "lineguard-promotion", "--region", REGION,
                 "--poll-seconds", "0"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0 and "succeeded" in out.out and "started lineguard-promotion" in out.err


def stubbed(statuses: list[tuple[str, str]]) -> tuple[Any, Stubber]:
    client = boto3.client(
        "codebuild", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    stub = Stubber(client)
    for status, phase in statuses:
        stub.add_response(
            "batch_get_builds",
            {"builds": [{"id": "p:1", "buildStatus": status, "currentPhase": phase}]},
            {"ids": ["p:1"]},
        )
    stub.activate()
    return client, stub


def test_following_logs_each_phase_and_stops_at_the_end(capsys: Any) -> None:
    client, stub = stubbed([("IN_PROGRESS", "INSTALL"), ("IN_PROGRESS", "BUILD"),
                            ("IN_PROGRESS", "BUILD"), ("FAILED", "COMPLETED")])  # fmt: skip
    lines: list[str] = []
    followed = follow(client, "p:1", for_s=3600, poll_s=0, log=lines.append, sleep=lambda _s: None)
    assert followed.status == "FAILED" and len(lines) == 3  # a repeated phase is logged once
    stub.assert_no_pending_responses()


def test_following_ends_when_its_time_is_up_and_the_build_goes_on() -> None:
    client, stub = stubbed([("IN_PROGRESS", "BUILD")] * 3)  # at 0 s, 60 s and 90 s
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    followed = follow(
        client, "p:1", for_s=90, poll_s=60, log=lambda _m: None, clock=lambda: now[0], sleep=sleep
    )
    assert followed.status == "IN_PROGRESS"  # the CLI says so and exits 0: nothing is stopped
    stub.assert_no_pending_responses()

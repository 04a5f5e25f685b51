"""One full synth with the real CDK CLI, then cfn-lint, cdk-nag and the plant-scale checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.config import load_plants

from .conftest import PLANTS, ROOT

IOT_MESSAGING = {"iot:Publish", "iot:Subscribe", "iot:Receive"}


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CDK_DISABLE_VERSION_CHECK="true",
        AWS_EC2_METADATA_DISABLED="true",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="1",
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        CDK_VALIDATION="false",  # cfn-lint below validates the templates
    )
    return env


@pytest.fixture(scope="module")
def cdk_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("npx") is None:
        pytest.fail("npx not found: the CDK CLI is needed (make setup)")
    out = tmp_path_factory.mktemp("cdk.out")
    proc = subprocess.run(
        ["npx", "cdk", "synth", "--quiet", "-o", str(out)],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def template(cdk_out: Path, stack: str) -> dict[str, Any]:
    return json.loads((cdk_out / f"{stack}.template.json").read_text())


def plant_names() -> list[str]:
    return [p.name for p in load_plants(PLANTS)]


def test_synth_gives_shared_and_one_stack_per_plant(cdk_out: Path) -> None:
    stacks = sorted(
        p.name.removesuffix(".template.json")
        for p in cdk_out.glob("*.template.json")
        if not p.name.endswith(".nested.template.json")  # a plant's line groups
    )
    assert stacks == sorted(["LineGuard-Shared"] + [f"LineGuard-Plant-{n}" for n in plant_names()])


def test_cfn_lint_reports_no_errors(cdk_out: Path) -> None:
    templates = sorted(str(p) for p in cdk_out.glob("*.template.json"))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", *templates],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # cfn-lint exit code bits: 2 = errors, 4 = warnings, 8 = informational
    assert proc.returncode & 2 == 0 and proc.returncode & 1 == 0, proc.stdout + proc.stderr


def test_cdk_nag_has_no_unacknowledged_findings(cdk_out: Path) -> None:
    report = json.loads((cdk_out / "validation-report.json").read_text())
    violations = [
        v for plugin in report.get("pluginReports", []) for v in plugin.get("violations", [])
    ]
    assert violations == []


def test_every_nag_acknowledgement_has_a_specific_reason(cdk_out: Path) -> None:
    reasons: dict[str, str] = {}
    for path in cdk_out.glob("*.metadata.json"):
        for construct, entries in json.loads(path.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    for rule, reason in entry["data"].items():
                        reasons[f"{construct} {rule}"] = reason
    assert reasons, "no acknowledgements found: is cdk-nag applied?"
    for rule, reason in reasons.items():
        assert len(reason) >= 40, f"{rule}: reason too short: {reason!r}"
        assert "AwsSolutions-" in rule


def test_example_large_stays_small(cdk_out: Path) -> None:
    resources = template(cdk_out, "LineGuard-Plant-example-large")["Resources"]
    assert len(resources) <= 150
    nested = list(cdk_out.glob("LineGuardPlantexamplelarge*.nested.template.json"))
    groups = [len(json.loads(p.read_text())["Resources"]) for p in nested]
    assert 1 <= len(nested) <= 5 and sum(groups) == 40  # one thing group per line


def test_one_deployment_per_ring_with_rollback_rollout_and_abort(cdk_out: Path) -> None:
    for plant in load_plants(PLANTS):
        resources = template(cdk_out, f"LineGuard-Plant-{plant.name}")["Resources"].values()
        deployments = [r for r in resources if r["Type"] == "AWS::GreengrassV2::Deployment"]
        targets = sorted(d["Properties"]["TargetArn"] for d in deployments)
        assert targets == sorted(plant.ring_group_arn(r) for r in plant.ring_names)
        for d in deployments:
            props = d["Properties"]
            assert props["DeploymentPolicies"]["FailureHandlingPolicy"] == "ROLLBACK"
            job = props["IotJobConfiguration"]
            assert job["JobExecutionsRolloutConfig"]["ExponentialRate"]["BaseRatePerMinute"] >= 1
            assert job["AbortConfig"]["CriteriaList"]
            assert job["TimeoutConfig"]["InProgressTimeoutInMinutes"] >= 1


def test_no_iot_policy_allows_iot_star_or_messaging_on_star(cdk_out: Path) -> None:
    checked = 0
    for path in cdk_out.glob("*.template.json"):
        for res in json.loads(path.read_text())["Resources"].values():
            if res["Type"] != "AWS::IoT::Policy":
                continue
            for s in res["Properties"]["PolicyDocument"]["Statement"]:
                actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
                assert "iot:*" not in actions and "*" not in actions
                if IOT_MESSAGING & set(actions):
                    assert "*" not in resources
                checked += 1
    assert checked > 0


def test_cdk_nag_in_process_passes_the_app_and_catches_a_bad_bucket() -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3
    from cdk_nag import AwsSolutionsChecks

    from stacks.app import add_stacks
    from stacks.config import load_plant_release

    plants = load_plants(PLANTS)
    app = cdk.App(builtin_cloud_formation_validation=False)
    add_stacks(app, plants, {p.name: load_plant_release(p, ROOT / "releases") for p in plants})
    report = AwsSolutionsChecks().validate_scope(app)
    assert report.success, [v.rule_name for v in report.violations]

    control = cdk.App(builtin_cloud_formation_validation=False)
    s3.Bucket(cdk.Stack(control, "Control"), "Plain")
    rules = {v.rule_name for v in AwsSolutionsChecks().validate_scope(control).violations}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules

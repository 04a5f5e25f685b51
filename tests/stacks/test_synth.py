"""One full synth with the real CDK CLI, then cfn-lint, cdk-nag, checkov and plant-scale checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.components import PublishedComponents
from stacks.config import load_plants
from stacks.constructs._checkov import ACCEPTED

from .conftest import PLANTS, ROOT

IOT_MESSAGING = {"iot:Publish", "iot:Subscribe", "iot:Receive"}
# checkov lives in its own venv (requirements-checkov.txt); `make pytest` sets CHECKOV.
CHECKOV = Path(os.environ.get("CHECKOV") or Path(sys.prefix, "tools", "checkov", "bin", "checkov"))


@pytest.fixture(scope="module")
def checkov_report(cdk_out: Path) -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail(f"checkov not found at {CHECKOV}: make setup installs requirements-checkov.txt")
    files = [a for p in sorted(cdk_out.glob("*.template.json")) for a in ("-f", str(p))]
    proc = subprocess.run(
        # --skip-download: no call to the vendor's platform (no network here, nothing to fetch)
        [str(CHECKOV), *files, "--framework", "cloudformation", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # checkov exits 1 when a check fails; anything else non-zero is checkov itself failing
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert isinstance(report, dict) and report["check_type"] == "cloudformation", proc.stdout[:500]
    return report


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
    # both shipped plants are in one account/region: one Shared stack, named after it
    shared = ["LineGuard-Shared-123456789012-eu-west-1"]
    assert stacks == sorted(shared + [f"LineGuard-Plant-{n}" for n in plant_names()])


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


def test_checkov_scans_every_resource_of_every_template(
    cdk_out: Path, checkov_report: dict[str, Any]
) -> None:
    templates = sorted(cdk_out.glob("*.template.json"))
    total = sum(len(json.loads(p.read_text())["Resources"]) for p in templates)
    assert checkov_report["summary"]["parsing_errors"] == 0
    assert checkov_report["summary"]["resource_count"] == total
    scanned = {Path(c["file_path"]).name for c in checkov_report["results"]["passed_checks"]}
    # nested line-group stacks hold only thing groups, which no checkov check covers: their
    # resources are in resource_count above; every top-level template has checks that ran
    top_level = {p.name for p in templates if not p.name.endswith(".nested.template.json")}
    assert top_level <= scanned


def test_checkov_reports_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {Path(c['file_path']).name} {c['resource']}: {c['check_name']}"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert failed == []


def test_every_checkov_acceptance_is_used_with_its_reason(checkov_report: dict[str, Any]) -> None:
    reasons = {(a.check_id, a.reason) for a in ACCEPTED}
    skipped = {
        (c["check_id"], c["check_result"].get("suppress_comment", ""))
        for c in checkov_report["results"]["skipped_checks"]
    }
    assert skipped == reasons  # no skip without an entry in ACCEPTED, no stale entry
    for check_id, reason in reasons:
        assert len(reason) >= 40, f"{check_id}: reason too short: {reason!r}"


def test_example_large_stays_small(cdk_out: Path) -> None:
    resources = template(cdk_out, "LineGuard-Plant-example-large")["Resources"]
    assert len(resources) <= 150
    nested = list(cdk_out.glob("LineGuardPlantexamplelarge*.nested.template.json"))
    groups = [len(json.loads(p.read_text())["Resources"]) for p in nested]
    assert 1 <= len(nested) <= 5 and sum(groups) == 40  # one thing group per line


def test_one_standing_deployment_per_ring_with_rollback_rollout_and_no_abort(
    cdk_out: Path,
) -> None:
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
            assert "AbortConfig" not in job  # a cancelled job would serve no new device
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


def test_cdk_nag_in_process_passes_the_app_and_catches_a_bad_bucket(
    published: PublishedComponents,
) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3
    from cdk_nag import AwsSolutionsChecks

    from stacks.app import add_stacks
    from stacks.config import load_plant_release

    plants = load_plants(PLANTS)
    app = cdk.App(builtin_cloud_formation_validation=False)
    releases = {p.name: load_plant_release(p, ROOT / "releases") for p in plants}
    add_stacks(app, plants, releases, components=published)
    report = AwsSolutionsChecks().validate_scope(app)
    assert report.success, [v.rule_name for v in report.violations]

    control = cdk.App(builtin_cloud_formation_validation=False)
    s3.Bucket(cdk.Stack(control, "Control"), "Plain")
    rules = {v.rule_name for v in AwsSolutionsChecks().validate_scope(control).violations}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules

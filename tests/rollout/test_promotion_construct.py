"""The Promotion construct: EventBridge rule on approval → CodeBuild running ``rollout promote``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.config import load_plant
from stacks.constructs.promotion import (
    STARTBUILD_OVERRIDE_KEYS,
    build_minutes,
    outlasts_a_build,
    runtime_pins,
    stage_source,
)

from .conftest import REPO

pytestmark = pytest.mark.slow


def _synth(**github: str) -> dict[str, Any]:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_s3 as s3
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from stacks.constructs._nag import acknowledge
    from stacks.constructs.promotion import Promotion

    app = cdk.App()
    stack = cdk.Stack(app, "Bare", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    key = kms.Key(stack, "Key", enable_key_rotation=True)
    bucket = s3.Bucket(stack, "Artifacts", encryption_key=key, enforce_ssl=True)
    acknowledge(bucket, "AwsSolutions-S1", "test bucket only")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"))
    plants = [load_plant(REPO / "plants" / f"{n}.yaml") for n in ("demo", "example-large")]
    Promotion(
        stack,
        "Promotion",
        plants=plants,
        bucket=bucket,
        key=key,
        role=role,
        model_package_group_name="lineguard-inspection",
        **github,  # type: ignore[arg-type]
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    error = None
    try:
        app.synth()
    except Exception as exc:  # cdk-nag findings fail the synth
        error = str(exc)
    return {"template": Template.from_stack(stack), "error": error}


@pytest.fixture(scope="module")
def synthesised() -> dict[str, Any]:
    """One bare stack with the construct, its template, and cdk-nag's unacknowledged findings."""
    return _synth()


def test_github_gets_a_role_that_only_starts_and_reads_the_promotion_builds() -> None:
    built = _synth(github_repository="acme/lineguard-plant")
    assert built["error"] is None, built["error"]  # cdk-nag has nothing to say
    template = built["template"]
    (provider,) = template.find_resources("AWS::IAM::OIDCProvider").values()
    assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    roles = template.find_resources("AWS::IAM::Role")
    (starter,) = [r for k, r in roles.items() if "GitHubStarter" in k]
    (trust,) = starter["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Condition"] == {
        "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
        "StringLike": {
            "token.actions.githubusercontent.com:sub": "repo:acme/lineguard-plant:ref:refs/heads/main"
        },
    }
    assert starter["Properties"]["MaxSessionDuration"] == 3600
    policies = template.find_resources("AWS::IAM::Policy")
    (policy,) = [p for k, p in policies.items() if "GitHubStarter" in k]
    statement, *denies = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["codebuild:StartBuild", "codebuild:BatchGetBuilds"]
    assert "Fn::GetAtt" in json.dumps(statement["Resource"])  # the project's ARN, not "*"
    # no override of what the build runs (buildspec, source, image, role, ...): each would run
    # any command as the promotion role; no environment variable but the two CI sets
    assert all(d["Effect"] == "Deny" and d["Action"] == "codebuild:StartBuild" for d in denies)
    null_keys = {k for d in denies for k in d["Condition"].get("Null", {})}
    assert null_keys == set(STARTBUILD_OVERRIDE_KEYS)
    assert all(len(d["Condition"].get("Null", {"": ""})) == 1 for d in denies)  # never ANDed
    assert {"codebuild:source.buildspec", "codebuild:source.location", "codebuild:environment.image",
            "codebuild:serviceRole", "codebuild:environment.privilegedMode"} <= null_keys  # fmt: skip
    (names,) = [d["Condition"] for d in denies if "ForAnyValue:StringNotEquals" in d["Condition"]]
    allowed = names["ForAnyValue:StringNotEquals"][
        "codebuild:environment.environmentVariables.name"
    ]
    assert sorted(allowed) == ["MODEL_PACKAGE_ARN", "PLANTS"]
    # what rollout/ci.py sends is within that: only those two variables, no override
    import inspect

    from rollout import ci

    source = inspect.getsource(ci.start_promotion)
    assert "Override=" not in source.replace("environmentVariablesOverride=", "")
    outputs = template.to_json()["Outputs"]
    assert any("GitHubStarterRoleArn" in k for k in outputs)
    assert any("ProjectName" in k for k in outputs)
    # an account's existing provider is used as it is: none is created
    arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    again = _synth(github_repository="acme/lineguard-plant", github_oidc_provider_arn=arn)
    assert again["template"].find_resources("AWS::IAM::OIDCProvider") == {}
    with pytest.raises(ValueError, match="expected <owner>/<repo>"):
        _synth(github_repository="not a repository")


def test_no_unacknowledged_nag_findings(synthesised) -> None:
    assert synthesised["error"] is None


def test_an_approval_starts_one_build_per_plant_with_its_own_timeout(synthesised) -> None:
    template = synthesised["template"]
    (rule,) = template.find_resources("AWS::Events::Rule").values()
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {
            "ModelPackageGroupName": ["lineguard-inspection"],
            "ModelApprovalStatus": ["Approved"],
        },
    }
    plants = {n: load_plant(REPO / "plants" / f"{n}.yaml") for n in ("demo", "example-large")}
    inputs = {}
    for target in rule["Properties"]["Targets"]:
        transformer = target["InputTransformer"]
        assert transformer["InputPathsMap"] == {
            "detail-ModelPackageArn": "$.detail.ModelPackageArn"
        }
        # the template is the StartBuild request; EventBridge puts the path's JSON value (a
        # quoted string) in place of the placeholder (EventBridge user guide, input transformer)
        text = transformer["InputTemplate"].replace("<detail-ModelPackageArn>", '"arn:pkg"')
        request = json.loads(text)
        env = {v["name"]: v["value"] for v in request["environmentVariablesOverride"]}
        assert env["MODEL_PACKAGE_ARN"] == "arn:pkg"
        inputs[env["PLANTS"]] = request["timeoutInMinutesOverride"]
    assert inputs == {name: build_minutes(plant) for name, plant in plants.items()}
    assert all(5 <= minutes <= 36 * 60 for minutes in inputs.values())  # StartBuild's range
    # the project's own timeout covers the longest (what a CI-started build gets)
    (project,) = template.find_resources("AWS::CodeBuild::Project").values()
    assert project["Properties"]["TimeoutInMinutes"] == max(inputs.values())


def test_a_plant_whose_longest_promotion_outlasts_a_build_is_named() -> None:
    plant = load_plant(REPO / "plants" / "example-large.yaml")
    assert outlasts_a_build(plant) is None  # the shipped plant fits one build
    slow = plant.model_copy(
        update={"gates": plant.gates.model_copy(update={"max_bake_extensions": 5})}
    )
    message = outlasts_a_build(slow)
    assert message is not None and message.startswith("plant example-large: its longest promotion")
    assert "start-promotion" in message  # what resumes it
    assert build_minutes(slow) == 36 * 60  # CodeBuild's maximum


def _buildspec(template) -> dict[str, Any]:
    (project,) = template.find_resources("AWS::CodeBuild::Project").values()
    return project["Properties"]


def _flatten(value: Any) -> str:
    """A CloudFormation string (maybe an Fn::Join of tokens) with tokens as ``TOKEN``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_flatten(p) for p in parts)
    return "TOKEN"


def test_build_runs_the_same_promote_command_for_every_plant(synthesised) -> None:
    props = _buildspec(synthesised["template"])
    spec = json.loads(_flatten(props["Source"]["BuildSpec"]))
    build = " ".join(spec["phases"]["build"]["commands"])
    assert "python -m rollout promote" in build and '--model-package "$MODEL_PACKAGE_ARN"' in build
    # the state is checkpointed straight to S3 with conditional writes (rollout/state.py)
    assert '--state-bucket "$ARTIFACT_BUCKET"' in build and "--state-dir" not in build
    env = {v["Name"]: v.get("Value") for v in props["Environment"]["EnvironmentVariables"]}
    assert env["PLANTS"] == "demo example-large"
    install = spec["phases"]["install"]["commands"][0]
    assert all(pin in install for pin in runtime_pins())
    # state and release are written to S3 at every step, never synced from a copy that may lag
    assert '--releases-bucket "$ARTIFACT_BUCKET"' in build
    assert "post_build" not in spec["phases"] and "sync" not in json.dumps(spec)
    # per plant: every ring's shadow phase and bake with all their extensions, plus the
    # controller's longest wait for each deployment (an offline device holds it until then)
    # and a rollback
    for name in ("demo", "example-large"):
        p = load_plant(REPO / "plants" / f"{name}.yaml")
        ext, wait = p.gates.max_bake_extensions, p.deployment.in_progress_timeout_minutes + 15
        longest = wait
        for r in p.rings:
            longest += wait
            if r.bake_minutes:
                longest += r.bake_minutes + ext * max(r.bake_minutes, 15)
            if r.shadow_minutes:
                longest += wait + r.shadow_minutes + ext * max(r.shadow_minutes, 15)
        assert longest <= build_minutes(p) <= 36 * 60
    assert props["EncryptionKey"]


def test_staged_source_runs_the_cli(tmp_path: Path, make_package) -> None:
    stage = stage_source()
    request = _run_staged(stage, tmp_path, make_package)
    assert '"componentVersion": "1.1.0"' in request


def _run_staged(stage: Path, tmp_path: Path, make_package) -> str:
    try:
        return _dry_run(stage, tmp_path, make_package)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _dry_run(stage: Path, tmp_path: Path, make_package) -> str:
    assert (stage / "rollout" / "cli.py").is_file() and (stage / "plants" / "demo.yaml").is_file()
    assert not (stage / "stacks" / "plant.py").exists()  # no CDK in the promotion job
    package = make_package("1.1.0")
    env = {**os.environ, "PYTHONPATH": ".:edge_component"}
    proc = subprocess.run(
        [sys.executable, "-m", "rollout", "promote", "--plant", "demo"]
        + ["--model-package", str(package.root), "--dry-run", "--state-dir", str(tmp_path)],
        cwd=stage,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    build = subprocess.run(
        [sys.executable, "-c", "import sys; from inspector.model_package import load_package; "
         "import rollout.aws; from rollout.recipe import build_model; "
         "print(build_model(load_package(sys.argv[1]), 'bucket-x').uri)", str(package.root)],
        cwd=stage, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert build.stdout.strip() == "s3://bucket-x/components/com.lineguard.Model/1.1.0/model.zip"
    return proc.stdout

"""Promotion: an approved model package starts the rollout controller in CodeBuild.

An EventBridge rule on ``SageMaker Model Package State Change`` (the group's packages, status
``Approved``) starts a CodeBuild project that runs the same command as CI,
``python -m rollout promote --plant <p> --model-package <arn>``, for every plant of the account
and region. CodeBuild rather than Step Functions: a promotion is one long-running program (bakes
of hours, up to CodeBuild's 36 h build limit) whose state the controller already persists; Step
Functions would need the controller split into states or 15-minute Lambda steps — a second
implementation of the rollout. Release files and controller state live in the artifact bucket
under ``rollout/`` so a re-run resumes; see docs/rollout.md.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs._nag import acknowledge

REPO = Path(__file__).resolve().parents[2]
ROLLOUT_PREFIX = "rollout/"
# What the promotion job needs from the repository (no CDK, no training, no device runtime).
SOURCE_FILES = (
    "rollout/*.py",
    "stacks/__init__.py",
    "stacks/components.py",
    "stacks/config.py",
    "stacks/deployment_spec.py",
    "stacks/release_store.py",
    "stacks/rollout_metrics.py",
    "edge_component/inspector/__init__.py",
    "edge_component/inspector/model_package.py",
    "edge_component/build.py",
    "edge_component/gdk-config.json",
    "edge_component/recipes/com.lineguard.Model.yaml",
    "plants/*.yaml",
    "releases/*.json",
)
RUNTIME_PACKAGES = ("boto3", "pydantic", "PyYAML")
MAX_BUILD_HOURS = 36
MAX_TARGETS_PER_RULE = 5
# StartBuild's condition keys for the request's overrides (Service Authorization Reference,
# AWS CodeBuild, StartBuild): a CI request carrying any of them is denied
STARTBUILD_OVERRIDE_KEYS = (
    "codebuild:source.buildspec",
    "codebuild:source.location",
    "codebuild:source.auth.type",
    "codebuild:source.insecureSsl",
    "codebuild:secondarySources",
    "codebuild:environment.type",
    "codebuild:environment.image",
    "codebuild:environment.computeType",
    "codebuild:environment.fleet.fleetArn",
    "codebuild:environment.privilegedMode",
    "codebuild:environment.certificate",
    "codebuild:environment.imagePullCredentialsType",
    "codebuild:environment.registryCredential",
    "codebuild:artifacts",
    "codebuild:secondaryArtifacts",
    "codebuild:logsConfig",
    "codebuild:cache.location",
    "codebuild:serviceRole",
)
CI_VARIABLES = ("MODEL_PACKAGE_ARN", "PLANTS")  # what rollout/ci.py start_promotion sets
_SOURCE_REASON = (
    "CodeBuild's read grant on its S3 source: the one asset object of the promotion job's code."
)


def _promotion_minutes(plant: PlantConfig) -> float:
    """The longest a promotion of ``plant`` can take before it pauses or ends: per ring the
    controller's deadline for each deployment it waits on (rollout/controller.py ``_wait``), the
    shadow phase and the bake with every extension (at least 15 min each: ``LOOK_S``), and at the
    end one rollback's wait."""
    policy = plant.deployment
    extensions = plant.gates.max_bake_extensions
    total = 0.0
    longest_wait = 0.0
    for ring in plant.rings:
        devices = max(1, math.ceil(plant.expected_devices * ring.percent / 100.0))
        release = math.ceil(devices / policy.rollout.base_rate_per_minute)
        wait = policy.in_progress_timeout_minutes + release + 15
        longest_wait = max(longest_wait, wait)
        total += wait
        if ring.bake_minutes:
            total += ring.bake_minutes + extensions * max(ring.bake_minutes, 15)
        if ring.shadow_minutes:
            total += wait + ring.shadow_minutes + extensions * max(ring.shadow_minutes, 15)
    return total + longest_wait


def build_minutes(plant: PlantConfig) -> int:
    """The promotion build's timeout for ``plant``: its longest promotion (:func:`promotion_minutes`)
    and an hour for installing, at most CodeBuild's 36 h."""
    return min(MAX_BUILD_HOURS * 60, math.ceil(_promotion_minutes(plant)) + 60)


def outlasts_a_build(plant: PlantConfig) -> str | None:
    """What to say when ``plant``'s longest promotion does not fit one build, else None."""
    minutes = math.ceil(_promotion_minutes(plant)) + 60
    if minutes <= MAX_BUILD_HOURS * 60:
        return None
    return (
        f"plant {plant.name}: its longest promotion takes {minutes / 60:.1f} h (every ring's wait, "
        "shadow phase and bake with all extensions, and a rollback), more than a CodeBuild "
        f"build's {MAX_BUILD_HOURS} h. A build stopped by its timeout leaves the promotion's state "
        "in S3; starting the promotion again (`python -m rollout start-promotion`) resumes it once "
        "the lease lapses. To fit one build, lower bake_minutes, shadow_minutes or "
        "gates.max_bake_extensions"
    )


def runtime_pins(requirements: Path = REPO / "requirements-dev.txt") -> list[str]:
    """The exact pins of the packages the promotion job installs, from the requirements file."""
    pins = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s#]+)", line.strip())
        if match:
            pins[match.group(1).lower()] = f"{match.group(1)}=={match.group(3)}"
    missing = [p for p in RUNTIME_PACKAGES if p.lower() not in pins]
    if missing:
        raise ValueError(f"{requirements}: no exact pin for {', '.join(missing)}")
    return [pins[p.lower()] for p in RUNTIME_PACKAGES]


def stage_source(root: Path = REPO) -> Path:
    """Copy the promotion job's files into a fresh directory (the CodeBuild source asset)."""
    stage = Path(tempfile.mkdtemp(prefix="lineguard-promotion-"))
    for pattern in SOURCE_FILES:
        for path in sorted(root.glob(pattern)):
            target = stage / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return stage


class Promotion(Construct):
    """EventBridge rule on model package approval → CodeBuild project running the promotion.

    Attributes:
        project: the CodeBuild project.
        rule: the EventBridge rule.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plants: Sequence[PlantConfig],
        bucket: s3.IBucket,
        key: kms.IKey,
        role: iam.IRole,
        model_package_group_name: str,
        github_repository: str | None = None,
        github_oidc_provider_arn: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not plants:
            raise ValueError("Promotion needs at least one plant")
        names = " ".join(p.name for p in plants)
        # one build per plant (each with its own lease and state), each allowed its plant's
        # longest promotion: a CodeBuild build runs at most 36 h (timeoutInMinutes 5-2160,
        # CodeBuild API reference, StartBuild)
        minutes = {p.name: build_minutes(p) for p in plants}
        for plant in plants:
            if (warning := outlasts_a_build(plant)) is not None:
                cdk.Annotations.of(self).add_warning_v2(
                    "lineguard:promotion-outlasts-build", warning
                )
        staged = stage_source()
        try:  # the asset is copied into the cloud assembly here, so the staging dir can go
            source = s3_assets.Asset(self, "Source", path=str(staged))
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[source.bucket.arn_for_objects(source.s3_object_key)],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{ROLLOUT_PREFIX}*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{ROLLOUT_PREFIX}*"]}},
            )
        )
        self.project = codebuild.Project(
            self,
            "Project",
            description="LineGuard promotion: python -m rollout promote for every plant",
            role=role,
            encryption_key=key,
            timeout=cdk.Duration.minutes(max(minutes.values())),
            source=codebuild.Source.s3(bucket=source.bucket, path=source.s3_object_key),
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=codebuild.ComputeType.SMALL,
            ),
            environment_variables={
                "PLANTS": codebuild.BuildEnvironmentVariable(value=names),
                "ARTIFACT_BUCKET": codebuild.BuildEnvironmentVariable(value=bucket.bucket_name),
                "MODEL_PACKAGE_ARN": codebuild.BuildEnvironmentVariable(value=""),
            },
            build_spec=codebuild.BuildSpec.from_object(
                {
                    "version": "0.2",
                    "phases": {
                        "install": {
                            "runtime-versions": {"python": "3.11"},
                            "commands": [f"pip install --quiet {' '.join(runtime_pins())}"],
                        },
                        "pre_build": {"commands": ['test -n "$MODEL_PACKAGE_ARN"']},
                        "build": {
                            "commands": [
                                "export PYTHONPATH=.:edge_component",
                                # state and release go straight to S3 at every step (durable
                                # through a killed build); the bundled releases/ bootstraps
                                "rc=0; for plant in $PLANTS; do python -m rollout promote "
                                '--plant "$plant" --model-package "$MODEL_PACKAGE_ARN" '
                                '--artifact-bucket "$ARTIFACT_BUCKET" '
                                '--state-bucket "$ARTIFACT_BUCKET" '
                                '--releases-bucket "$ARTIFACT_BUCKET" '
                                "|| rc=$?; done; exit $rc",
                            ]
                        },
                    },
                }
            ),
        )
        # an EventBridge rule takes at most 5 targets (EventBridge quotas): a rule per 5 plants,
        # a target per plant, each starting the plant's own build with its own timeout
        self.rules: list[events.Rule] = []
        for index in range(0, len(plants), MAX_TARGETS_PER_RULE):
            rule = events.Rule(
                self,
                "OnApproval" if index == 0 else f"OnApproval{index // MAX_TARGETS_PER_RULE + 1}",
                description="Start the LineGuard promotion when a model package is approved",
                event_pattern=events.EventPattern(
                    source=["aws.sagemaker"],
                    detail_type=["SageMaker Model Package State Change"],
                    detail={
                        "ModelPackageGroupName": [model_package_group_name],
                        "ModelApprovalStatus": ["Approved"],
                    },
                ),
            )
            for plant in plants[index : index + MAX_TARGETS_PER_RULE]:
                rule.add_target(
                    targets.CodeBuildProject(
                        self.project,
                        # the StartBuild request (EventBridge CodeBuild target input)
                        event=events.RuleTargetInput.from_object(
                            {
                                "environmentVariablesOverride": [
                                    {
                                        "name": "MODEL_PACKAGE_ARN",
                                        "value": events.EventField.from_path(
                                            "$.detail.ModelPackageArn"
                                        ),
                                        "type": "PLAINTEXT",
                                    },
                                    {"name": "PLANTS", "value": plant.name, "type": "PLAINTEXT"},
                                ],
                                "timeoutInMinutesOverride": minutes[plant.name],
                            }
                        ),
                    )
                )
            self.rules.append(rule)
        self.rule = self.rules[0]
        self.github_starter: iam.Role | None = None
        if github_repository:
            self.github_starter = self._github_starter(github_repository, github_oidc_provider_arn)
        self._acknowledge(role, bucket)

    def _github_starter(self, repository: str, provider_arn: str | None) -> iam.Role:
        """The role a GitHub Actions job of ``repository`` (on main) assumes through OIDC to
        start and follow this project's builds, and nothing else (rollout/ci.py).

        GitHub's OIDC tokens carry ``aud`` ``sts.amazonaws.com`` (the aws-actions default) and
        ``sub`` ``repo:<owner>/<repo>:ref:refs/heads/main`` for a job on main (GitHub docs,
        about-security-hardening-with-openid-connect); IAM checks both in the trust policy. An
        account holds one provider per URL: pass ``github_oidc_provider_arn`` to use one that
        already exists, else it is created here.
        """
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository):
            raise ValueError(f"github_repository {repository!r}: expected <owner>/<repo>")
        issuer = "token.actions.githubusercontent.com"
        if provider_arn is None:
            provider = iam.CfnOIDCProvider(
                self,
                "GitHubOidc",
                url=f"https://{issuer}",
                client_id_list=["sts.amazonaws.com"],
            )
            provider_arn = provider.attr_arn
        starter = iam.Role(
            self,
            "GitHubStarter",
            description=f"LineGuard: {repository} (main) starts and follows promotion builds",
            assumed_by=iam.WebIdentityPrincipal(
                provider_arn,
                conditions={
                    "StringEquals": {f"{issuer}:aud": "sts.amazonaws.com"},
                    "StringLike": {f"{issuer}:sub": f"repo:{repository}:ref:refs/heads/main"},
                },
            ),
            max_session_duration=cdk.Duration.hours(1),
        )
        starter.add_to_policy(
            iam.PolicyStatement(
                actions=["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
                resources=[self.project.project_arn],
            )
        )
        # StartBuild may override the buildspec, the source, the image, the role and more,
        # each a way to run any command as the promotion role: deny a request that carries any
        # of them (CodeBuild user guide, action-context-keys: "Prevent unauthorized
        # modifications to project buildspec", "Check the existence of attributes in API
        # requests"), one statement per key (the keys of one Null condition are ANDed)
        for key in STARTBUILD_OVERRIDE_KEYS:
            starter.add_to_policy(
                iam.PolicyStatement(
                    effect=iam.Effect.DENY,
                    actions=["codebuild:StartBuild"],
                    resources=[self.project.project_arn],
                    conditions={"Null": {key: "false"}},
                )
            )
        # ... and environment variables other than the two the promotion takes (PIP_INDEX_URL,
        # say, would install another package)
        starter.add_to_policy(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                actions=["codebuild:StartBuild"],
                resources=[self.project.project_arn],
                conditions={
                    "ForAnyValue:StringNotEquals": {
                        "codebuild:environment.environmentVariables.name": list(CI_VARIABLES)
                    }
                },
            )
        )
        cdk.CfnOutput(self, "GitHubStarterRoleArn", value=starter.role_arn)
        cdk.CfnOutput(self, "ProjectName", value=self.project.project_name)
        return starter

    def _acknowledge(self, role: iam.IRole, bucket: s3.IBucket) -> None:
        stack = cdk.Stack.of(self)
        region, account = stack.region, stack.account
        if cdk.Token.is_unresolved(region):
            region = "<AWS::Region>"
        if cdk.Token.is_unresolved(account):
            account = "<AWS::AccountId>"
        project = f"<{stack.resolve(stack.get_logical_id(self.project.node.default_child))}>"  # type: ignore[arg-type]
        bucket_child = bucket.node.default_child
        bucket_ref = (
            f"<{stack.resolve(stack.get_logical_id(bucket_child))}.Arn>"  # type: ignore[arg-type]
            if bucket_child is not None
            else bucket.bucket_arn
        )
        part = "arn:<AWS::Partition>"
        findings = {
            f"Resource::{bucket_ref}/{ROLLOUT_PREFIX}*": (
                "The promotion job keeps release files and controller state under rollout/ only."
            ),
            f"Resource::{part}:logs:{region}:{account}:log-group:/aws/codebuild/{project}:*": (
                "CodeBuild writes the promotion build's logs to the project's own log group."
            ),
            f"Resource::{part}:codebuild:{region}:{account}:report-group/{project}-*": (
                "CodeBuild's default grant for the project's own test report groups."
            ),
            "Action::s3:GetObject*": _SOURCE_REASON,
            "Action::s3:GetBucket*": _SOURCE_REASON,
            "Action::s3:List*": _SOURCE_REASON,
            "Action::kms:ReEncrypt*": (
                "CodeBuild's grant on the artifact key it encrypts build output with (CB4)."
            ),
            "Action::kms:GenerateDataKey*": (
                "CodeBuild's grant on the artifact key it encrypts build output with (CB4)."
            ),
        }
        for finding, reason in findings.items():
            acknowledge(role, f"AwsSolutions-IAM5[{finding}]", reason)

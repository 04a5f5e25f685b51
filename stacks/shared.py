"""LineGuard-Shared-<account>-<region>: what every plant in one account and region shares."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from constructs import Construct

from stacks.components import PublishedComponents
from stacks.config import Calibration, access_log_bucket_name, artifact_bucket_name
from stacks.constructs.artifact_publisher import ArtifactPublisher
from stacks.constructs.artifact_store import ArtifactStore
from stacks.constructs.component_versions import ComponentVersions
from stacks.constructs.log_encryption import PlantLogKey, plant_log_group_prefix
from stacks.constructs.model_registry import ModelRegistry
from stacks.constructs.pipeline_roles import PipelineRoles
from stacks.constructs.training_assets import TrainingAssets
from stacks.constructs.training_pipeline import TrainingPipeline

MODEL_PACKAGE_GROUP = "lineguard-inspection"
SHARED_LOGS = "shared"  # log groups of this stack: /lineguard/shared/...


class SharedStack(cdk.Stack):
    """Artifact bucket, model package group, training and promotion roles, and what devices and
    the training pipeline read from the bucket: the LineGuard component versions (from the
    component build, see ``stacks.components``) and the pipeline's code and sample data.

    Other constructs (the training pipeline, the promotion trigger) are added to this stack by
    the app and wire themselves to the attributes below:

    Attributes:
        artifact_bucket_name / access_log_bucket_name: their fixed names (plant stacks use the
            names, not references, so nothing but the key ARN crosses stacks).
        artifact_bucket: versioned SSE-KMS bucket (``components/``, ``models/``, ``datasets/``,
            ``pipeline/``, ``samples/`` prefixes; see ``stacks.constructs.artifact_store``).
        artifact_key: the KMS key of the artifact bucket.
        access_log_bucket: S3 server-access-log bucket for every LineGuard bucket.
        model_package_group_name: SageMaker model package group name.
        model_package_group_arn: its ARN.
        training_role: SageMaker pipeline execution role.
        promotion_role: CodeBuild role of the promotion job.
        component_versions: the published component versions (``None`` without a build).

    ``sample_plants``: the plants whose field samples (``samples/<plant>/``) the training role
    may read, for the pipeline's ``SamplesPrefix`` — the plants of this account and region.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model_package_group_name: str = MODEL_PACKAGE_GROUP,
        components: PublishedComponents | None = None,
        calibration: Calibration | None = None,
        sample_plants: Sequence[str] = (),
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        account, region = self.account, self.region
        if cdk.Token.is_unresolved(account) or cdk.Token.is_unresolved(region):
            raise ValueError("LineGuard-Shared needs a concrete env (account and region)")
        self.artifact_bucket_name = artifact_bucket_name(account, region)
        self.access_log_bucket_name = access_log_bucket_name(account, region)
        store = ArtifactStore(
            self,
            "Artifacts",
            bucket_name=self.artifact_bucket_name,
            access_log_bucket_name=self.access_log_bucket_name,
        )
        registry = ModelRegistry(self, "Models", group_name=model_package_group_name)
        roles = PipelineRoles(
            self,
            "Roles",
            bucket=store.bucket,
            key=store.key,
            model_package_group_name=model_package_group_name,
            sample_plants=sample_plants,
        )
        self.artifact_bucket = store.bucket
        self.artifact_key = store.key
        self.access_log_bucket = store.access_log_bucket
        self.model_package_group_name = registry.group_name
        self.model_package_group_arn = registry.group_arn
        self.training_role = roles.training_role
        self.promotion_role = roles.promotion_role
        self.training_pipeline = TrainingPipeline(
            self,
            "Training",
            role=roles.training_role,
            bucket_name=self.artifact_bucket_name,
            model_package_group_name=model_package_group_name,
            calibration=calibration,
        )
        # the Shared stack's own log groups, under /lineguard/shared/ (not a plant: plant stacks
        # have their own keys for /lineguard/<plant>/)
        log_key = PlantLogKey(self, "LogKey", plant_name=SHARED_LOGS).key
        publisher = ArtifactPublisher(
            self,
            "Publisher",
            bucket=store.bucket,
            key=store.key,
            log_group_name=f"{plant_log_group_prefix(SHARED_LOGS)}artifact-publisher",
            log_key=log_key,
        )
        TrainingAssets(self, "TrainingAssets", publisher=publisher)
        self.component_versions: ComponentVersions | None = None
        if components is None:
            cdk.Annotations.of(self).add_warning_v2(
                "lineguard:no-component-build",
                "no component build given: this stack publishes no Greengrass components",
            )
        else:
            self.component_versions = ComponentVersions(
                self,
                "Components",
                publisher=publisher,
                bucket_name=self.artifact_bucket_name,
                components=components.all(),
            )

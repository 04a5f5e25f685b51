"""The artifact bucket: component artifacts, model packages, training data and device samples."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.constructs._nag import acknowledge

# Key prefixes in the artifact bucket. The training pipeline, the promoter and the devices each
# get access to their own prefixes only.
COMPONENTS_PREFIX = "components/"  # components/<component>/<version>/...  (devices read)
MODELS_PREFIX = "models/"  # model packages made by the training pipeline
DATASETS_PREFIX = "datasets/"  # training data
PIPELINE_PREFIX = "pipeline/"  # SageMaker pipeline working files
SAMPLES_PREFIX = "samples/"  # samples/<plant>/<thing>/...  (devices write their own)
ACCESS_LOGS_PREFIX = "s3-access-logs/"  # in the access-log bucket, one sub-prefix per bucket


class ArtifactStore(Construct):
    """Versioned SSE-KMS artifact bucket with server access logs and a noncurrent-version lifecycle.

    Attributes:
        key: the KMS key that encrypts the artifact bucket.
        bucket: the artifact bucket.
        access_log_bucket: where S3 server access logs of every LineGuard bucket go.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        access_log_bucket_name: str,
        noncurrent_days: int = 90,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="LineGuard artifact bucket encryption",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            bucket_name=access_log_bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            # Versioned, so a deleted access log stays recoverable for noncurrent_days; log objects
            # are never overwritten, so versioning costs nothing until something deletes one.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=cdk.Duration.days(365),
                    noncurrent_version_expiration=cdk.Duration.days(noncurrent_days),
                ),
                # S3 takes no expired-delete-marker cleanup in a rule that expires by age.
                s3.LifecycleRule(
                    id="remove-expired-delete-markers", expired_object_delete_marker=True
                ),
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # Plant stacks' buckets log here too; granting by account keeps this stack free of
        # references to them (which would make the stacks depend on each other both ways).
        self.access_log_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="S3ServerAccessLogsFromThisAccount",
                principals=[iam.ServicePrincipal("logging.s3.amazonaws.com")],
                actions=["s3:PutObject"],
                resources=[self.access_log_bucket.arn_for_objects(f"{ACCESS_LOGS_PREFIX}*")],
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            )
        )
        acknowledge(
            self.access_log_bucket,
            "AwsSolutions-S1",
            "This is the server-access-log bucket itself; logging it into itself would loop.",
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix=f"{ACCESS_LOGS_PREFIX}artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=cdk.Duration.days(noncurrent_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

"""Copy CDK assets into the artifact bucket at the keys devices and the pipeline read.

A CDK file asset lands in the bootstrap assets bucket under its hash; devices read component
artifacts from the artifact bucket (the token exchange role reads ``components/com.lineguard.*``
only) and the training pipeline reads ``pipeline/code/`` and ``datasets/``. One small function
(``runtime/publisher.py``) serves a custom resource per artifact. Its role may read exactly the
asset objects and write exactly the destination keys (and the one prefix a tree owns) — unlike
``aws_s3_deployment.BucketDeployment``, whose handler can read, write and delete the whole
destination bucket.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from stacks.components import file_sha256
from stacks.constructs._nag import acknowledge_wildcard, arn_text, attr_text
from stacks.constructs._own_log_group import function_reason, own_log_group

RUNTIME_DIR = Path(__file__).parent / "runtime"
RESOURCE_TYPE = "Custom::LineGuardArtifact"
# CloudFormation creates the stack's artifacts in parallel (three components, the training code
# and the sample data); more would wait and be retried by Lambda, not fail.
PUBLISHER_CONCURRENCY = 5


def _objects_text(bucket: s3.IBucket) -> str:
    """The bucket's ARN as cdk-nag prints it: a literal for an imported bucket, else ``<Id.Arn>``."""
    cfn = bucket.node.default_child
    if isinstance(cfn, cdk.CfnResource):
        return attr_text(cfn, "Arn")
    return arn_text(bucket, "s3", bucket.bucket_name, regional=False)


class ArtifactPublisher(Construct):
    """The publishing function; :meth:`publish_file` and :meth:`publish_tree` add one artifact each.

    Attributes:
        function: the Lambda function behind every ``Custom::LineGuardArtifact``.
        role: its role (grants are added per artifact).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        key: kms.IKey,
        log_group_name: str,
        log_key: kms.IKey,
    ) -> None:
        """Args: the artifact bucket and its key; the function's log group and its log key."""
        super().__init__(scope, construct_id)
        self._bucket = bucket
        made = own_log_group(
            self,
            log_group_name=log_group_name,
            log_key=log_key,
            role_description=(
                "LineGuard artifact publisher: copies CDK assets to exact artifact keys"
            ),
            reason=function_reason("the publisher"),
        )
        log_group, self.role = made.log_group, made.role
        # SSE-KMS with a bucket key: S3 generates data keys and decrypts the bucket key.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="publisher.handler",
            code=lambda_.Code.from_asset(str(RUNTIME_DIR), exclude=["__pycache__", "*.pyc"]),
            role=self.role,
            log_group=log_group,
            memory_size=512,
            timeout=cdk.Duration.minutes(5),
            reserved_concurrent_executions=PUBLISHER_CONCURRENCY,
            description="LineGuard: copy CDK assets into the artifact bucket (never over other "
            "bytes)",
        )

    def _asset(self, construct_id: str, path: Path) -> s3_assets.Asset:
        asset = s3_assets.Asset(self, f"{construct_id}Asset", path=str(path))
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[asset.bucket.arn_for_objects(asset.s3_object_key)],
            )
        )
        return asset

    def _copy(
        self, construct_id: str, asset: s3_assets.Asset, **properties: str
    ) -> cdk.CustomResource:
        """The custom resource that copies ``asset`` into the artifact bucket."""
        return cdk.CustomResource(
            self,
            construct_id,
            service_token=self.function.function_arn,
            # CloudFormation waits an hour for an answer by default; the function has 5 minutes
            service_timeout=cdk.Duration.minutes(10),
            resource_type=RESOURCE_TYPE,
            properties={
                "SourceBucket": asset.s3_bucket_name,
                "SourceKey": asset.s3_object_key,
                "Bucket": self._bucket.bucket_name,
                **properties,
            },
        )

    def publish_file(
        self, construct_id: str, *, path: Path, key: str, sha256: str | None = None
    ) -> cdk.CustomResource:
        """Publish one file at ``key``; fails the deployment if ``key`` holds other bytes.

        ``sha256`` (hex) saves hashing the file again when the caller already did.
        """
        asset = self._asset(construct_id, path)
        bucket = self._bucket
        self.role.add_to_policy(
            iam.PolicyStatement(
                # GetObject: HeadObject reads the existing object's checksum
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects(key)],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringEquals": {"s3:prefix": key}},
            )
        )
        return self._copy(
            construct_id, asset, Mode="object", Key=key, Sha256=sha256 or file_sha256(path)
        )

    def publish_tree(self, construct_id: str, *, path: Path, prefix: str) -> cdk.CustomResource:
        """Publish a directory under ``prefix``, which it owns (stale objects there are deleted)."""
        if not prefix.endswith("/"):
            raise ValueError(f"prefix {prefix!r} must end with '/'")
        asset = self._asset(construct_id, path)
        bucket = self._bucket
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:DeleteObject"],
                resources=[bucket.arn_for_objects(f"{prefix}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": f"{prefix}*"}},
            )
        )
        acknowledge_wildcard(
            self.role,
            f"{_objects_text(bucket)}/{prefix}*",
            f"The publisher owns {prefix}: it writes the directory's files there and deletes "
            "the ones a newer version no longer has.",
        )
        return self._copy(construct_id, asset, Mode="tree", Prefix=prefix)

"""The KMS key that encrypts a plant's CloudWatch log groups (``/lineguard/<plant>/...``)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


def plant_log_group_prefix(plant_name: str) -> str:
    """Every log group of a plant is named under this prefix."""
    return f"/lineguard/{plant_name}/"


class PlantLogKey(Construct):
    """A customer managed key that only CloudWatch Logs may use, for this plant's log groups only.

    Attributes:
        key: the KMS key to give every ``logs.LogGroup`` of the plant as ``encryption_key``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, plant_name: str) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            description=f"LineGuard {plant_name} CloudWatch log groups encryption",
            enable_key_rotation=True,
            # The log groups are destroyed with the stack; their data is unreadable without the key.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        # CloudWatch Logs encrypts and decrypts with the key itself; writers (Lambda, Firehose, IoT
        # rule actions) need no KMS permission. The regional service principal and the
        # kms:EncryptionContext:aws:logs:arn condition restrict the key to this account, region and
        # plant's log groups (CloudWatch Logs User Guide, "Encrypt log data in CloudWatch Logs using
        # AWS Key Management Service", encrypt-log-data-kms, step 2 "Set permissions on the
        # customer managed key").
        log_groups = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{plant_log_group_prefix(plant_name)}*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchLogsOfThisPlant",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
            )
        )

"""What a core device may do: its IoT policy, and its token exchange role behind a role alias."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs._nag import acknowledge_wildcard, arn_text
from stacks.constructs.artifact_store import COMPONENTS_PREFIX, SAMPLES_PREFIX
from stacks.policies import core_device_policy_document


class CoreDeviceAccess(Construct):
    """Core-device IoT policy, token exchange role and its role alias.

    Attributes:
        policy: the IoT policy the provisioning template attaches to each device certificate.
        token_exchange_role: assumed through the role alias by the Greengrass TES.
        role_alias: the IoT role alias (``iotRoleAlias`` in the nucleus configuration).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        artifact_bucket: s3.IBucket,
        artifact_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.token_exchange_role = iam.Role(
            self,
            "TokenExchangeRole",
            assumed_by=iam.ServicePrincipal("credentials.iot.amazonaws.com"),
            description=f"Greengrass token exchange role of plant {plant.name}'s core devices",
            max_session_duration=cdk.Duration.hours(1),
        )
        role = self.token_exchange_role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadComponentArtifacts",
                actions=["s3:GetObject"],
                resources=[artifact_bucket.arn_for_objects(f"{COMPONENTS_PREFIX}com.lineguard.*")],
            )
        )
        # The nucleus asks for the bucket's region before every artifact download
        # (nucleus componentmanager/builtins/S3Downloader.java: getBucketLocation, then
        # getObject), and the developer guide's device-service-role page lists both actions.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="LocateArtifactBucket",
                actions=["s3:GetBucketLocation"],
                resources=[artifact_bucket.bucket_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnSamples",
                actions=["s3:PutObject"],
                # The credentials provider passes the thing name: each device writes its own prefix.
                resources=[
                    artifact_bucket.arn_for_objects(
                        f"{SAMPLES_PREFIX}{plant.name}/${{credentials-iot:ThingName}}/*"
                    )
                ],
            )
        )
        acknowledge_wildcard(
            role,
            arn_text(
                role,
                "s3",
                f"{artifact_bucket.bucket_name}/{COMPONENTS_PREFIX}com.lineguard.*",
                regional=False,
            ),
            "Devices read the artifacts of LineGuard's own components (com.lineguard.*, every "
            "version, since the ring's release decides which one) and nothing else.",
        )
        acknowledge_wildcard(
            role,
            arn_text(
                role,
                "s3",
                f"{artifact_bucket.bucket_name}/{SAMPLES_PREFIX}{plant.name}/<credentials-iot:ThingName>/*",
                regional=False,
            ),
            "Each device writes sample images only under its own thing name's prefix; object "
            "names are created at run time.",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ArtifactKey",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[artifact_key.key_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="GreengrassLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="/aws/greengrass/*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        acknowledge_wildcard(
            role,
            arn_text(role, "logs", "log-group:/aws/greengrass/*"),
            "Greengrass log manager creates one log group per component under /aws/greengrass/; "
            "the names are not known before devices run.",
        )
        self.role_alias = iot.CfnRoleAlias(
            self,
            "RoleAlias",
            role_alias=plant.role_alias_name,
            role_arn=role.role_arn,
            credential_duration_seconds=3600,
        )
        self.policy = iot.CfnPolicy(
            self,
            "Policy",
            policy_name=plant.core_policy_name,
            policy_document=core_device_policy_document(plant, self.role_alias.attr_role_alias_arn),
        )

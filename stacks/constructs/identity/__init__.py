"""Device identity: keep each core device's ``lineguard-identity`` shadow equal to its attributes."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs._nag import acknowledge_wildcard, arn_text
from stacks.constructs.identity.runtime.identity_sync import SHADOW

RUNTIME_DIR = Path(__file__).parent / "runtime"
# The nucleus publishes fleet status at launch, on reconnect, after deployments and every 24 h
# (nucleus status/FleetStatusService.java); each message re-checks the device's identity.
IDENTITY_SQL = (
    "SELECT topic(3) AS thing FROM '$aws/things/+/greengrassv2/health/json' "
    "WHERE startswith(topic(3), 'lineguard-{plant}-')"
)


class DeviceIdentity(Construct):
    """The identity-sync function and the fleet-status rule that runs it.

    Attributes:
        function: writes a thing's attributes into its ``lineguard-identity`` shadow.
        rule: the IoT rule on the plant's fleet-status messages.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        error_action: iot.CfnTopicRule.ActionProperty,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        things = f"lineguard-{plant.name}-*"
        log_group_name = f"/lineguard/{plant.name}/identity-sync"
        log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=log_group_name,
            encryption_key=log_key,
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Identity sync of plant {plant.name}: read things, write identity shadows",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["iot:DescribeThing"],
                resources=[stack.format_arn(service="iot", resource="thing", resource_name=things)],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["iot:GetThingShadow", "iot:UpdateThingShadow"],
                resources=[
                    stack.format_arn(
                        service="iot", resource="thing", resource_name=f"{things}/{SHADOW}"
                    )
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"{log_group_name}:*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        for resource, reason in (
            (f"thing/{things}", "Devices join by fleet provisioning under this plant's prefix."),
            (
                f"thing/{things}/{SHADOW}",
                "Only the identity shadow of this plant's devices, whose names come from serials.",
            ),
        ):
            acknowledge_wildcard(role, arn_text(self, "iot", resource), reason)
        acknowledge_wildcard(
            role,
            arn_text(role, "logs", f"log-group:{log_group_name}:*"),
            "Log streams of the function's own log group are created at run time.",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="identity_sync.handler",
            code=lambda_.Code.from_asset(str(RUNTIME_DIR), exclude=["__pycache__", "*.pyc"]),
            role=role,
            log_group=log_group,
            memory_size=128,
            timeout=cdk.Duration.seconds(10),
            # A plant's fleet status arrives in bursts (every device at once after a
            # deployment); a cap keeps it from taking the account's concurrency.
            reserved_concurrent_executions=5,
            environment={"PLANT": plant.name},
            description=f"LineGuard {plant.name}: thing attributes -> {SHADOW} shadow",
        )
        self.rule = iot.CfnTopicRule(
            self,
            "Rule",
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                description=f"LineGuard {plant.name}: fleet status -> identity sync",
                sql=IDENTITY_SQL.format(plant=plant.name),
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        lambda_=iot.CfnTopicRule.LambdaActionProperty(
                            function_arn=self.function.function_arn
                        )
                    )
                ],
                error_action=error_action,
            ),
        )
        self.function.add_permission(
            "InvokedByRule",
            principal=iam.ServicePrincipal("iot.amazonaws.com"),
            action="lambda:InvokeFunction",
            source_arn=self.rule.attr_arn,
            source_account=plant.account,
        )

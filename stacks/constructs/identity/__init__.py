"""Device identity: keep each core device's ``lineguard-identity`` shadow equal to its attributes."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs._nag import acknowledge_wildcard, arn_text
from stacks.constructs._own_log_group import function_reason, own_log_group
from stacks.constructs.identity.runtime.identity_sync import SHADOW

RUNTIME_DIR = Path(__file__).parent / "runtime"
# Two triggers, each re-checking the device's identity:
# - every connection: IoT always publishes $aws/events/presence/connected/<client id> ("available
#   by default and they can't be disabled"; client ids with "#" get none, so only the nucleus'
#   first connection, whose client id is the thing name: developer guide life-cycle-events);
# - fleet status, which the nucleus publishes at launch, on reconnect, after deployments and every
#   24 h (nucleus status/FleetStatusService.java): the periodic repair of drift.
IDENTITY_TRIGGERS = {
    "Connected": (
        "SELECT clientId AS thing FROM '$aws/events/presence/connected/+' "
        "WHERE startswith(clientId, 'lineguard-{plant}-')"
    ),
    "FleetStatus": (
        "SELECT topic(3) AS thing FROM '$aws/things/+/greengrassv2/health/json' "
        "WHERE startswith(topic(3), 'lineguard-{plant}-')"
    ),
}


class DeviceIdentity(Construct):
    """The identity-sync function and the IoT rules that run it.

    Attributes:
        function: writes a thing's attributes into its ``lineguard-identity`` shadow.
        rules: trigger name → the IoT rule (device connected, fleet status).
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
        made = own_log_group(
            self,
            log_group_name=log_group_name,
            log_key=log_key,
            role_description=(
                f"Identity sync of plant {plant.name}: read things, write identity shadows"
            ),
            reason=function_reason("the identity sync"),
        )
        log_group, role = made.log_group, made.role
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
        for resource, reason in (
            (f"thing/{things}", "Devices join by fleet provisioning under this plant's prefix."),
            (
                f"thing/{things}/{SHADOW}",
                "Only the identity shadow of this plant's devices, whose names come from serials.",
            ),
        ):
            acknowledge_wildcard(role, arn_text(self, "iot", resource), reason)
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
        self.rules: dict[str, iot.CfnTopicRule] = {}
        for name, sql in IDENTITY_TRIGGERS.items():
            rule = iot.CfnTopicRule(
                self,
                f"{name}Rule",
                topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                    description=f"LineGuard {plant.name}: {name} -> identity sync",
                    sql=sql.format(plant=plant.name),
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
                f"InvokedBy{name}Rule",
                principal=iam.ServicePrincipal("iot.amazonaws.com"),
                action="lambda:InvokeFunction",
                source_arn=rule.attr_arn,
                source_account=plant.account,
            )
            self.rules[name] = rule

"""Where IoT rule actions that fail go: one log group per plant, used as every rule's error action."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs._nag import acknowledge_wildcard, arn_text


class RuleErrorLog(Construct):
    """A log group and a role that IoT rules' error actions write to.

    Attributes:
        log_group: the log group failed rule actions are written to.
        error_action: the ``errorAction`` to give every topic rule.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, plant_name: str, log_key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        name = f"/lineguard/{plant_name}/iot-rule-errors"
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=name,
            retention=logs.RetentionDays.THREE_MONTHS,
            encryption_key=log_key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description=f"IoT rule error action of plant {plant_name}",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"{name}:*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        acknowledge_wildcard(
            role,
            arn_text(role, "logs", f"log-group:{name}:*"),
            "IoT creates the log streams of this one error log group at run time.",
        )
        self.error_action = iot.CfnTopicRule.ActionProperty(
            cloudwatch_logs=iot.CfnTopicRule.CloudwatchLogsActionProperty(
                log_group_name=self.log_group.log_group_name, role_arn=role.role_arn
            )
        )

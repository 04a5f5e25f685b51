"""A log group of one writer's own, KMS-encrypted, and a role that may write only there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs._nag import acknowledge_wildcard, arn_text

LAMBDA = "lambda.amazonaws.com"
IOT = "iot.amazonaws.com"
# What a Lambda function needs to write its own logs.
FUNCTION_LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
# What an IoT rule's cloudwatchLogs action needs (cloudwatch-logs-rule-action.html).
RULE_LOG_ACTIONS = ("logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents")


@dataclass(frozen=True)
class OwnLogGroup:
    """The log group and the role that writes it."""

    log_group: logs.LogGroup
    role: iam.Role


def own_log_group(
    scope: Construct,
    *,
    log_group_name: str,
    log_key: kms.IKey,
    role_description: str,
    reason: str,
    service: str = LAMBDA,
    actions: Sequence[str] = FUNCTION_LOG_ACTIONS,
    retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
    logs_id: str = "Logs",
    role_id: str = "Role",
) -> OwnLogGroup:
    """A log group and a role, assumed by ``service``, allowed ``actions`` on its streams only.

    ``reason`` is the cdk-nag acknowledgement of the log-stream wildcard.
    """
    stack = cdk.Stack.of(scope)
    log_group = logs.LogGroup(
        scope,
        logs_id,
        log_group_name=log_group_name,
        encryption_key=log_key,
        retention=retention,
        removal_policy=cdk.RemovalPolicy.DESTROY,
    )
    role = iam.Role(
        scope,
        role_id,
        assumed_by=iam.ServicePrincipal(service),
        description=role_description,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=list(actions),
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
    acknowledge_wildcard(role, arn_text(role, "logs", f"log-group:{log_group_name}:*"), reason)
    return OwnLogGroup(log_group, role)


def function_reason(who: str) -> str:
    """The acknowledgement of a function's own log streams."""
    return (
        f"Log streams of {who}'s own log group are created at run time; the grant is limited "
        "to that one group."
    )

"""A Lambda function's own encrypted log group and a role that may write only there."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs._nag import acknowledge_wildcard, arn_text


@dataclass(frozen=True)
class FunctionLogs:
    """The log group and the execution role of one function."""

    log_group: logs.LogGroup
    role: iam.Role


def function_logs(
    scope: Construct,
    *,
    log_group_name: str,
    log_key: kms.IKey,
    role_description: str,
    who: str,
    logs_id: str = "Logs",
    role_id: str = "Role",
) -> FunctionLogs:
    """A KMS-encrypted log group (3 months) and a Lambda role writing only its log streams.

    ``who`` names the function in the cdk-nag acknowledgement ("the hook", "the check", ...).
    """
    stack = cdk.Stack.of(scope)
    log_group = logs.LogGroup(
        scope,
        logs_id,
        log_group_name=log_group_name,
        encryption_key=log_key,
        retention=logs.RetentionDays.THREE_MONTHS,
        removal_policy=cdk.RemovalPolicy.DESTROY,
    )
    role = iam.Role(
        scope,
        role_id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=role_description,
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
    acknowledge_wildcard(
        role,
        arn_text(role, "logs", f"log-group:{log_group_name}:*"),
        f"Log streams of {who}'s own log group are created at run time; the grant is limited "
        "to that one group.",
    )
    return FunctionLogs(log_group, role)

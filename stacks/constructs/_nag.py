"""Acknowledging cdk-nag findings: every acknowledgement carries a specific reason."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (e.g. ``AwsSolutions-IAM5[Resource::...]``) on ``scope``."""
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def acknowledge_wildcard(scope: IConstruct, resource: str, reason: str) -> None:
    """Acknowledge one IAM5 wildcard finding on ``resource`` as cdk-nag renders it."""
    acknowledge(scope, f"AwsSolutions-IAM5[Resource::{resource}]", reason)


def arn_text(scope: IConstruct, service: str, resource: str, *, regional: bool = True) -> str:
    """An ARN as cdk-nag prints it in finding ids (tokens as ``<AWS::Partition>``)."""
    stack = cdk.Stack.of(scope)
    if not regional:
        return f"arn:<AWS::Partition>:{service}:::{resource}"
    region = "<AWS::Region>" if cdk.Token.is_unresolved(stack.region) else stack.region
    account = "<AWS::AccountId>" if cdk.Token.is_unresolved(stack.account) else stack.account
    return f"arn:<AWS::Partition>:{service}:{region}:{account}:{resource}"


def attr_text(resource: cdk.CfnResource, attribute: str) -> str:
    """A resource attribute as cdk-nag prints it (``<LogicalId.Arn>``)."""
    stack = cdk.Stack.of(resource)
    return f"<{stack.resolve(stack.get_logical_id(resource))}.{attribute}>"

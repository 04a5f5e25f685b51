"""Compose the CDK app: one Shared stack per account/region, one Plant stack per plant."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

from stacks.config import (
    CFN_MAX_RESOURCES_PER_OPERATION,
    CFN_MAX_RESOURCES_PER_STACK,
    PlantConfig,
    Release,
)
from stacks.constructs.promotion import Promotion
from stacks.plant import PlantStack, plant_stack_name
from stacks.shared import SharedStack

SHARED_STACK = "LineGuard-Shared"


@dataclass(frozen=True)
class LineGuardStacks:
    """The stacks added to an app."""

    shared: dict[tuple[str, str], SharedStack]
    plants: dict[str, PlantStack]


def shared_stack_name(account: str, region: str, envs: int) -> str:
    """``LineGuard-Shared``, or ``LineGuard-Shared-<account>-<region>`` when plants span envs."""
    return SHARED_STACK if envs == 1 else f"{SHARED_STACK}-{account}-{region}"


def add_stacks(
    app: cdk.App, plants: tuple[PlantConfig, ...], releases: dict[str, Release]
) -> LineGuardStacks:
    """Add the Shared stack(s) and one Plant stack per plant to ``app``."""
    envs = sorted({(p.account, p.region) for p in plants})
    shared: dict[tuple[str, str], SharedStack] = {}
    for account, region in envs:
        shared[(account, region)] = SharedStack(
            app,
            shared_stack_name(account, region, len(envs)),
            env=cdk.Environment(account=account, region=region),
            description="LineGuard shared: artifact bucket, model package group, pipeline roles",
        )
    for (account, region), base in shared.items():  # promotion on model package approval
        Promotion(
            base,
            "Promotion",
            plants=[p for p in plants if (p.account, p.region) == (account, region)],
            bucket=base.artifact_bucket,
            key=base.artifact_key,
            role=base.promotion_role,
            model_package_group_name=base.model_package_group_name,
        )
    stacks: dict[str, PlantStack] = {}
    for plant in plants:
        base = shared[(plant.account, plant.region)]
        stack = PlantStack(
            app,
            plant_stack_name(plant.name),
            plant=plant,
            release=releases[plant.name],
            artifact_key=base.artifact_key,
            env=cdk.Environment(account=plant.account, region=plant.region),
            description=f"LineGuard plant {plant.name}: fleet, provisioning, deployments, results",
        )
        stack.add_stack_dependency(base)
        stacks[plant.name] = stack
    return LineGuardStacks(shared=shared, plants=stacks)


class StackLimitError(ValueError):
    """A stack would not deploy: more resources than CloudFormation takes; one-line message."""


def resource_counts(app: cdk.App) -> dict[str, int]:
    """CloudFormation resources per stack (nested stacks separately), by construct path."""
    counts: dict[str, int] = {}

    def walk(scope: IConstruct, stack: str) -> None:
        for child in scope.node.children:
            if isinstance(child, cdk.Stack):
                counts[child.node.path] = 0
                walk(child, child.node.path)
                continue
            if isinstance(child, cdk.CfnResource):
                counts[stack] += 1
            walk(child, stack)

    walk(app, "")
    return counts


def check_stack_sizes(app: cdk.App) -> None:
    """Raise :class:`StackLimitError` before synthesis if a stack exceeds CloudFormation's quotas.

    CloudFormation quotas (cloudformation-limits.html): 500 resources per template; 2,500
    resources created, updated or deleted in one operation of a stack and its nested stacks.
    """
    counts = resource_counts(app)
    for path, count in counts.items():
        if count > CFN_MAX_RESOURCES_PER_STACK:
            raise StackLimitError(
                f"{path}: {count} resources, CloudFormation takes at most "
                f"{CFN_MAX_RESOURCES_PER_STACK} per stack (cloudformation-limits.html)"
            )
    for path in (p for p in counts if "/" not in p):
        total = sum(n for p, n in counts.items() if p == path or p.startswith(path + "/"))
        if total > CFN_MAX_RESOURCES_PER_OPERATION:
            raise StackLimitError(
                f"{path}: {total} resources with its nested stacks, CloudFormation creates at "
                f"most {CFN_MAX_RESOURCES_PER_OPERATION} in one stack operation "
                "(cloudformation-limits.html)"
            )


def add_nag(app: cdk.App) -> None:
    """Run cdk-nag's AwsSolutions pack on the whole app at synth time."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))

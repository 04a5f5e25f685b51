"""Compose the CDK app: one Shared stack per account/region, one Plant stack per plant.

Deploying one plant never changes another plant's stacks or the Shared stack: the Shared stack
of an account/region promotes every plant file of that account/region (not only the plants
selected with ``-c plant``), and is always named ``LineGuard-Shared-<account>-<region>``, so it
synthesises identically whatever the selection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

from stacks.components import PublishedComponents
from stacks.config import (
    CFN_MAX_RESOURCES_PER_OPERATION,
    CFN_MAX_RESOURCES_PER_STACK,
    PlantConfig,
    PlantConfigError,
    Release,
    load_plant_release,
    load_plants,
    shared_stack_name,
    strictest_calibration,
)
from stacks.constructs._checkov import accept_checkov_findings
from stacks.constructs.promotion import Promotion
from stacks.plant import PlantStack, plant_stack_name
from stacks.shared import SharedStack

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LineGuardStacks:
    """The stacks added to an app."""

    shared: dict[tuple[str, str], SharedStack]
    plants: dict[str, PlantStack]


@dataclass(frozen=True)
class Selection:
    """What the app's context selects: the plants to deploy, every plant, and the releases.

    Attributes:
        plants: the selected plants (``-c plant=a,b``; all by default), which get Plant stacks.
        every_plant: every plant file in ``plants_dir`` (the Shared stacks promote all of them).
        releases: plant name → release, for the selected plants.
        releases_dir: where the release files are.
    """

    plants: tuple[PlantConfig, ...]
    every_plant: tuple[PlantConfig, ...]
    releases: dict[str, Release]
    releases_dir: Path


def selected_names(value: object) -> list[str] | None:
    """The ``plant`` context value as plant names (None: every plant)."""
    if value in (None, "", "all"):
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    return [s.strip() for s in str(value).split(",") if s.strip()]


def load_selection(app: cdk.App, root: Path = REPO) -> Selection:
    """Read the ``plant``, ``plants_dir`` and ``releases_dir`` context and load what they name.

    Every plant file is loaded (and must be valid), not only the selected ones: the Shared stack
    lists them all. Releases are loaded for the selected plants only.

    Raises:
        PlantConfigError: a broken plant or release file, a missing release, an unknown plant.
    """
    plants_dir = Path(app.node.try_get_context("plants_dir") or root / "plants")
    source = str(app.node.try_get_context("releases_dir") or root / "releases")
    every_plant = load_plants(plants_dir)
    selected = selected_names(app.node.try_get_context("plant"))
    plants = every_plant if selected is None else load_plants(plants_dir, selected)
    releases_dir = Path(source)
    if source.startswith("s3://"):
        _check_releases_url(source, plants)
        releases_dir = _releases_from_s3(source, plants[0].region if plants else None, root)
    releases = {p.name: load_plant_release(p, releases_dir) for p in plants}
    return Selection(plants, every_plant, releases, releases_dir)


def _check_releases_url(url: str, plants: Iterable[PlantConfig]) -> None:
    """An ``s3://`` releases_dir must be where the rollout controller writes the selected
    plants' releases: a typo would list nothing and quietly deploy the bootstrap copy, which
    reverts every promoted ring."""
    from stacks.release_store import releases_url

    for plant in plants:
        expected = releases_url(plant.artifact_bucket_name)
        if url.rstrip("/") + "/" != expected:
            raise PlantConfigError(
                url,
                "releases_dir",
                f"plant {plant.name}'s releases are at {expected} (the rollout controller writes "
                "them there); deploy plants of other accounts or regions one at a time",
            )


def _releases_from_s3(url: str, region: str | None, root: Path) -> Path:
    """Download the releases the rollout controller keeps in S3 (stacks/release_store.py) over
    a copy of the repository's bootstrap releases; the credentials are the deployer's."""
    import tempfile

    import boto3

    from stacks.release_store import ReleaseStoreError, download_releases

    dest = Path(tempfile.mkdtemp(prefix="lineguard-releases-"))
    try:
        return download_releases(
            boto3.client("s3", region_name=region), url, dest, fallback=root / "releases"
        )
    except ReleaseStoreError as exc:
        raise PlantConfigError(url, "", str(exc)) from None


def add_stacks(
    app: cdk.App,
    plants: Sequence[PlantConfig],
    releases: dict[str, Release],
    *,
    every_plant: Sequence[PlantConfig] | None = None,
    components: PublishedComponents | None = None,
) -> LineGuardStacks:
    """Add one Plant stack per plant and the Shared stack of each of their accounts/regions.

    Args:
        app: the CDK app.
        plants: the plants to add Plant stacks for.
        releases: plant name → release, for ``plants``.
        every_plant: every plant there is (default ``plants``); each Shared stack promotes those
            of its account and region, so its template does not depend on ``plants``.
        components: the component build (``stacks.components``) each Shared stack publishes in
            its account and region; every Plant stack depends on its Shared stack, so the
            versions exist before a ring's deployment names them.
    """
    every = tuple(sorted(every_plant if every_plant is not None else plants, key=lambda p: p.name))
    missing = [p.name for p in plants if p not in every]
    if missing:
        raise ValueError(f"plants {missing} are not among every_plant")
    envs = sorted({(p.account, p.region) for p in plants})
    shared: dict[tuple[str, str], SharedStack] = {}
    for account, region in envs:
        shared[(account, region)] = SharedStack(
            app,
            shared_stack_name(account, region),
            env=cdk.Environment(account=account, region=region),
            description="LineGuard shared: artifact bucket, components, model package group, "
            "training pipeline, roles",
            components=components,
            calibration=strictest_calibration(
                p for p in every if (p.account, p.region) == (account, region)
            ),
            sample_plants=[p.name for p in every if (p.account, p.region) == (account, region)],
        )
    for (account, region), base in shared.items():  # promotion on model package approval
        Promotion(
            base,
            "Promotion",
            plants=[p for p in every if (p.account, p.region) == (account, region)],
            bucket=base.artifact_bucket,
            key=base.artifact_key,
            role=base.promotion_role,
            model_package_group_name=base.model_package_group_name,
            github_repository=app.node.try_get_context("github_repository"),
            github_oidc_provider_arn=app.node.try_get_context("github_oidc_provider_arn"),
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
    accept_checkov_findings(app)
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

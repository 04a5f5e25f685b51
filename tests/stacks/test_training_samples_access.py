"""The training role reads the field samples of its own plants, and nothing else of samples/."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from stacks.constructs.artifact_store import ArtifactStore
from stacks.constructs.pipeline_roles import PipelineRoles


def _statements(plants: tuple[str, ...]) -> list[dict[str, Any]]:
    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "T", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    store = ArtifactStore(
        stack,
        "Store",
        bucket_name="lineguard-artifacts-x",
        access_log_bucket_name="lineguard-logs-x",
    )
    roles = PipelineRoles(
        stack,
        "Roles",
        bucket=store.bucket,
        key=store.key,
        model_package_group_name="lineguard-inspection",
        sample_plants=plants,
    )
    template = Template.from_stack(stack)
    logical = stack.resolve((roles.training_role.node.default_child).logical_id)  # type: ignore[union-attr]
    statements = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": logical} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _resources(statement: dict[str, Any]) -> list[str]:
    resources = statement["Resource"]
    return [json.dumps(r) for r in (resources if isinstance(resources, list) else [resources])]


@pytest.fixture(scope="module")
def statements() -> list[dict[str, Any]]:
    return _statements(("north", "south"))


def test_the_training_role_reads_each_plants_samples_prefix(
    statements: list[dict[str, Any]],
) -> None:
    readers = [s for s in statements if s["Action"] == "s3:GetObject"]
    text = json.dumps(readers)
    assert "/samples/north/*" in text and "/samples/south/*" in text
    listing = next(s for s in statements if s["Action"] == "s3:ListBucket")
    prefixes = listing["Condition"]["StringLike"]["s3:prefix"]
    assert {"samples/north/*", "samples/south/*"} <= set(prefixes)


def test_the_training_role_never_reaches_all_samples_nor_writes_them(
    statements: list[dict[str, Any]],
) -> None:
    reached = []
    for statement in statements:
        actions = statement["Action"]
        for resource in _resources(statement):
            if "/samples/" in resource:
                assert actions == "s3:GetObject", statement  # read only
                reached.append(resource.split("/samples/")[1].split('"')[0])
    assert sorted(reached) == ["north/*", "south/*"]
    listing = next(s for s in statements if s["Action"] == "s3:ListBucket")
    samples = [p for p in listing["Condition"]["StringLike"]["s3:prefix"] if "samples" in p]
    assert sorted(samples) == ["samples/north/*", "samples/south/*"]


def test_without_plants_the_role_reads_no_samples() -> None:
    text = json.dumps(_statements(()))
    assert "samples/" not in text

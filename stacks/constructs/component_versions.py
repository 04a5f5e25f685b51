"""The LineGuard components as ``AWS::GreengrassV2::ComponentVersion``, artifacts copied first."""

from __future__ import annotations

import json
from collections.abc import Iterable

import aws_cdk as cdk
from aws_cdk import aws_greengrassv2 as greengrassv2
from constructs import Construct

from stacks.components import ComponentArtifact
from stacks.constructs.artifact_publisher import ArtifactPublisher

COMPONENT_VERSION_TYPE = "AWS::GreengrassV2::ComponentVersion"


class ComponentVersions(Construct):
    """A component version per built component; each depends on the copy of its artifact.

    A version is immutable in Greengrass (name + version), so the resources are retained when
    they leave the template or are updated away (a ring may still run an older version) — but
    not when the operation that created them rolls back: a retained half-created version would
    make the retry fail on its name + version (DeletionPolicy RetainExceptOnCreate, the
    CloudFormation DeletionPolicy attribute page). Changed
    bytes under an existing version fail the deployment twice over — the artifact copy refuses
    to overwrite the key, and the recipe (which names the artifact's digest) changes, which
    CloudFormation can only apply by creating that name + version again.

    Attributes:
        versions: (name, version) → the component version resource.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        publisher: ArtifactPublisher,
        bucket_name: str,
        components: Iterable[ComponentArtifact],
    ) -> None:
        super().__init__(scope, construct_id)
        if cdk.Token.is_unresolved(bucket_name):
            raise ValueError("ComponentVersions needs the artifact bucket's literal name")
        self.versions: dict[tuple[str, str], greengrassv2.CfnComponentVersion] = {}
        for component in components:
            label = f"{component.name}-{component.version}"
            copied = publisher.publish_file(
                f"Artifact-{label}",
                path=component.artifact,
                key=component.key,
                sha256=component.sha256,
            )
            version = greengrassv2.CfnComponentVersion(
                self,
                label,
                inline_recipe=json.dumps(component.published_recipe(bucket_name), sort_keys=True),
            )
            version.apply_removal_policy(cdk.RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE)
            version.node.add_dependency(copied)
            self.versions[(component.name, component.version)] = version

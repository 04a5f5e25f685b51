"""One AWS::GreengrassV2::Deployment per ring, from the same spec the rollout controller sends.

The standing deployment has no abort criteria (``deployment_spec(..., abort=False)``): it is a
continuous IoT job, and once abort criteria cancel it, devices provisioned into the ring later get
nothing (see ``stacks.deployment_spec``). Its staged rollout rate and timeouts stay.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iot as iot
from constructs import Construct

from stacks.config import PlantConfig, Release
from stacks.deployment_spec import deployment_spec, to_cfn_properties

DEPLOYMENT_TYPE = "AWS::GreengrassV2::Deployment"


class RingDeployments(Construct):
    """A standing deployment (no abort criteria) per ring with a release; a warning for the rest.

    Attributes:
        deployments: ring name → the deployment resource.
        rings_without_release: rings that got no deployment.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        release: Release,
        ring_groups: dict[str, iot.CfnThingGroup],
    ) -> None:
        super().__init__(scope, construct_id)
        self.deployments: dict[str, cdk.CfnResource] = {}
        self.rings_without_release: list[str] = []
        for ring in plant.rings:
            if release.ring(ring.name) is None:
                self.rings_without_release.append(ring.name)
                cdk.Annotations.of(self).add_warning_v2(
                    "lineguard:ring-without-release",
                    f"ring {ring.name!r} has no release in releases/{plant.name}.json; "
                    "no deployment",
                )
                continue
            spec = deployment_spec(plant, ring.name, release, abort=False)
            deployment = cdk.CfnResource(
                self, f"Ring-{ring.name}", type=DEPLOYMENT_TYPE, properties=to_cfn_properties(spec)
            )
            deployment.add_resource_dependency(ring_groups[ring.name])
            self.deployments[ring.name] = deployment

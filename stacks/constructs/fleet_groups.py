"""Thing groups: plant → line for organisation, and one group per rollout ring."""

from __future__ import annotations

from aws_cdk import aws_iot as iot
from constructs import Construct

from stacks.config import PlantConfig


class FleetGroups(Construct):
    """The plant's thing groups. Only ring groups are deployment targets.

    Attributes:
        plant_group: the plant's group (parent of line and ring groups).
        line_groups: line name → group.
        ring_groups: ring name → group, in rollout order.
    """

    def __init__(self, scope: Construct, construct_id: str, *, plant: PlantConfig) -> None:
        super().__init__(scope, construct_id)
        self.plant_group = iot.CfnThingGroup(
            self,
            "Plant",
            thing_group_name=plant.plant_group_name,
            thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                thing_group_description=f"LineGuard plant {plant.name} (organisation only)",
                attribute_payload=iot.CfnThingGroup.AttributePayloadProperty(
                    attributes={"plant": plant.name, "kind": "plant"}
                ),
            ),
        )
        self.line_groups: dict[str, iot.CfnThingGroup] = {}
        for line in plant.lines:
            self.line_groups[line.name] = self._child(
                f"Line-{line.name}",
                plant.line_group_name(line.name),
                f"Line {line.name} of plant {plant.name} (organisation only)",
                {"plant": plant.name, "kind": "line", "line": line.name},
            )
        self.ring_groups: dict[str, iot.CfnThingGroup] = {}
        for ring in plant.rings:
            self.ring_groups[ring.name] = self._child(
                f"Ring-{ring.name}",
                plant.ring_group_name(ring.name),
                f"Rollout ring {ring.name} of plant {plant.name} ({ring.percent:g} % of devices)",
                {"plant": plant.name, "kind": "ring", "ring": ring.name},
            )

    def _child(
        self, construct_id: str, name: str, description: str, attributes: dict[str, str]
    ) -> iot.CfnThingGroup:
        group = iot.CfnThingGroup(
            self,
            construct_id,
            thing_group_name=name,
            parent_group_name=self.plant_group.thing_group_name,
            thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                thing_group_description=description,
                attribute_payload=iot.CfnThingGroup.AttributePayloadProperty(attributes=attributes),
            ),
        )
        group.add_resource_dependency(self.plant_group)
        return group

"""Thing groups: the plant's group with one group per rollout ring, and one group per line."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iot as iot
from constructs import Construct

from stacks.config import LINE_STACKS, PlantConfig, line_stack


class FleetGroups(Construct):
    """The plant's thing groups. Only ring groups are deployment targets.

    Ring groups hang under the plant group. Line groups are top-level groups in nested stacks
    (``Lines<k>``, chosen by :func:`stacks.config.line_stack`), so the plant stack's size does
    not grow with its lines. Top-level because a thing group takes at most 100 direct child
    groups (AWS IoT Device Management quotas, ``iot_device_management.html#thing-group-limits``)
    and a group's parent can never change (developer guide, ``thing-groups.html``), and because a
    thing cannot be in two groups of the same hierarchy ("you can't add a thing to two groups
    that share a common parent", ``thing-groups.html``): every device is in its line group and its
    ring group.

    Attributes:
        plant_group: the plant's group (parent of the ring groups).
        line_groups: line name → group.
        line_stacks: the nested stacks holding the line groups, by index.
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
        self.line_stacks: dict[int, cdk.NestedStack] = {}
        self.line_groups: dict[str, iot.CfnThingGroup] = {}
        for line in plant.lines:
            index = line_stack(line.name)
            if index not in self.line_stacks:
                self.line_stacks[index] = cdk.NestedStack(
                    self,
                    f"Lines{index}",
                    description=(
                        f"LineGuard plant {plant.name}: line thing groups "
                        f"(part {index + 1} of {LINE_STACKS})"
                    ),
                )
            self.line_groups[line.name] = iot.CfnThingGroup(
                self.line_stacks[index],
                f"Line-{line.name}",
                thing_group_name=plant.line_group_name(line.name),
                thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                    thing_group_description=(
                        f"Line {line.name} of plant {plant.name} (organisation only)"
                    ),
                    attribute_payload=iot.CfnThingGroup.AttributePayloadProperty(
                        attributes={"plant": plant.name, "kind": "line", "line": line.name}
                    ),
                ),
            )
        self.ring_groups: dict[str, iot.CfnThingGroup] = {}
        for ring in plant.rings:
            group = iot.CfnThingGroup(
                self,
                f"Ring-{ring.name}",
                thing_group_name=plant.ring_group_name(ring.name),
                parent_group_name=self.plant_group.thing_group_name,
                thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                    thing_group_description=(
                        f"Rollout ring {ring.name} of plant {plant.name} "
                        f"({ring.percent:g} % of devices)"
                    ),
                    attribute_payload=iot.CfnThingGroup.AttributePayloadProperty(
                        attributes={"plant": plant.name, "kind": "ring", "ring": ring.name}
                    ),
                ),
            )
            group.add_resource_dependency(self.plant_group)
            self.ring_groups[ring.name] = group

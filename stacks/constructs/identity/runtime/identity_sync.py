"""A core device's identity, from its thing attributes to its ``lineguard-identity`` shadow.

The thing's attributes (set by fleet provisioning from the device's ``LineName`` and
``StationName``, changed later with ``python -m stacks.station``) are the one source of a
device's plant, line, station and camera count. The components read them from the named shadow
``lineguard-identity``, which ShadowManager keeps in sync on the device (docs/identity.md).
This module writes that shadow's desired state; it runs in AWS Lambda (standard library and the
runtime's boto3) on every fleet-status message a device publishes — at nucleus launch, on
reconnect, after deployments and every 24 h (nucleus ``status/FleetStatusService.java``,
``model/Trigger.java``) — on every connection of the device (the lifecycle event
``$aws/events/presence/connected/<client id>``, which IoT always publishes: developer guide
life-cycle-events) and from the ``stacks.station`` command.

Environment (Lambda): ``PLANT``, the plant whose things this function may touch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

SHADOW = "lineguard-identity"
FORMAT = 1
FIELDS = ("line", "station", "cameras")


class IdentityError(ValueError):
    """A thing whose attributes do not make a LineGuard identity."""


def identity_document(plant: str, thing_name: str, attributes: Mapping[str, str]) -> dict[str, Any]:
    """The identity a device's components use, from its thing name and attributes.

    A thing without a thing type has at most three attributes (IoT developer guide,
    thing-types): ``line``, ``station`` and ``cameras``; the plant is in the thing name.
    """
    missing = [f for f in FIELDS if not attributes.get(f)]
    if missing:
        raise IdentityError(f"thing {thing_name}: attributes {', '.join(missing)} are missing")
    try:
        cameras = int(attributes["cameras"])
    except ValueError:
        raise IdentityError(
            f"thing {thing_name}: attribute cameras={attributes['cameras']!r} is not a number"
        ) from None
    return {
        "v": FORMAT,
        "thing": thing_name,
        "plant": plant,
        "line": attributes["line"],
        "station": attributes["station"],
        "cameras": cameras,
    }


def desired_identity(iot_data: Any, thing_name: str) -> dict[str, Any] | None:
    """The shadow's desired identity now, or None when the shadow does not exist."""
    try:
        response = iot_data.get_thing_shadow(thingName=thing_name, shadowName=SHADOW)
    except iot_data.exceptions.ResourceNotFoundException:
        return None
    document = json.loads(response["payload"].read())
    desired = document.get("state", {}).get("desired")
    return desired if isinstance(desired, dict) else None


def sync(iot: Any, iot_data: Any, plant: str, thing_name: str) -> dict[str, Any] | None:
    """Write the thing's identity to its shadow if the shadow differs; the written document."""
    attributes = iot.describe_thing(thingName=thing_name).get("attributes", {})
    document = identity_document(plant, thing_name, attributes)
    current = desired_identity(iot_data, thing_name)
    if current == document:
        return None
    # Replace the whole desired state: a field dropped from the identity must not linger.
    clear = {k: None for k in (current or {}) if k not in document}
    payload = {"state": {"desired": {**clear, **document}}}
    iot_data.update_thing_shadow(
        thingName=thing_name, shadowName=SHADOW, payload=json.dumps(payload).encode()
    )
    LOG.info(json.dumps({"synced": thing_name, "identity": document}))
    return document


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: the IoT rules pass ``{"thing": <thing name>}``."""
    import boto3  # the Lambda runtime's; imported here so tests pass their own clients

    thing = str(event.get("thing") or "")
    plant = os.environ["PLANT"]
    prefix = f"lineguard-{plant}-"
    if not thing.startswith(prefix):
        LOG.warning(json.dumps({"ignored": thing, "reason": f"not a {prefix}* thing"}))
        return {"synced": False}
    try:
        written = sync(boto3.client("iot"), boto3.client("iot-data"), plant, thing)
    except IdentityError as err:
        LOG.error(json.dumps({"thing": thing, "error": str(err)}))
        return {"synced": False, "error": str(err)}
    return {"synced": written is not None}

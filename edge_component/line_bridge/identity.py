"""The device's identity (docs/identity.md): plant, line and station from a named shadow.

ShadowManager keeps the shadow ``lineguard-identity`` of the core device's thing in sync from
the cloud; the bridge reads it with IPC ``GetThingShadow`` and learns of changes from the local
pub/sub topics ShadowManager publishes on after each local update or delete
(``$aws/things/<thing>/shadow/name/<shadow>/update/accepted`` and ``.../delete/accepted``:
ShadowManager ``ipc/PubSubClientWrapper.java``, ``model/Constants.java``; the cloud-to-device
sync writes through the same update handler, ``sync/model/BaseSyncRequest.java``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from line_bridge.config import STATION
from line_bridge.errors import IdentityError

log = logging.getLogger(__name__)

SHADOW_NAME = "lineguard-identity"
IDENTITY_FORMAT = 1


@dataclass(frozen=True)
class Identity:
    """Where this core device stands: its thing, plant, line and station."""

    thing: str
    plant: str
    line: str
    station: str


def shadow_topics(thing: str) -> list[str]:
    """The local topics ShadowManager publishes on when the identity shadow changes."""
    prefix = f"$aws/things/{thing}/shadow/name/{SHADOW_NAME}"
    return [f"{prefix}/update/accepted", f"{prefix}/delete/accepted"]


def parse_identity(thing: str, payload: bytes | str) -> Identity:
    """The identity in a shadow document's ``state.desired``; raise :class:`IdentityError`."""
    what = f"shadow {SHADOW_NAME} of thing {thing}"
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IdentityError(f"{what}: not JSON ({exc})") from None
    desired = doc.get("state", {}).get("desired") if isinstance(doc, dict) else None
    if not isinstance(desired, dict):
        raise IdentityError(f"{what}: state.desired is missing")
    if desired.get("v") != IDENTITY_FORMAT:
        raise IdentityError(f"{what}: state.desired.v is {desired.get('v')!r}, not 1")
    if desired.get("thing", thing) != thing:
        raise IdentityError(
            f"{what}: state.desired.thing {desired.get('thing')!r} is another thing"
        )
    values = {}
    for key in ("plant", "line", "station"):
        value = desired.get(key)
        if not isinstance(value, str) or not STATION.match(value):
            raise IdentityError(f"{what}: state.desired.{key} {value!r} is not a valid name")
        values[key] = value
    return Identity(thing=thing, **values)


class IdentityReader:
    """Reads the identity through an IPC client it receives (``GreengrassCoreIPCClientV2``)."""

    def __init__(self, client: Any, thing: str) -> None:
        self.client = client
        self.thing = thing

    def read(self) -> Identity:
        """The current identity; raise :class:`IdentityError` saying why there is none."""
        from awsiot.greengrasscoreipc.model import ResourceNotFoundError

        try:
            response = self.client.get_thing_shadow(thing_name=self.thing, shadow_name=SHADOW_NAME)
        except ResourceNotFoundError:
            # ShadowManager answers so until the first sync from the cloud
            # (ipc/GetThingShadowRequestHandler.java: "No shadow found")
            raise IdentityError(
                f"no identity: shadow {SHADOW_NAME} of thing {self.thing} not found (not synced yet)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - unauthorised, ShadowManager down: say which
            raise IdentityError(f"no identity: GetThingShadow failed: {exc}") from None
        return parse_identity(self.thing, response.payload or b"")

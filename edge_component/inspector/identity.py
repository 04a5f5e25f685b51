"""A device's identity (plant, line, station, cameras) from its ``lineguard-identity`` shadow.

The cloud sets a device's identity once, at provisioning, and keeps it in the named shadow
``lineguard-identity`` (``state.desired`` = ``{v, thing, plant, line, station, cameras}``);
ShadowManager syncs that shadow to the device, and the inspector reads it through IPC
GetThingShadow (docs/identity.md). A ring deployment spans many lines and stations, so none of
these ever comes from the component's configuration.

Without an identity the inspector judges nothing: it sends no heartbeat (the line bridge then
diverts every part to manual inspection) and says why, once, until the shadow arrives.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from inspector.messages import MAX_ID_CHARS

LOG = logging.getLogger(__name__)
IDENTITY_SHADOW = "lineguard-identity"
IDENTITY_FORMAT = 1
MAX_CAMERAS = 64


class IdentityError(Exception):
    """The identity shadow is missing, unreadable or malformed (the message says which)."""


@dataclass(frozen=True)
class DeviceIdentity:
    """Where a device stands: plant, line, station and how many cameras it opens."""

    plant: str
    line: str
    station: str
    cameras: int


def parse_identity(payload: bytes, thing: str) -> DeviceIdentity:
    """The identity in a GetThingShadow payload for ``thing``; IdentityError names what is wrong."""
    where = f"shadow {IDENTITY_SHADOW} of {thing}"
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise IdentityError(f"{where}: not JSON ({exc})") from None
    state = document.get("state") if isinstance(document, dict) else None
    desired = state.get("desired") if isinstance(state, dict) else None
    if not isinstance(desired, dict):
        raise IdentityError(f"{where}: no state.desired object")
    if desired.get("v") != IDENTITY_FORMAT:
        raise IdentityError(f"{where}: format {desired.get('v')!r}, expected {IDENTITY_FORMAT}")
    if desired.get("thing") != thing:
        raise IdentityError(f"{where}: names thing {desired.get('thing')!r}")
    fields: dict[str, str] = {}
    for name in ("plant", "line", "station"):
        value = desired.get(name)
        if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
            raise IdentityError(f"{where}: {name} {value!r} is not 1..{MAX_ID_CHARS} characters")
        if any(c in value for c in "/+#*") or not value.isprintable():
            raise IdentityError(f"{where}: {name} {value!r} cannot be a topic level")
        fields[name] = value
    cameras = desired.get("cameras")
    if isinstance(cameras, float) and cameras.is_integer():
        cameras = int(cameras)
    if isinstance(cameras, bool) or not isinstance(cameras, int) or not 1 <= cameras <= MAX_CAMERAS:
        raise IdentityError(f"{where}: cameras {cameras!r} is not an integer in 1..{MAX_CAMERAS}")
    return DeviceIdentity(fields["plant"], fields["line"], fields["station"], cameras)


ShadowReader = Callable[[], bytes | None]
"""Returns the shadow document's bytes, None when the shadow does not exist; may raise."""


def read_identity(read: ShadowReader, thing: str) -> DeviceIdentity:
    """Read and parse the identity once; IdentityError when absent, unreadable or malformed."""
    try:
        payload = read()
    except Exception as exc:
        raise IdentityError(f"cannot read shadow {IDENTITY_SHADOW} of {thing}: {exc}") from None
    if payload is None:
        raise IdentityError(
            f"shadow {IDENTITY_SHADOW} of {thing} does not exist yet (it is written when the "
            "device first connects to the cloud; docs/identity.md)"
        )
    return parse_identity(payload, thing)


def wait_for_identity(
    read: ShadowReader, thing: str, stop: threading.Event, *, poll_s: float = 5.0
) -> DeviceIdentity | None:
    """Poll until the identity is readable (None if ``stop`` is set first); log why, once."""
    last_reason: str | None = None
    while not stop.is_set():
        try:
            return read_identity(read, thing)
        except IdentityError as exc:
            if str(exc) != last_reason:
                LOG.error(
                    "no identity: judging nothing, no heartbeat (parts are diverted): %s", exc
                )
                last_reason = str(exc)
        stop.wait(poll_s)
    return None


class IdentityWatch:
    """Re-reads the identity shadow every ``poll_s`` and reports when the identity changed.

    A failed read keeps the current identity (ShadowManager keeps its last synced copy locally,
    so a device offline still knows where it stands); a changed one sets ``changed`` and
    ``stop``, so the entry point restarts the inspector's stages under the new identity.
    """

    def __init__(
        self,
        read: ShadowReader,
        thing: str,
        current: DeviceIdentity,
        stop: threading.Event,
        *,
        poll_s: float = 30.0,
    ) -> None:
        self._read, self._thing, self.current = read, thing, current
        self._stop, self._poll = stop, poll_s
        self.changed: DeviceIdentity | None = None
        self._thread = threading.Thread(target=self._run, name="identity", daemon=True)

    def start(self) -> None:
        """Start watching in a daemon thread."""
        self._thread.start()

    def check(self) -> DeviceIdentity | None:
        """Read once; the new identity if it differs from the current one, else None."""
        try:
            seen = read_identity(self._read, self._thing)
        except IdentityError as exc:
            LOG.warning("identity: keeping %s: %s", self.current, exc)
            return None
        return None if seen == self.current else seen

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            new = self.check()
            if new is not None:
                LOG.warning("identity changed: %s -> %s; restarting the stages", self.current, new)
                self.changed = new
                self._stop.set()
                return

"""The transport interface every stage publishes through."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

ConfigCallback = Callable[[dict[str, Any]], None]
MessageCallback = Callable[[bytes], None]
UpdateGate = Callable[[], bool]
# returns None to accept a proposed configuration, or the reason to refuse it
ConfigValidator = Callable[[dict[str, Any]], str | None]


class TransportError(Exception):
    """A publish was not delivered/acknowledged (names the topic and the reason)."""


class Transport(abc.ABC):
    """Upstream (QoS 1, acknowledged) and local publishing plus configuration updates."""

    name = "transport"
    #: whether :meth:`publish_upstream` returning means the cloud has the message. False for
    #: Greengrass, whose acknowledgement only means "spooled" (then the uplink waits for the
    #: cloud's own acknowledgement on a topic it subscribes to).
    publish_is_delivery = True

    @abc.abstractmethod
    def publish_upstream(self, topic: str, payload: bytes) -> None:
        """Publish to the cloud; return only once acknowledged, else raise TransportError."""

    @abc.abstractmethod
    def publish_local(self, topic: str, payload: bytes) -> None:
        """Publish on the device's local bus (line bridge); raise TransportError on failure."""

    def subscribe_upstream(self, topic: str, callback: MessageCallback) -> None:
        """Deliver each cloud message on ``topic`` to ``callback(payload)`` (never raises)."""
        raise TransportError(f"{self.name} transport: cannot subscribe to {topic} upstream")

    @abc.abstractmethod
    def on_config(self, callback: ConfigCallback) -> None:
        """Call ``callback(config)`` with each runtime configuration update."""

    def on_validate(self, validator: ConfigValidator) -> None:  # noqa: B027 - optional hook
        """Ask ``validator`` about a proposed configuration before it is stored (Greengrass)."""

    def on_component_update(self, ready: UpdateGate) -> None:  # noqa: B027 - optional hook
        """Ask before a component update; ``ready()`` False defers it (only Greengrass can)."""

    def report_running(self) -> None:  # noqa: B027 - optional hook
        """Tell the host the component is ready (Greengrass: UpdateState RUNNING)."""

    def lost(self) -> str | None:
        """Why the transport can never deliver again (None while it can or may recover).

        The service exits non-zero on it, so a supervisor (the nucleus) restarts the process.
        """
        return None

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the transport can publish (or the timeout); True if it can."""
        return True

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and files."""


def call_safely(callback: Callable[..., Any], *args: Any, what: str) -> None:
    """Run a user callback from a transport thread; log, never raise."""
    try:
        callback(*args)
    except Exception:
        LOG.exception("%s: callback raised; ignored", what)

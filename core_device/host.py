"""What the IPC server needs from the kernel, and a small in-memory host for tests."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from core_device.config_store import ConfigStore
from core_device.shadows import ShadowStore

MessageCallback = Callable[[str, bytes], None]
"""Called with (topic, payload) for a message from IoT Core."""


class IotPublishError(Exception):
    """A PublishToIoTCore the nucleus' MQTT client refuses (offline QoS 0, spool full, too large)."""


class IotSubscribeError(Exception):
    """A SubscribeToIoTCore the MQTT client or broker refuses."""


class IotLink(Protocol):
    """The nucleus' MQTT client as PublishToIoTCore/SubscribeToIoTCore use it."""

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Spool a message for IoT Core; raise IotPublishError when it is not accepted."""
        ...

    def subscribe(self, topic: str, qos: int, callback: MessageCallback) -> int:
        """Subscribe a callback to an MQTT topic filter; returns a handle."""
        ...

    def unsubscribe(self, handle: int) -> None:
        """Drop a subscription made with subscribe."""
        ...


class Host(Protocol):
    """The kernel as the IPC server sees it."""

    thing_name: str
    config: ConfigStore
    iot: IotLink | None
    shadows: ShadowStore

    def component_for_token(self, token: str) -> str | None:
        """The component an SVCUID belongs to, or None."""
        ...

    def access_control(self, component: str) -> Mapping[str, Any]:
        """The component's accessControl as the nucleus sees it."""
        ...

    def report_state(self, component: str, state: str) -> None:
        """UpdateState: the component reports RUNNING or ERRORED."""
        ...

    def defer_update(
        self, component: str, deployment_id: str, recheck_after_ms: int, message: str | None
    ) -> None:
        """DeferComponentUpdate answered a PreComponentUpdateEvent."""
        ...


@dataclass
class InMemoryHost:
    """A Host for tests: components registered with a token and their accessControl."""

    thing_name: str = "lineguard-test-core"
    config: ConfigStore = field(default_factory=ConfigStore)
    iot: IotLink | None = None
    shadows: ShadowStore = field(default_factory=ShadowStore)
    tokens: dict[str, str] = field(default_factory=dict)
    states: list[tuple[str, str]] = field(default_factory=list)
    deferrals: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    def add_component(self, component: str, configuration: Mapping[str, Any] | None = None) -> str:
        """Register a component (its configuration may hold accessControl); returns its SVCUID."""
        token = secrets.token_hex(8).upper()
        self.tokens[token] = component
        self.config.replace(component, dict(configuration or {}))
        return token

    def component_for_token(self, token: str) -> str | None:
        """The component an SVCUID belongs to, or None."""
        return self.tokens.get(token)

    def access_control(self, component: str) -> Mapping[str, Any]:
        """accessControl from the component's configuration, as the nucleus reads it."""
        try:
            value = self.config.get(component, ["accessControl"])
        except KeyError:
            return {}
        return value if isinstance(value, Mapping) else {}

    def report_state(self, component: str, state: str) -> None:
        """Record an UpdateState."""
        self.states.append((component, state))

    def defer_update(
        self, component: str, deployment_id: str, recheck_after_ms: int, message: str | None
    ) -> None:
        """Record a DeferComponentUpdate."""
        self.deferrals.append((component, deployment_id, recheck_after_ms, message))

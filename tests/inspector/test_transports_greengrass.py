"""The Greengrass IPC adapter against a fake client at its boundary (callbacks that raise too)."""

from __future__ import annotations

from typing import Any

import pytest
from awsiot.greengrasscoreipc.model import (
    QOS,
    ComponentUpdatePolicyEvents,
    ConfigurationUpdateEvent,
    ConfigurationUpdateEvents,
    GetConfigurationResponse,
    PostComponentUpdateEvent,
    PreComponentUpdateEvent,
    UnauthorizedError,
)

from inspector.transports.base import TransportError
from inspector.transports.greengrass import GreengrassTransport


class FakeOperation:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeIpcClient:
    """Stands in for GreengrassCoreIPCClientV2: same method names and keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, dict[str, Any]] = {}
        self.config: dict[str, Any] = {"reject": 0.4}
        self.fail_publish: Exception | None = None
        self.fail_get_config = False
        self.operations: list[FakeOperation] = []
        self.closed = False

    def publish_to_iot_core(self, **kw: Any) -> None:
        self.calls.append(("publish_to_iot_core", kw))
        if self.fail_publish:
            raise self.fail_publish

    def publish_to_topic(self, **kw: Any) -> None:
        self.calls.append(("publish_to_topic", kw))
        if self.fail_publish:
            raise self.fail_publish

    def _subscribe(self, name: str, kw: dict[str, Any]) -> tuple[None, FakeOperation]:
        self.calls.append((name, kw))
        self.handlers[name] = kw
        op = FakeOperation()
        self.operations.append(op)
        return None, op

    def subscribe_to_configuration_update(self, **kw: Any) -> tuple[None, FakeOperation]:
        return self._subscribe("config", kw)

    def subscribe_to_component_updates(self, **kw: Any) -> tuple[None, FakeOperation]:
        return self._subscribe("updates", kw)

    def subscribe_to_iot_core(self, **kw: Any) -> tuple[None, FakeOperation]:
        return self._subscribe("iot_core", kw)

    def get_configuration(self, **kw: Any) -> GetConfigurationResponse:
        self.calls.append(("get_configuration", kw))
        if self.fail_get_config:
            raise RuntimeError("nucleus busy")
        return GetConfigurationResponse(component_name="com.lineguard.Inspector", value=self.config)

    def defer_component_update(self, **kw: Any) -> None:
        self.calls.append(("defer_component_update", kw))

    def close(self) -> None:
        self.closed = True


def config_event() -> ConfigurationUpdateEvents:
    return ConfigurationUpdateEvents(
        configuration_update_event=ConfigurationUpdateEvent(
            component_name="com.lineguard.Inspector", key_path=["reject"]
        )
    )


def pre_update(deployment: str) -> ComponentUpdatePolicyEvents:
    return ComponentUpdatePolicyEvents(
        pre_update_event=PreComponentUpdateEvent(deployment_id=deployment, is_ggc_restarting=False)
    )


def test_publish_upstream_is_qos1_to_iot_core() -> None:
    client = FakeIpcClient()
    GreengrassTransport(client).publish_upstream("lineguard/p/l/s/d/results", b'{"a":1}')
    name, kw = client.calls[0]
    assert name == "publish_to_iot_core"
    assert kw == {
        "topic_name": "lineguard/p/l/s/d/results",
        "qos": QOS.AT_LEAST_ONCE,
        "payload": b'{"a":1}',
    }


def test_publish_local_sends_a_binary_message() -> None:
    client = FakeIpcClient()
    GreengrassTransport(client).publish_local("lineguard/local/s1/reject", b'{"v":1}')
    name, kw = client.calls[0]
    assert name == "publish_to_topic" and kw["topic"] == "lineguard/local/s1/reject"
    assert kw["publish_message"].binary_message.message == b'{"v":1}'


def test_refused_publish_raises_transport_error() -> None:
    client = FakeIpcClient()
    client.fail_publish = UnauthorizedError(message="not authorized for topic")
    transport = GreengrassTransport(client)
    with pytest.raises(TransportError, match="UnauthorizedError"):
        transport.publish_upstream("lineguard/other/results", b"{}")
    with pytest.raises(TransportError, match="local publish"):
        transport.publish_local("lineguard/local/s1/reject", b"{}")
    assert "UnauthorizedError" in (transport.last_error or "")


def test_configuration_updates_deliver_the_full_configuration() -> None:
    client = FakeIpcClient()
    got: list[dict[str, Any]] = []
    GreengrassTransport(client).on_config(got.append)
    handler = client.handlers["config"]["on_stream_event"]
    handler(config_event())
    client.config = {"reject": 0.5}
    handler(config_event())
    assert got == [{"reject": 0.4}, {"reject": 0.5}]
    assert client.handlers["config"]["key_path"] == []


def test_stream_callbacks_never_raise() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client)

    def explode(doc: dict[str, Any]) -> None:
        raise ValueError("bad callback")

    transport.on_config(explode)
    transport.on_component_update(lambda: 1 / 0 == 0)  # the gate itself raises
    config = client.handlers["config"]
    updates = client.handlers["updates"]
    config["on_stream_event"](config_event())  # user callback raises: swallowed and logged
    client.fail_get_config = True
    config["on_stream_event"](config_event())  # the IPC call inside raises
    config["on_stream_event"](None)  # a malformed event
    updates["on_stream_event"](object())  # an event of an unexpected shape
    updates["on_stream_event"](pre_update("d-9"))  # gate raised → defer, not crash
    assert config["on_stream_error"](RuntimeError("stream broke")) is False  # keep the stream
    config["on_stream_closed"]()
    assert "stream broke" in (transport.last_error or "")
    defers = [kw for name, kw in client.calls if name == "defer_component_update"]
    assert defers[-1]["deployment_id"] == "d-9" and defers[-1]["recheck_after_ms"] > 0


def test_component_updates_wait_for_in_flight_frames() -> None:
    client = FakeIpcClient()
    in_flight = [3]
    transport = GreengrassTransport(client, defer_recheck_ms=2000)
    transport.on_component_update(lambda: in_flight[0] == 0)
    handler = client.handlers["updates"]["on_stream_event"]
    handler(pre_update("dep-1"))
    in_flight[0] = 0
    handler(pre_update("dep-1"))
    handler(ComponentUpdatePolicyEvents(post_update_event=PostComponentUpdateEvent()))
    defers = [kw for name, kw in client.calls if name == "defer_component_update"]
    assert defers == [
        {"deployment_id": "dep-1", "message": "frames in flight", "recheck_after_ms": 2000},
        {"deployment_id": "dep-1", "message": "ready", "recheck_after_ms": 0},
    ]
    assert transport.deferrals == 1


def test_close_closes_streams_and_client() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client)
    transport.on_config(lambda doc: None)
    transport.on_component_update(lambda: True)
    transport.close()
    assert client.closed and all(op.closed for op in client.operations)

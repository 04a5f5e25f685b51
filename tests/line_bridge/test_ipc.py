"""The Greengrass IPC adapter against a fake client at its boundary (no nucleus here)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from line_bridge.errors import BridgeError
from line_bridge.subscribers import IpcSubscriber, read_ipc_configuration


class FakeOperation:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeIpcClient:
    """Records subscriptions and publishes like ``GreengrassCoreIPCClientV2`` does."""

    def __init__(self, config: Any = None, fail_subscribe: bool = False) -> None:
        self.streams: dict[str, dict[str, Any]] = {}
        self.operations: list[FakeOperation] = []
        self.published: list[tuple[str, Any]] = []
        self.config = config
        self.fail_subscribe = fail_subscribe

    def subscribe_to_topic(
        self, *, topic: str, on_stream_event: Any, on_stream_error: Any, on_stream_closed: Any
    ) -> Any:
        if self.fail_subscribe:
            raise RuntimeError("UnauthorizedError: not allowed to subscribe")
        self.streams[topic] = {
            "event": on_stream_event,
            "error": on_stream_error,
            "closed": on_stream_closed,
        }
        op = FakeOperation()
        self.operations.append(op)
        return SimpleNamespace(), op

    def publish_to_topic_async(self, *, topic: str, publish_message: Any) -> None:
        self.published.append((topic, publish_message))

    def subscribe_to_configuration_update(
        self,
        *,
        key_path: list[str],
        on_stream_event: Any,
        on_stream_error: Any,
        on_stream_closed: Any,
    ) -> Any:
        self.config_stream = on_stream_event
        op = FakeOperation()
        self.operations.append(op)
        return SimpleNamespace(), op

    def get_configuration(self, *, key_path: list[str]) -> Any:
        if self.config is None:
            raise RuntimeError("ResourceNotFoundError")
        return SimpleNamespace(value=self.config)

    # -- ShadowManager's local shadows, as its IPC handlers behave --------------------------

    shadows: dict[tuple[str, str], bytes]

    def get_thing_shadow(self, *, thing_name: str, shadow_name: str) -> Any:
        from awsiot.greengrasscoreipc.model import GetThingShadowResponse, ResourceNotFoundError

        document = getattr(self, "shadows", {}).get((thing_name, shadow_name))
        if document is None:
            # ShadowManager ipc/GetThingShadowRequestHandler.java: ResourceNotFoundError("No shadow found")
            raise ResourceNotFoundError(message="No shadow found")
        return GetThingShadowResponse(payload=document)

    def update_shadow(self, thing: str, name: str, desired: dict[str, Any]) -> None:
        """A cloud-to-device sync: ShadowManager stores the document, then publishes the update
        on local pub/sub ``<prefix>/update/accepted`` (ipc/UpdateThingShadowRequestHandler.java,
        ipc/PubSubClientWrapper.java#accept; sync/model/BaseSyncRequest.java uses that handler)."""
        if not hasattr(self, "shadows"):
            self.shadows = {}
        version = getattr(self, "shadow_version", 0) + 1
        self.shadow_version = version
        state = {"desired": desired}
        self.shadows[(thing, name)] = json.dumps(
            {"state": state, "metadata": {}, "version": version, "timestamp": 1}
        ).encode()
        self._publish_local(
            f"$aws/things/{thing}/shadow/name/{name}/update/accepted",
            json.dumps({"state": state, "version": version, "timestamp": 1}).encode(),
        )

    def delete_shadow(self, thing: str, name: str) -> None:
        """ShadowManager deletes the local copy and publishes on ``<prefix>/delete/accepted``."""
        getattr(self, "shadows", {}).pop((thing, name), None)
        self._publish_local(
            f"$aws/things/{thing}/shadow/name/{name}/delete/accepted", b'{"version":1}'
        )

    def _publish_local(self, topic: str, payload: bytes) -> None:
        stream = self.streams.get(topic)
        if stream is not None:
            stream["event"](_binary(payload))

    # -- configuration validation, as the nucleus' ConfigStoreIPCEventStreamAgent does -------

    def subscribe_to_validate_configuration_updates(
        self, *, on_stream_event: Any, on_stream_error: Any, on_stream_closed: Any
    ) -> Any:
        self.validate_stream = on_stream_event
        self.reports: list[Any] = []
        op = FakeOperation()
        self.operations.append(op)
        return SimpleNamespace(), op

    def propose(self, configuration: dict[str, Any], deployment_id: str) -> None:
        """A deployment asks for validation of the component's whole proposed configuration."""
        from awsiot.greengrasscoreipc.model import (
            ValidateConfigurationUpdateEvent,
            ValidateConfigurationUpdateEvents,
        )

        self.validate_stream(
            ValidateConfigurationUpdateEvents(
                validate_configuration_update_event=ValidateConfigurationUpdateEvent(
                    configuration=configuration, deployment_id=deployment_id
                )
            )
        )

    def send_configuration_validity_report_async(
        self, *, configuration_validity_report: Any
    ) -> None:
        self.reports.append(configuration_validity_report)


def _binary(payload: bytes) -> Any:
    return SimpleNamespace(binary_message=SimpleNamespace(message=payload), json_message=None)


def _json(doc: dict[str, Any]) -> Any:
    return SimpleNamespace(binary_message=None, json_message=SimpleNamespace(message=doc))


def test_subscribes_to_each_station_and_hands_over_binary_and_json_messages() -> None:
    client = FakeIpcClient()
    got: list[tuple[str, Any]] = []
    sub = IpcSubscriber(client, ["s1", "s2"], lambda topic, payload: got.append((topic, payload)))
    sub.start()
    assert sorted(client.streams) == [
        "lineguard/local/s1/heartbeat",
        "lineguard/local/s1/reject",
        "lineguard/local/s2/heartbeat",
        "lineguard/local/s2/reject",
    ]
    client.streams["lineguard/local/s1/reject"]["event"](_binary(b'{"v":1}'))
    client.streams["lineguard/local/s2/heartbeat"]["event"](_json({"v": 1}))
    assert got == [
        ("lineguard/local/s1/reject", b'{"v":1}'),
        ("lineguard/local/s2/heartbeat", {"v": 1}),
    ]
    sub.stop()
    assert all(op.closed for op in client.operations)


def test_callbacks_never_raise_into_the_ipc_stream(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeIpcClient()
    calls = []

    def handler(topic: str, payload: Any) -> None:
        calls.append(topic)
        raise ValueError("handler bug")

    sub = IpcSubscriber(client, ["s1"], handler)
    sub.start()
    stream = client.streams["lineguard/local/s1/reject"]
    stream["event"](_binary(b"x"))  # the handler raises: logged, not propagated
    stream["event"](SimpleNamespace())  # an event with no message at all
    stream["event"](None)
    assert stream["error"](RuntimeError("stream broke")) is False  # keep the stream open
    stream["closed"]()
    assert calls == ["lineguard/local/s1/reject"]
    assert "handler bug" in caplog.text and "stream broke" in caplog.text


def test_publish_sends_a_binary_local_message() -> None:
    client = FakeIpcClient()
    sub = IpcSubscriber(client, ["s1"], lambda *a: None)
    sub.publish("lineguard/local/line-bridge/health", b'{"v":1}')
    topic, message = client.published[0]
    assert topic == "lineguard/local/line-bridge/health"
    assert message.binary_message.message == b'{"v":1}'


def test_subscribe_refused_is_a_clear_error() -> None:
    sub = IpcSubscriber(FakeIpcClient(fail_subscribe=True), ["s1"], lambda *a: None)
    with pytest.raises(BridgeError, match="IPC subscribe to lineguard/local/s1/reject failed"):
        sub.start()


def test_configuration_is_read_through_ipc() -> None:
    doc = {"controller": {"protocol": "opcua"}}
    assert read_ipc_configuration(FakeIpcClient(config=doc)) == doc
    with pytest.raises(BridgeError, match="GetConfiguration failed"):
        read_ipc_configuration(FakeIpcClient())


def test_ipc_messages_drive_the_bridge_end_to_end() -> None:
    """IPC adapter → bridge → a real OPC UA PLC, including a json_message heartbeat."""
    import asyncio

    from line_bridge.plc_sim import OpcUaPlc
    from line_bridge.service import serve

    from .conftest import heartbeat, result, wait_for

    async def scenario() -> None:
        from line_bridge.config import parse_config

        async with OpcUaPlc(["s1"]) as plc:
            config = parse_config(
                {"controller": plc.controller_config(), "transport": {"kind": "greengrass"}}
            )
            client = FakeIpcClient()
            stop = asyncio.Event()
            task = asyncio.create_task(serve(config, ipc_client=client, stop=stop))
            await wait_for(lambda: len(client.streams) == 2, 10, "IPC subscriptions")
            for _ in range(3):
                client.streams["lineguard/local/s1/heartbeat"]["event"](
                    _json(json.loads(heartbeat("s1")))
                )
                await asyncio.sleep(0.05)
            await wait_for(lambda: plc.record.healthy.get("s1") is True, 10, "healthy")
            client.streams["lineguard/local/s1/reject"]["event"](_binary(result("s1", "ipc-1")))
            await wait_for(lambda: plc.record.part_ids() == ["ipc-1"], 10, "reject")
            stop.set()
            await asyncio.wait_for(task, 10)
            assert any(t == "lineguard/local/line-bridge/health" for t, _ in client.published)
            assert all(op.closed for op in client.operations)

    asyncio.run(scenario())


def test_greengrass_entry_applies_valid_configuration_updates_and_refuses_bad_ones() -> None:
    """serve_greengrass: config from IPC; a bad update is refused, a good one re-maps the PLC."""
    import asyncio

    from line_bridge.plc_sim import OpcUaPlc
    from line_bridge.service import serve_greengrass

    from .conftest import wait_for

    async def scenario() -> None:
        async with OpcUaPlc(["s1", "s2"]) as plc:
            full = plc.controller_config()
            one = dict(full, stations={"s1": full["stations"]["s1"]})
            client = FakeIpcClient(config={"controller": one, "transport": {"kind": "greengrass"}})
            stop = asyncio.Event()
            task = asyncio.create_task(serve_greengrass(client, stop=stop))
            await wait_for(lambda: "s1" in plc.record.healthy, 10, "first write for s1")
            assert "lineguard/local/s2/reject" not in client.streams
            client.config = {"controller": one, "heartbeat_window_s": -1}  # invalid
            client.config_stream(SimpleNamespace())
            await asyncio.sleep(0.3)
            assert not task.done() and "s2" not in plc.record.healthy  # refused, still running
            client.config = {"controller": full, "transport": {"kind": "greengrass"}}
            client.config_stream(SimpleNamespace())
            await wait_for(lambda: "s2" in plc.record.healthy, 10, "new station written")
            assert "lineguard/local/s2/heartbeat" in client.streams
            stop.set()
            final = await asyncio.wait_for(task, 10)
            assert final.stations == ("s1", "s2")
            assert all(op.closed for op in client.operations)

    asyncio.run(scenario())

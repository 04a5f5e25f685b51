"""The IPC server driven by the real GreengrassCoreIPCClientV2."""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from awsiot.eventstreamrpc import AccessDeniedError, StreamClosedError
from awsiot.greengrasscoreipc import model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from core_device.host import InMemoryHost
from core_device.ipc_server import IpcServer
from tests.core_device.conftest import ClientFactory

INSPECTOR = "com.lineguard.Inspector"
BRIDGE = "com.lineguard.LineBridge"


def _pubsub_acl(
    *resources: str,
    ops: tuple[str, ...] = ("aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"),
) -> dict:
    return {
        "aws.greengrass.ipc.pubsub": {
            "lineguard:pubsub:1": {"operations": list(ops), "resources": list(resources)}
        }
    }


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_bad_token_is_refused_like_the_nucleus(
    ipc_server: IpcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", ipc_server.socket_path
    )
    monkeypatch.setenv("SVCUID", "NOT-A-TOKEN")
    with pytest.raises(AccessDeniedError):
        GreengrassCoreIPCClientV2()
    assert ipc_server.connected_components() == []


def test_publish_reaches_subscribers_json_and_binary(
    host: InMemoryHost, ipc_client: ClientFactory
) -> None:
    host.add_component(INSPECTOR, {"accessControl": _pubsub_acl("lineguard/local/*/reject")})
    host.add_component(BRIDGE, {"accessControl": _pubsub_acl("lineguard/local/*/reject")})
    bridge, inspector = ipc_client(BRIDGE), ipc_client(INSPECTOR)
    got: queue.Queue[model.SubscriptionResponseMessage] = queue.Queue()
    bridge.subscribe_to_topic(topic="lineguard/local/station-1/reject", on_stream_event=got.put)
    inspector.publish_to_topic(
        topic="lineguard/local/station-1/reject",
        publish_message=model.PublishMessage(
            json_message=model.JsonMessage(message={"part_id": "p1", "n": 3})
        ),
    )
    inspector.publish_to_topic(
        topic="lineguard/local/station-1/reject",
        publish_message=model.PublishMessage(
            binary_message=model.BinaryMessage(message=b"\x00\xffraw")
        ),
    )
    first, second = got.get(timeout=5), got.get(timeout=5)
    assert first.json_message.message == {"part_id": "p1", "n": 3}
    assert first.json_message.context.topic == "lineguard/local/station-1/reject"
    assert second.binary_message.message == b"\x00\xffraw"


def test_plus_in_pubsub_acl_is_literal(host: InMemoryHost, ipc_client: ClientFactory) -> None:
    host.add_component(INSPECTOR, {"accessControl": _pubsub_acl("lineguard/local/+/reject")})
    client = ipc_client(INSPECTOR)
    with pytest.raises(model.UnauthorizedError) as err:
        client.publish_to_topic(
            topic="lineguard/local/station-1/reject",
            publish_message=model.PublishMessage(json_message=model.JsonMessage(message={})),
        )
    assert "not authorized" in err.value.message


def test_receive_mode_defaults_by_wildcard(host: InMemoryHost, ipc_client: ClientFactory) -> None:
    """validateReceiveMode: exact topic -> RECEIVE_ALL_MESSAGES, wildcard -> RECEIVE_MESSAGES_FROM_OTHERS."""
    host.add_component(INSPECTOR, {"accessControl": _pubsub_acl("*")})
    host.add_component(BRIDGE, {"accessControl": _pubsub_acl("*")})
    inspector, bridge = ipc_client(INSPECTOR), ipc_client(BRIDGE)
    exact: queue.Queue = queue.Queue()
    wild: queue.Queue = queue.Queue()
    inspector.subscribe_to_topic(topic="a/b", on_stream_event=exact.put)
    inspector.subscribe_to_topic(topic="a/+", on_stream_event=wild.put)
    msg = model.PublishMessage(json_message=model.JsonMessage(message={"from": "self"}))
    inspector.publish_to_topic(topic="a/b", publish_message=msg)
    assert exact.get(timeout=5).json_message.message == {"from": "self"}
    bridge.publish_to_topic(
        topic="a/b",
        publish_message=model.PublishMessage(
            json_message=model.JsonMessage(message={"from": "bridge"})
        ),
    )
    assert wild.get(timeout=5).json_message.message == {"from": "bridge"}
    assert wild.empty()


def test_closing_a_stream_and_vanishing_client_unsubscribe(
    host: InMemoryHost, ipc_server: IpcServer, ipc_client: ClientFactory
) -> None:
    host.add_component(INSPECTOR, {"accessControl": _pubsub_acl("*")})
    host.add_component(BRIDGE, {"accessControl": _pubsub_acl("*")})
    publisher, subscriber = ipc_client(INSPECTOR), ipc_client(BRIDGE)
    got: queue.Queue = queue.Queue()
    closed = threading.Event()
    _, operation = subscriber.subscribe_to_topic(
        topic="t", on_stream_event=got.put, on_stream_closed=closed.set
    )
    assert len(ipc_server._topic_subscriptions) == 1
    operation.close().result(5)
    _wait(lambda: not ipc_server._topic_subscriptions)
    publisher.publish_to_topic(
        topic="t", publish_message=model.PublishMessage(json_message=model.JsonMessage(message={}))
    )
    assert got.empty()
    subscriber.subscribe_to_topic(topic="t", on_stream_event=got.put)
    assert len(ipc_server._topic_subscriptions) == 1
    subscriber.close()
    _wait(lambda: not ipc_server._topic_subscriptions)
    # the publisher is unaffected by the other client going away
    publisher.publish_to_topic(
        topic="t", publish_message=model.PublishMessage(json_message=model.JsonMessage(message={}))
    )


def test_get_configuration_leaf_container_and_other_component(
    host: InMemoryHost, ipc_client: ClientFactory
) -> None:
    host.add_component(INSPECTOR, {"camera": {"fps": 2, "name": "cam-1"}, "threshold": 0.5})
    host.add_component(BRIDGE, {"plc": {"endpoint": "opc.tcp://plc:4840"}})
    client = ipc_client(INSPECTOR)
    leaf = client.get_configuration(key_path=["camera", "fps"])
    assert (leaf.component_name, leaf.value) == (INSPECTOR, {"fps": 2})
    assert client.get_configuration(key_path=["camera"]).value == {"fps": 2, "name": "cam-1"}
    assert client.get_configuration().value["threshold"] == 0.5
    other = client.get_configuration(component_name=BRIDGE, key_path=["plc", "endpoint"])
    assert other.value == {"endpoint": "opc.tcp://plc:4840"}
    with pytest.raises(model.ResourceNotFoundError) as err:
        client.get_configuration(key_path=["nope"])
    assert "Key not found" in err.value.message
    with pytest.raises(model.ResourceNotFoundError):
        client.get_configuration(component_name="no.such.Component")


def test_update_configuration_notifies_and_checks_timestamps(
    host: InMemoryHost, ipc_client: ClientFactory
) -> None:
    host.add_component(INSPECTOR, {"camera": {"fps": 2}, "accessControl": {}})
    client = ipc_client(INSPECTOR)
    events: queue.Queue[model.ConfigurationUpdateEvents] = queue.Queue()
    client.subscribe_to_configuration_update(key_path=["camera"], on_stream_event=events.put)
    client.update_configuration(
        key_path=["camera"], value_to_merge={"fps": 5}, timestamp=datetime.now(UTC)
    )
    event = events.get(timeout=5).configuration_update_event
    assert (event.component_name, event.key_path) == (INSPECTOR, ["camera", "fps"])
    assert host.config.get(INSPECTOR, ["camera", "fps"]) == 5
    with pytest.raises(model.FailedUpdateConditionCheckError):
        client.update_configuration(
            key_path=["camera"],
            value_to_merge={"fps": 9},
            timestamp=datetime.now(UTC) - timedelta(hours=1),
        )
    assert host.config.get(INSPECTOR, ["camera", "fps"]) == 5
    with pytest.raises(model.InvalidArgumentsError) as err:
        client.update_configuration(
            key_path=[], value_to_merge={"accessControl": {}}, timestamp=datetime.now(UTC)
        )
    assert "accessControl" in err.value.message


def test_update_state_needs_no_authorization(host: InMemoryHost, ipc_client: ClientFactory) -> None:
    host.add_component(INSPECTOR)
    ipc_client(INSPECTOR).update_state(state=model.ReportedLifecycleState.RUNNING)
    assert host.states == [(INSPECTOR, "RUNNING")]


def test_unsupported_and_unknown_operations(host: InMemoryHost, ipc_client: ClientFactory) -> None:
    host.add_component(INSPECTOR)
    client = ipc_client(INSPECTOR)
    with pytest.raises(model.ServiceError) as err:
        client.list_components()
    assert "is not supported by Greengrass" in err.value.message
    operation = client.client.new_restart_component()  # a model operation renamed on the wire below
    operation._model_name = lambda: "aws.greengrass#NoSuchOperation"  # type: ignore[method-assign]
    future = operation.activate(model.RestartComponentRequest(component_name="x"))
    future.result(5)
    # "Unsupported Operation" comes without service-model-type on a terminating message:
    # the client drops it and reports the closed stream
    with pytest.raises(StreamClosedError):
        operation.get_response().result(5)


def test_component_updates_defer_and_validate(
    host: InMemoryHost, ipc_server: IpcServer, ipc_client: ClientFactory
) -> None:
    host.add_component(INSPECTOR)
    client = ipc_client(INSPECTOR)
    with pytest.raises(model.InvalidArgumentsError) as err:
        client.defer_component_update(deployment_id="d0", recheck_after_ms=1000)
    assert "not subscribed" in err.value.message
    updates: queue.Queue[model.ComponentUpdatePolicyEvents] = queue.Queue()
    client.subscribe_to_component_updates(on_stream_event=updates.put)
    ipc_server.notify_pre_component_update("d1")
    assert updates.get(timeout=5).pre_update_event.deployment_id == "d1"
    client.defer_component_update(deployment_id="d1", recheck_after_ms=30000, message="inspecting")
    assert host.deferrals == [(INSPECTOR, "d1", 30000, "inspecting")]
    with pytest.raises(model.ServiceError) as err:
        client.defer_component_update(deployment_id="d1", recheck_after_ms=1)
    assert "Time limit" in err.value.message
    ipc_server.notify_post_component_update("d1")
    assert updates.get(timeout=5).post_update_event.deployment_id == "d1"

    assert ipc_server.validate_configuration(INSPECTOR, {"fps": 1}, "d2", 1.0) is None

    def answer(event: model.ValidateConfigurationUpdateEvents) -> None:
        proposed = event.validate_configuration_update_event
        threading.Thread(
            target=client.send_configuration_validity_report,
            kwargs={
                "configuration_validity_report": model.ConfigurationValidityReport(
                    status=model.ConfigurationValidityStatus.REJECTED
                    if proposed.configuration["fps"] > 10
                    else model.ConfigurationValidityStatus.ACCEPTED,
                    deployment_id=proposed.deployment_id,
                    message="fps too high",
                )
            },
        ).start()

    client.subscribe_to_validate_configuration_updates(on_stream_event=answer)
    assert ipc_server.validate_configuration(INSPECTOR, {"fps": 50}, "d3", 5.0) == (
        "REJECTED",
        "fps too high",
    )
    assert ipc_server.validate_configuration(INSPECTOR, {"fps": 5}, "d4", 5.0)[0] == "ACCEPTED"
    with pytest.raises(model.InvalidArgumentsError) as err:
        client.send_configuration_validity_report(
            configuration_validity_report=model.ConfigurationValidityReport(
                status=model.ConfigurationValidityStatus.ACCEPTED, deployment_id="d9"
            )
        )
    assert "timed out or was never made" in err.value.message


def test_validation_timeout_raises(
    host: InMemoryHost, ipc_server: IpcServer, ipc_client: ClientFactory
) -> None:
    host.add_component(INSPECTOR)
    ipc_client(INSPECTOR).subscribe_to_validate_configuration_updates(
        on_stream_event=lambda e: None
    )
    with pytest.raises(TimeoutError, match="waiting for validation report"):
        ipc_server.validate_configuration(INSPECTOR, {}, "d5", 0.3)


def test_get_thing_shadow_authorised_by_shadow_resource(
    host: InMemoryHost, ipc_client: ClientFactory
) -> None:
    thing = host.thing_name
    host.add_component(
        INSPECTOR,
        {
            "accessControl": {
                "aws.greengrass.ShadowManager": {
                    "lineguard:shadow:1": {
                        "operations": ["aws.greengrass#GetThingShadow"],
                        "resources": [f"$aws/things/{thing}/shadow/name/lineguard-identity"],
                    }
                }
            }
        },
    )
    client = ipc_client(INSPECTOR)
    with pytest.raises(model.ResourceNotFoundError) as err:
        client.get_thing_shadow(thing_name=thing, shadow_name="lineguard-identity")
    assert "No shadow found" in err.value.message
    host.shadows.update(thing, "lineguard-identity", {"desired": {"station": "station-1"}})
    import json

    doc = json.loads(
        client.get_thing_shadow(thing_name=thing, shadow_name="lineguard-identity").payload
    )
    assert doc["state"]["desired"] == {"station": "station-1"}
    assert doc["version"] == 1
    assert "timestamp" in doc["metadata"]["desired"]["station"]
    with pytest.raises(model.UnauthorizedError):
        client.get_thing_shadow(thing_name=thing, shadow_name="other")
    with pytest.raises(model.UnauthorizedError):
        client.get_thing_shadow(thing_name=thing)

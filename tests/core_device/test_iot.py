"""The nucleus' spooler, and the MQTT link to a real mosquitto with client certificates."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from awsiot.greengrasscoreipc import model
from paho.mqtt.enums import CallbackAPIVersion

from core_device.host import InMemoryHost, IotPublishError
from core_device.iot import MqttLink, Spooler, SpoolerFullError
from demo.broker import MosquittoBroker
from tests.core_device.conftest import ClientFactory

THING = "lineguard-test-core"
INSPECTOR = "com.lineguard.Inspector"
ACL = {THING: [f"readwrite lineguard/{THING}/#"], "observer": [f"readwrite lineguard/{THING}/#"]}


def test_full_spool_drops_qos0_first_then_refuses() -> None:
    spool = Spooler(max_size_bytes=100)
    spool.add("t/q0-a", b"a" * 30, qos=0)
    spool.add("t/q1-a", b"b" * 30, qos=1)
    spool.add("t/q0-b", b"c" * 30, qos=0)
    # 40 more bytes overflow: the oldest QoS 0 message goes, just enough to fit
    spool.add("t/q1-b", b"d" * 40, qos=1)
    assert [m.topic for m in spool.messages()] == ["t/q1-a", "t/q0-b", "t/q1-b"]
    spool.add("t/q1-c", b"e" * 30, qos=1)
    assert [m.topic for m in spool.messages()] == ["t/q1-a", "t/q1-b", "t/q1-c"]
    with pytest.raises(SpoolerFullError, match="Message spool is full"):
        spool.add("t/q1-d", b"f", qos=1)
    with pytest.raises(SpoolerFullError, match="larger than the size"):
        spool.add("t/huge", b"g" * 101, qos=0)
    assert spool.size_bytes == 100


def test_default_spool_is_2_5_mib_in_memory_and_lost_on_restart() -> None:
    spool = Spooler()
    assert spool.max_size_bytes == 2_621_440
    spool.add("t", b"x", qos=1)
    assert len(spool) == 1
    assert len(Spooler()) == 0  # a restarted nucleus starts with an empty in-memory spool


def test_publish_to_iot_core_without_cloud_is_refused(
    host: InMemoryHost, ipc_client: ClientFactory
) -> None:
    host.add_component(INSPECTOR, {"accessControl": _mqtt_acl("#")})
    with pytest.raises(model.ServiceError) as err:
        ipc_client(INSPECTOR).publish_to_iot_core(
            topic_name="a/b", qos=model.QOS.AT_LEAST_ONCE, payload=b"x"
        )
    assert "configured to run offline" in err.value.message


def _mqtt_acl(*resources: str) -> dict:
    return {
        "aws.greengrass.ipc.mqttproxy": {
            "lineguard:mqtt:1": {
                "operations": [
                    "aws.greengrass#PublishToIoTCore",
                    "aws.greengrass#SubscribeToIoTCore",
                ],
                "resources": list(resources),
            }
        }
    }


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker(ACL) as running:
        yield running


def _link(broker: MosquittoBroker, spooler: Spooler | None = None) -> MqttLink:
    creds = broker.credentials(THING)
    return MqttLink(
        host=broker.host,
        port=broker.port,
        client_id=THING,
        ca_file=creds.ca_file,
        cert_file=creds.cert_file,
        key_file=creds.key_file,
        spooler=spooler,
    )


def _observer(broker: MosquittoBroker, topic: str) -> tuple[paho.Client, queue.Queue]:
    creds = broker.credentials("observer")
    got: queue.Queue = queue.Queue()
    ready = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="observer", protocol=paho.MQTTv5)
    client.tls_set(
        ca_certs=str(creds.ca_file), certfile=str(creds.cert_file), keyfile=str(creds.key_file)
    )
    client.on_connect = lambda c, *a: c.subscribe(topic, 1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, m: got.put((m.topic, bytes(m.payload)))
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert ready.wait(10)
    return client, got


def test_publish_and_subscribe_through_mosquitto(
    broker: MosquittoBroker, host: InMemoryHost, ipc_client: ClientFactory
) -> None:
    link = _link(broker)
    link.start()
    try:
        assert link.wait_connected(10), broker.log()
        host.iot = link
        host.add_component(INSPECTOR, {"accessControl": _mqtt_acl(f"lineguard/{THING}/+")})
        client = ipc_client(INSPECTOR)
        observer, seen = _observer(broker, f"lineguard/{THING}/#")
        client.publish_to_iot_core(
            topic_name=f"lineguard/{THING}/results",
            qos=model.QOS.AT_LEAST_ONCE,
            payload=b'{"seq":1}',
        )
        assert seen.get(timeout=10) == (f"lineguard/{THING}/results", b'{"seq":1}')
        inbox: queue.Queue[model.IoTCoreMessage] = queue.Queue()
        client.subscribe_to_iot_core(
            topic_name=f"lineguard/{THING}/commands",
            qos=model.QOS.AT_LEAST_ONCE,
            on_stream_event=inbox.put,
        )
        observer.publish(f"lineguard/{THING}/commands", b"reload", qos=1).wait_for_publish(10)
        message = inbox.get(timeout=10).message
        assert (message.topic_name, message.payload) == (f"lineguard/{THING}/commands", b"reload")
        with pytest.raises(model.UnauthorizedError):
            client.publish_to_iot_core(
                topic_name=f"lineguard/{THING}/a/b", qos=model.QOS.AT_MOST_ONCE, payload=b"x"
            )
        observer.loop_stop()
        observer.disconnect()
    finally:
        link.stop()


def test_broker_down_spools_then_delivers_after_reconnect(broker: MosquittoBroker) -> None:
    link = _link(broker)
    link.start()
    try:
        assert link.wait_connected(10)
        broker.kill()
        deadline = time.monotonic() + 15
        while link.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not link.connected
        # retained, so the observer sees it whether it subscribes before or after the link drains
        link.publish(f"lineguard/{THING}/results", b"while-offline", qos=1, retain=True)
        with pytest.raises(IotPublishError, match="offline"):
            link.publish(f"lineguard/{THING}/results", b"qos0-offline", qos=0)
        assert [m.payload for m in link.spooler.messages()] == [b"while-offline"]
        broker.start()
        _, seen = _observer(broker, f"lineguard/{THING}/#")
        assert link.wait_connected(15), broker.log()
        assert seen.get(timeout=15) == (f"lineguard/{THING}/results", b"while-offline")
        deadline = time.monotonic() + 5
        while len(link.spooler) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(link.spooler) == 0
    finally:
        link.stop()


def test_publishing_across_broker_restarts_drains_every_message(broker: MosquittoBroker) -> None:
    # Publishes racing the drop and the reconnect: each message leaves the spool exactly when
    # the broker acknowledges it, none is stranded in flight, and the link still stops.
    link = _link(broker)
    link.start()
    sent: list[bytes] = []
    done = threading.Event()

    def publish_steadily() -> None:
        n = 0
        while not done.is_set():
            payload = f"m{n}".encode()
            link.publish(f"lineguard/{THING}/results", payload, qos=1)
            sent.append(payload)
            n += 1
            time.sleep(0.002)

    publisher = threading.Thread(target=publish_steadily, daemon=True)
    try:
        assert link.wait_connected(10)
        publisher.start()
        for _ in range(3):
            time.sleep(0.3)
            broker.kill()
            time.sleep(0.3)
            broker.start()
            assert link.wait_connected(15), broker.log()
        done.set()
        publisher.join(5)
        _, seen = _observer(broker, f"lineguard/{THING}/#")
        link.publish(f"lineguard/{THING}/results", b"last", qos=1)
        # messages still spooled from the outages may drain ahead of "last"; each is one that
        # was sent, and "last" arrives after them
        before_last: list[bytes] = []
        while True:
            topic, payload = seen.get(timeout=15)
            assert topic == f"lineguard/{THING}/results"
            if payload == b"last":
                break
            before_last.append(payload)
        assert set(before_last) <= set(sent)
        deadline = time.monotonic() + 15
        while len(link.spooler) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sent) > 100
        assert [m.payload for m in link.spooler.messages()] == []
        assert len(link.spooler) == 0
    finally:
        done.set()
        started = time.monotonic()
        link.stop()
        assert time.monotonic() - started < 4, "the MQTT link did not stop"


def test_subscribe_while_offline_follows_the_nucleus_mqtt_client(broker: MosquittoBroker) -> None:
    creds = broker.credentials(THING)
    link = MqttLink(host=broker.host, port=broker.port, client_id=THING, ca_file=creds.ca_file,
                    cert_file=creds.cert_file, key_file=creds.key_file,
                    operation_timeout_s=1.0)  # fmt: skip
    broker.kill()
    link.start()
    try:
        # never connected yet: the request waits for the first connection, then gives up
        started = time.monotonic()
        with pytest.raises(Exception, match="timed out waiting to connect"):
            link.subscribe(f"lineguard/{THING}/ack", 1, lambda t, p: None)
        assert time.monotonic() - started >= 0.9
        broker.start()
        assert link.wait_connected(15)
        link.subscribe(f"lineguard/{THING}/ack", 1, lambda t, p: None)
        broker.kill()
        deadline = time.monotonic() + 15
        while link.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        # connected once, now lost: the MQTT 5 client fails it at once (FAIL_ALL_ON_DISCONNECT)
        started = time.monotonic()
        with pytest.raises(Exception, match="not connected"):
            link.subscribe(f"lineguard/{THING}/other", 1, lambda t, p: None)
        assert time.monotonic() - started < 0.5
        # a filter an earlier granted subscription covers succeeds without the broker
        link.subscribe(f"lineguard/{THING}/ack", 1, lambda t, p: None)
    finally:
        link.stop()

"""The mqtt transport against a real mosquitto: mutual TLS, ACL refusals, broker restarts."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from demo.broker import Credentials, MosquittoBroker
from inspector.journal import Journal
from inspector.transports.base import TransportError
from inspector.transports.mqtt import MqttSettings, MqttTransport
from inspector.uplink import Uplink
from tests.inspector.test_journal import result

RESULTS = "lineguard/p1/l1/s1/dev-1/results"
ACL = {
    "dev-1": [
        "write lineguard/p1/l1/s1/dev-1/results",
        "write lineguard/p1/l1/s1/dev-1/health",
        "write lineguard/local/s1/#",
        "read lineguard/p1/l1/s1/dev-1/config",
    ],
    "cloud": ["read lineguard/#", "write lineguard/p1/l1/s1/dev-1/config"],
}


def transport_for(broker: MosquittoBroker, identity: str, **kw: Any) -> MqttTransport:
    creds = broker.credentials(identity)
    settings = MqttSettings(
        host=broker.host,
        port=broker.port,
        client_id=identity,
        ca_file=creds.ca_file,
        cert_file=creds.cert_file,
        key_file=creds.key_file,
        ack_timeout_s=5.0,
        reconnect_max_s=2.0,
        **kw,
    )
    transport = MqttTransport(settings)
    assert transport.wait_connected(10), broker.log()
    return transport


class Monitor:
    """The "cloud": a subscriber with a persistent session that records every message."""

    def __init__(self, creds: Credentials, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="cloud",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.tls_set(str(creds.ca_file), str(creds.cert_file), str(creds.key_file))
        client.reconnect_delay_set(1, 1)

        def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
            if not reason.is_failure:
                c.subscribe(topic, qos=1)

        def on_subscribe(c: Any, u: Any, mid: Any, codes: Any, props: Any) -> None:
            self.subscribed.set()

        def on_message(c: Any, u: Any, message: Any) -> None:
            with self.lock:
                self.messages.append((message.topic, bytes(message.payload)))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect_async("127.0.0.1", port, keepalive=5, clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        assert self.subscribed.wait(10)

    def seqs(self) -> list[int]:
        with self.lock:
            return [
                r["seq"]
                for _, p in self.messages
                if p.startswith(b'{"v":1,"device"')
                for r in json.loads(p)["results"]
            ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker(ACL, persistent=True) as running:
        yield running


def test_publish_over_mutual_tls_and_refusal_is_reported(broker: MosquittoBroker) -> None:
    monitor = Monitor(broker.credentials("cloud"), broker.port, "lineguard/#")
    transport = transport_for(broker, "dev-1")
    try:
        transport.publish_upstream(RESULTS, b'{"hello":1}')
        transport.publish_local("lineguard/local/s1/reject", b'{"v":1}')
        # another device's topic: the broker answers PUBACK "Not authorized" (MQTT 5 code 135)
        with pytest.raises(TransportError, match=r"Not authorized.*reason code 135"):
            transport.publish_upstream("lineguard/p1/l1/s1/dev-2/results", b'{"x":1}')
        assert transport.refused == 1
        assert "dev-2/results" in (transport.last_error or "")
        transport.publish_upstream(RESULTS, b'{"after":1}')  # still usable
        deadline = time.monotonic() + 5
        while len(monitor.messages) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        topics = [t for t, _ in monitor.messages]
        assert topics == [RESULTS, "lineguard/local/s1/reject", RESULTS]
    finally:
        transport.close()
        monitor.close()


def test_config_updates_arrive_and_callbacks_that_raise_are_contained(
    broker: MosquittoBroker,
) -> None:
    got: list[dict[str, Any]] = []
    transport = transport_for(broker, "dev-1", config_topic="lineguard/p1/l1/s1/dev-1/config")
    cloud = transport_for(broker, "cloud")
    try:
        transport.on_config(lambda doc: (_ for _ in ()).throw(RuntimeError("boom")))
        transport.on_config(got.append)
        time.sleep(0.3)  # subscription done on connect
        cloud.publish_upstream("lineguard/p1/l1/s1/dev-1/config", b'{"reject": 0.3}')
        cloud.publish_upstream("lineguard/p1/l1/s1/dev-1/config", b"not json")
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got[0] == {"reject": 0.3}
        assert "__error__" in got[1]
        transport.publish_upstream(RESULTS, b"{}")  # the network thread survived
    finally:
        transport.close()
        cloud.close()


def test_client_without_certificate_is_refused(broker: MosquittoBroker) -> None:
    connected = threading.Event()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="intruder",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.tls_set(ca_certs=str(broker.credentials("cloud").ca_file))  # no client certificate

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            connected.set()

    client.on_connect = on_connect
    client.connect_async(broker.host, broker.port)
    client.loop_start()
    try:
        assert not connected.wait(2.0), "a client without a certificate was let in"
    finally:
        client.loop_stop()


def test_broker_killed_mid_run_no_result_lost_order_kept(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    monitor = Monitor(broker.credentials("cloud"), broker.port, RESULTS)
    transport = transport_for(broker, "dev-1")
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=16 << 20, synchronous="NORMAL")
    uplink = Uplink(journal, transport, RESULTS, linger_s=0.05, backoff_s=0.2, max_backoff_s=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=uplink.run, args=(stop,), daemon=True)
    thread.start()
    appended: list[int] = []
    try:
        rng = random.Random(7)
        kill_at = 80 + rng.randrange(50)
        for i in range(400):  # ~100 frames/s; the broker dies for ~2 s mid-run
            appended.append(journal.append(result(f"p{i}")))
            if i == kill_at:
                broker.kill()
            if i == kill_at + 200:
                assert journal.backlog() > 100  # results wait in the journal meanwhile
                broker.start()
            time.sleep(0.01)
        deadline = time.monotonic() + 30
        while journal.backlog() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert journal.backlog() == 0, uplink.stats
        while set(appended) - set(monitor.seqs()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert uplink.stats.failures >= 1
        got = monitor.seqs()
        unique = list(dict.fromkeys(got))
        assert unique == appended  # nothing lost, first deliveries in seq order
    finally:
        stop.set()
        thread.join(10)
        transport.close()
        monitor.close()
        journal.close()

"""The bridge service over MQTT 5 with mutual TLS (real mosquitto, ACLs) to a real OPC UA PLC."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from demo.broker import Credentials, MosquittoBroker
from line_bridge.config import parse_config
from line_bridge.plc_sim import OpcUaPlc
from line_bridge.service import serve
from line_bridge.subscribers import MqttSubscriber

from .conftest import heartbeat, result, wait_for

ACL = {
    "dev-1": ["write lineguard/local/#"],
    "line-bridge": [
        "read lineguard/local/+/reject",
        "read lineguard/local/+/heartbeat",
        "write lineguard/local/line-bridge/health",
    ],
    "watcher": ["read lineguard/local/line-bridge/health"],
}


def _client(broker: MosquittoBroker, creds: Credentials) -> paho.Client:
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=creds.identity,
        protocol=paho.MQTTv5,
    )
    client.tls_set(
        ca_certs=str(creds.ca_file), certfile=str(creds.cert_file), keyfile=str(creds.key_file)
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _transport(broker: MosquittoBroker) -> dict[str, Any]:
    creds = broker.credentials("line-bridge")
    return {
        "kind": "mqtt",
        "host": broker.host,
        "port": broker.port,
        "client_id": "line-bridge",
        "ca_file": str(creds.ca_file),
        "cert_file": str(creds.cert_file),
        "key_file": str(creds.key_file),
    }


def test_subscriber_resubscribes_after_a_broker_restart() -> None:
    with MosquittoBroker(ACL) as broker:
        got: list[tuple[str, bytes]] = []
        config = parse_config(
            {
                "controller": {
                    "protocol": "modbus",
                    "endpoint": "modbus+tcp://127.0.0.1:1",
                    "stations": {"s1": {"healthy_coil": 0, "reject_register": 100}},
                },
                "transport": _transport(broker),
            }
        )
        sub = MqttSubscriber(config.transport, ["s1"], lambda t, p: got.append((t, p)))
        sub.start()
        assert sub.subscribed.is_set()
        inspector = _client(broker, broker.credentials("dev-1"))
        try:
            inspector.publish(
                "lineguard/local/s1/reject", result("s1", "x1"), qos=1
            ).wait_for_publish(5)
            inspector.publish(
                "lineguard/local/s2/reject", result("s2", "other"), qos=1
            ).wait_for_publish(5)
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.02)
            assert [t for t, _ in got] == ["lineguard/local/s1/reject"]
            broker.kill()
            deadline = time.monotonic() + 5
            while sub.subscribed.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not sub.subscribed.is_set(), "the subscriber did not notice the outage"
            broker.start()
            assert sub.subscribed.wait(10), broker.log()
            inspector.publish(
                "lineguard/local/s1/heartbeat", heartbeat("s1"), qos=1
            ).wait_for_publish(10)
            deadline = time.monotonic() + 5
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert got[-1][0] == "lineguard/local/s1/heartbeat"
        finally:
            inspector.loop_stop()
            sub.stop()


def test_service_over_mutual_tls_drives_the_plc_and_publishes_health() -> None:
    async def scenario(broker: MosquittoBroker) -> None:
        async with OpcUaPlc(["s1"]) as plc:
            config = parse_config(
                {
                    "controller": plc.controller_config(),
                    "transport": _transport(broker),
                    "heartbeat_window_s": 0.6,
                    "health_interval_s": 0.3,
                    "device": "core-1",
                }
            )
            health: list[dict[str, Any]] = []
            watcher = _client(broker, broker.credentials("watcher"))
            watcher.on_message = lambda c, u, m: health.append(json.loads(m.payload))
            watcher.subscribe("lineguard/local/line-bridge/health", qos=1)
            inspector = _client(broker, broker.credentials("dev-1"))
            beating = threading.Event()
            beating.set()

            def beat() -> None:
                seq = 0
                while beating.is_set():
                    seq += 1
                    inspector.publish("lineguard/local/s1/heartbeat", heartbeat("s1", seq), qos=1)
                    time.sleep(0.1)

            stop = asyncio.Event()
            service = asyncio.create_task(serve(config, stop=stop))
            beater = threading.Thread(target=beat, daemon=True)
            beater.start()
            try:
                await wait_for(
                    lambda: plc.record.healthy.get("s1") is True, 10, "healthy over MQTT"
                )
                for _ in range(2):
                    inspector.publish(
                        "lineguard/local/s1/reject", result("s1", "m-7", "manual"), qos=1
                    )
                await wait_for(
                    lambda: plc.record.part_ids() == ["m-7"], 10, "manual part at the PLC"
                )
                beating.clear()
                await wait_for(lambda: plc.record.healthy["s1"] is False, 10, "healthy false")
                await wait_for(
                    lambda: any(
                        not h["stations"]["s1"]["healthy"]
                        and "heartbeat missing" in (h["stations"]["s1"]["reason"] or "")
                        for h in health
                    ),
                    10,
                    "a health message saying why",
                )
                assert any(h["stations"]["s1"]["healthy"] for h in health)
                assert health[-1]["device"] == "core-1"
            finally:
                beating.clear()
                stop.set()
                bridge = await asyncio.wait_for(service, 10)
                watcher.loop_stop()
                inspector.loop_stop()
            assert bridge.health()["stations"]["s1"]["duplicates_dropped"] == 1

    with MosquittoBroker(ACL) as broker:
        asyncio.run(scenario(broker))

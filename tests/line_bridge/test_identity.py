"""Under Greengrass the station comes from the identity shadow; settings are keyed by station."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from line_bridge.config import parse_component_config
from line_bridge.errors import ConfigError, IdentityError
from line_bridge.identity import SHADOW_NAME, parse_identity
from line_bridge.plc_sim import OpcUaPlc
from line_bridge.service import serve_greengrass

from .conftest import heartbeat, result, wait_for
from .test_ipc import FakeIpcClient, _binary

THING = "lineguard-demo-DEMO-0001"
STATIONS = ["press-out", "final-check"]


def _identity(station: str) -> dict[str, Any]:
    return {"v": 1, "thing": THING, "plant": "demo", "line": "line-1", "station": station}


def _per_station(plc: OpcUaPlc, **over: Any) -> dict[str, Any]:
    """The ring-wide form: controller defaults, one entry per station the ring may hold."""
    controller = plc.controller_config()
    stations = controller.pop("stations")
    doc: dict[str, Any] = {
        "transport": {"kind": "greengrass"},
        "heartbeat_window_s": 0.6,
        "refresh_interval_s": 0.3,
        "identity_poll_s": 0.3,
        "controller": controller,
        "stations": {name: {"signals": signals} for name, signals in stations.items()},
    }
    doc.update(over)
    return doc


async def _beat(client: FakeIpcClient, station: str, n: int = 3) -> None:
    for seq in range(n):
        client.streams[f"lineguard/local/{station}/heartbeat"]["event"](
            _binary(heartbeat(station, seq))
        )
        await asyncio.sleep(0.05)


def _health(client: FakeIpcClient) -> list[dict[str, Any]]:
    return [
        json.loads(m.binary_message.message)
        for t, m in client.published
        if t == "lineguard/local/line-bridge/health"
    ]


def test_the_station_comes_from_the_identity_shadow_and_follows_its_changes() -> None:
    async def scenario() -> None:
        async with OpcUaPlc(STATIONS) as plc:
            client = FakeIpcClient(config=_per_station(plc))
            client.update_shadow(THING, SHADOW_NAME, _identity("press-out"))
            stop = asyncio.Event()
            task = asyncio.create_task(serve_greengrass(client, stop=stop, thing=THING))
            await wait_for(
                lambda: "lineguard/local/press-out/heartbeat" in client.streams, 10, "subscribe"
            )
            # exact topics of its own station only: `+` in a pub/sub policy is literal
            assert not [t for t in client.streams if t.startswith("lineguard/local/final-check")]
            assert not [t for t in client.streams if "+" in t or "#" in t]
            await _beat(client, "press-out")
            await wait_for(lambda: plc.record.healthy.get("press-out") is True, 10, "healthy")
            client.streams["lineguard/local/press-out/reject"]["event"](
                _binary(result("press-out", "p-1"))
            )
            await wait_for(lambda: plc.record.part_ids() == ["p-1"], 10, "reject written")
            assert "final-check" not in plc.record.healthy
            # the device moves: ShadowManager syncs the new identity and says so locally
            client.update_shadow(THING, SHADOW_NAME, _identity("final-check"))
            await wait_for(lambda: plc.record.healthy.get("press-out") is False, 10, "old false")
            await wait_for(
                lambda: "lineguard/local/final-check/heartbeat" in client.streams, 10, "resubscribe"
            )
            await _beat(client, "final-check")
            await wait_for(lambda: plc.record.healthy.get("final-check") is True, 10, "new healthy")
            stop.set()
            final = await asyncio.wait_for(task, 10)
            assert final is not None and final.stations == ("final-check",)
            assert plc.record.healthy.get("final-check") is False  # stopped: false on the way out

    asyncio.run(scenario())


def test_no_identity_means_no_healthy_and_says_why_until_the_shadow_arrives() -> None:
    async def scenario() -> None:
        async with OpcUaPlc(STATIONS) as plc:
            client = FakeIpcClient(config=_per_station(plc))  # shadow not synced yet
            stop = asyncio.Event()
            task = asyncio.create_task(serve_greengrass(client, stop=stop, thing=THING))
            await wait_for(lambda: bool(_health(client)), 10, "a health message")
            health = _health(client)[-1]
            assert health["stations"] == {} and health["identity"] is None
            assert "lineguard-identity" in health["reason"] and "not found" in health["reason"]
            await asyncio.sleep(0.5)
            assert plc.record.healthy == {}  # nothing written, the line diverts every part
            assert not [t for t in client.streams if t.startswith("lineguard/local/")]
            client.update_shadow(THING, SHADOW_NAME, _identity("press-out"))
            await wait_for(
                lambda: "lineguard/local/press-out/heartbeat" in client.streams, 10, "subscribe"
            )
            await _beat(client, "press-out")
            await wait_for(lambda: plc.record.healthy.get("press-out") is True, 10, "healthy")
            client.delete_shadow(THING, SHADOW_NAME)  # identity gone: stop signalling healthy
            await wait_for(lambda: plc.record.healthy.get("press-out") is False, 10, "false")
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_an_identity_whose_station_has_no_settings_is_not_served() -> None:
    async def scenario() -> None:
        async with OpcUaPlc(STATIONS) as plc:
            client = FakeIpcClient(config=_per_station(plc))
            client.update_shadow(THING, SHADOW_NAME, _identity("paint-1"))
            stop = asyncio.Event()
            task = asyncio.create_task(serve_greengrass(client, stop=stop, thing=THING))
            await wait_for(lambda: bool(_health(client)), 10, "a health message")
            assert "stations.paint-1" in _health(client)[-1]["reason"]
            assert plc.record.healthy == {}
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_deployments_are_validated_before_the_nucleus_applies_them() -> None:
    async def scenario() -> None:
        async with OpcUaPlc(STATIONS) as plc:
            good = _per_station(plc)
            client = FakeIpcClient(config=good)
            client.update_shadow(THING, SHADOW_NAME, _identity("press-out"))
            stop = asyncio.Event()
            task = asyncio.create_task(serve_greengrass(client, stop=stop, thing=THING))
            await wait_for(lambda: hasattr(client, "validate_stream"), 10, "validation stream")
            bad = json.loads(json.dumps(good))
            bad["stations"]["final-check"]["timeout_s"] = -1
            client.propose(bad, "deployment-bad")
            floats = json.loads(json.dumps(good))
            floats["dedup_size"] = 4096.0  # numbers may come as floats from the nucleus
            client.propose(floats, "deployment-good")
            client.propose({**good, "dedup_size": 99.5}, "deployment-fraction")
            reports = {r.deployment_id: r for r in client.reports}
            assert reports["deployment-bad"].status == "REJECTED"
            assert "stations.final-check" in reports["deployment-bad"].message
            assert "timeout_s" in reports["deployment-bad"].message
            assert reports["deployment-good"].status == "ACCEPTED"
            assert reports["deployment-good"].message is None
            assert reports["deployment-fraction"].status == "REJECTED"
            assert "dedup_size" in reports["deployment-fraction"].message
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_station_settings_take_the_defaults_and_override_them() -> None:
    doc = {
        "controller": {
            "protocol": "modbus",
            "endpoint": "modbus+tcp://plc-a:502",
            "signals": {"healthy_coil": 0, "reject_register": 100},
        },
        "stations": {
            "press-out": {},
            "final-check": {"endpoint": "modbus+tcp://plc-b:502", "unit": 3.0},
        },
    }
    configs = parse_component_config(doc)
    press, final = configs.for_station("press-out"), configs.for_station("final-check")
    assert press.controller.endpoint == "modbus+tcp://plc-a:502"
    assert final.controller.endpoint == "modbus+tcp://plc-b:502" and final.controller.unit == 3
    assert final.stations == ("final-check",)
    with pytest.raises(ConfigError, match="stations.paint-1"):
        configs.for_station("paint-1")
    opcua = {
        "controller": {
            "protocol": "opcua",
            "endpoint": "opc.tcp://plc:4840",
            "signals": {
                "healthy": "ns=2;s={station}.Healthy",
                "reject_part_id": "ns=2;s={station}.RejectPartId",
                "reject_decision": "ns=2;s={station}.RejectDecision",
                "reject_counter": "ns=2;s={station}.RejectCounter",
            },
        },
        "stations": {"press-out": {}},
    }
    signals = parse_component_config(opcua).for_station("press-out").controller.stations
    assert signals["press-out"].healthy == "ns=2;s=press-out.Healthy"  # type: ignore[union-attr]
    del doc["controller"]["signals"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"stations\.press-out\.signals: is required"):
        parse_component_config(doc)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"state": {}}', "state.desired is missing"),
        (json.dumps({"state": {"desired": {**_identity("s"), "v": 2}}}).encode(), "v is 2"),
        (json.dumps({"state": {"desired": {**_identity("s"), "thing": "x"}}}).encode(), "another"),
        (json.dumps({"state": {"desired": {**_identity("a/b")}}}).encode(), "station"),
    ],
)
def test_a_broken_identity_is_refused_with_the_reason(payload: bytes, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        parse_identity(THING, payload)


def test_the_thing_name_comes_from_the_nucleus_environment(monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_IOT_THING_NAME", raising=False)
    from line_bridge.errors import BridgeError

    doc = {
        "controller": {
            "protocol": "modbus",
            "endpoint": "modbus+tcp://plc-a:502",
            "signals": {"healthy_coil": 0, "reject_register": 100},
        },
        "stations": {"press-out": {}},
    }
    with pytest.raises(BridgeError, match="AWS_IOT_THING_NAME"):
        asyncio.run(serve_greengrass(FakeIpcClient(config=doc), stop=asyncio.Event()))

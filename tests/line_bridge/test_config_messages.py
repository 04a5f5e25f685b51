"""Configuration validation and the local message contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from line_bridge.__main__ import main
from line_bridge.config import OpcUaStation, load_config, parse_config
from line_bridge.errors import ConfigError, MessageError
from line_bridge.messages import parse_heartbeat, parse_reject, split_topic

from .conftest import heartbeat, result


def _opcua(**over: Any) -> dict[str, Any]:
    node = {
        "healthy": "ns=2;s=s1.Healthy",
        "reject_part_id": "ns=2;s=s1.RejectPartId",
        "reject_decision": "ns=2;s=s1.RejectDecision",
        "reject_counter": "ns=2;s=s1.RejectCounter",
    }
    doc: dict[str, Any] = {
        "controller": {
            "protocol": "opcua",
            "endpoint": "opc.tcp://plc:4840",
            "stations": {"s1": node},
        }
    }
    doc.update(over)
    return doc


def test_a_valid_configuration_is_typed() -> None:
    config = parse_config(_opcua(heartbeat_window_s=2))
    assert config.heartbeat_window_s == 2.0
    assert config.stations == ("s1",)
    assert isinstance(config.controller.stations["s1"], OpcUaStation)
    assert config.controller.host_port == ("plc", 4840)
    assert config.transport.kind == "mqtt"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"heartbeat_window_s": 0}, "heartbeat_window_s", "positive"),
        ({"heartbeat_window_s": "3"}, "heartbeat_window_s", "positive"),
        ({"colour": 1}, "colour", "unknown field"),
        ({"controller": {"protocol": "profinet"}}, "controller.protocol", "one of"),
        (
            {"controller": {"protocol": "opcua", "endpoint": "http://x"}},
            "controller.endpoint",
            "opc.tcp",
        ),
        (
            {"controller": {"protocol": "opcua", "endpoint": "opc.tcp://x", "stations": {}}},
            "controller.stations",
            "at least one",
        ),
        (
            {
                "controller": {
                    "protocol": "opcua",
                    "endpoint": "opc.tcp://x",
                    "stations": {"s1": {"healthy": "x"}},
                }
            },
            "controller.stations.s1.healthy",
            "node id",
        ),
        (
            {
                "controller": {
                    "protocol": "modbus",
                    "endpoint": "modbus+tcp://x",
                    "stations": {"s1": {"healthy_coil": -1}},
                }
            },
            "controller.stations.s1.healthy_coil",
            "0..65535",
        ),
        (
            {"transport": {"kind": "mqtt", "cert_file": "c.pem"}},
            "transport.cert_file",
            "go together",
        ),
        ({"transport": {"kind": "carrier-pigeon"}}, "transport.kind", "one of"),
    ],
)
def test_bad_configuration_names_the_field(
    change: dict[str, Any], field: str, message: str
) -> None:
    doc = _opcua()
    doc.update(change)
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "bridge.json")
    assert info.value.field_path == field
    assert message in str(info.value) and str(info.value).startswith("bridge.json: ")


def test_security_only_for_opcua() -> None:
    doc = {
        "controller": {
            "protocol": "modbus",
            "endpoint": "modbus+tcp://x:502",
            "stations": {"s1": {"healthy_coil": 0, "reject_register": 100}},
            "security": {"certificate": "c", "private_key": "k"},
        }
    }
    with pytest.raises(ConfigError, match="only applies to protocol opcua"):
        parse_config(doc)


def test_cli_check_config_and_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "bridge.json"
    good.write_text(json.dumps(_opcua()))
    assert main(["check-config", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["stations"] == ["s1"]
    yaml_file = tmp_path / "bridge.yaml"
    yaml_file.write_text("controller: {protocol: opcua, endpoint: 'opc.tcp://x', stations: {}}\n")
    assert main(["check-config", str(yaml_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"line_bridge: error: {yaml_file}: controller.stations: must name at least one station"
    )
    assert main(["run", "--config", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert load_config(good).controller.endpoint == "opc.tcp://plc:4840"


def test_messages_follow_the_contract() -> None:
    assert split_topic("lineguard/local/s1/reject") == ("s1", "reject")
    reject = parse_reject("s1", result("s1", "p1", "manual"))
    assert (reject.part_id, reject.decision, reject.code) == ("p1", "manual", 2)
    beat = parse_heartbeat("s1", heartbeat("s1", 5, healthy=False))
    assert (beat.seq, beat.healthy, beat.model) == (5, False, "tiny@1.0.0")


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        ("lineguard/local/s1/other", b"{}", "not reject or heartbeat"),
        ("lineguard/p/l/s1/reject", b"{}", "not lineguard/local"),
        ("lineguard/local/s1/reject", b"not json", "not JSON"),
        ("lineguard/local/s1/reject", b'{"v":2}', "version"),
        ("lineguard/local/s1/reject", result("s2", "p"), "does not match topic"),
        ("lineguard/local/s1/reject", result("s1", "p", "pass"), "not reject or manual"),
        ("lineguard/local/s1/reject", result("s1", ""), "part_id"),
        (
            "lineguard/local/s1/heartbeat",
            json.dumps({"v": 1, "station": "s1", "healthy": "yes"}).encode(),
            "healthy",
        ),
    ],
)
def test_bad_messages_are_refused_with_a_reason(topic: str, payload: bytes, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        station, kind = split_topic(topic)
        (parse_reject if kind == "reject" else parse_heartbeat)(station, payload)


def test_a_pass_result_on_the_reject_topic_never_reaches_the_plc() -> None:
    """The bridge acts only on reject/manual; anything else is counted as invalid."""
    from line_bridge.bridge import Bridge
    from line_bridge.service import build_controller

    config = parse_config(_opcua())
    bridge = Bridge(config, build_controller(config))
    bridge.on_message("lineguard/local/s1/reject", result("s1", "p", "pass"), 0.0)
    bridge.on_message("lineguard/local/s9/reject", result("s9", "p"), 0.0)
    bridge.on_message("lineguard/local/s1/reject", b"\xff\xfe", 0.0)
    assert bridge.invalid_messages == 3
    assert bridge.health()["stations"]["s1"]["rejects_pending"] == 0


def test_stale_heartbeats_and_rejects_are_not_acted_on() -> None:
    """A backlog replayed after a broker outage must not revive a dead inspector or reject a
    part long gone."""
    import asyncio
    import time

    from line_bridge.bridge import Bridge
    from line_bridge.messages import format_ts
    from line_bridge.service import build_controller

    config = parse_config(_opcua(heartbeat_window_s=1.0, reject_max_age_s=2.0))
    bridge = Bridge(config, build_controller(config))
    old = json.loads(heartbeat("s1"))
    old["ts"] = format_ts(time.time() - 5)
    bridge.on_message("lineguard/local/s1/heartbeat", json.dumps(old).encode(), time.monotonic())
    assert bridge.stations["s1"].heartbeat_at is None
    assert bridge.invalid_messages == 1
    late = json.loads(result("s1", "late"))
    late["ts"] = format_ts(time.time() - 30)
    bridge.on_message("lineguard/local/s1/reject", json.dumps(late).encode(), time.monotonic())
    bridge.plc_ok = True  # the write path is not reached: the reject expires first
    asyncio.run(bridge._write_pending())
    station = bridge.health()["stations"]["s1"]
    assert station["rejects_expired"] == 1 and station["rejects_written"] == 0

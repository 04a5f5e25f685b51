"""Ages are monotonic: a wall-clock step (NTP) forward or back changes nothing the bridge does."""

from __future__ import annotations

import asyncio
import json

from line_bridge.bridge import Bridge
from line_bridge.config import parse_config
from line_bridge.controller import LineController
from line_bridge.errors import ControllerError
from line_bridge.messages import format_ts

from .conftest import heartbeat, result

START_WALL = 1_780_000_000.0
HOUR = 3600.0


class Clocks:
    """A monotonic clock and a wall clock the test moves independently (an NTP step)."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.wall_offset = START_WALL - 100.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.mono + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.mono += seconds

    def step_wall(self, seconds: float) -> None:
        self.wall_offset += seconds


class RecordingPlc(LineController):
    """The bridge's own controller interface, recording writes; ``down`` refuses them."""

    def __init__(self) -> None:
        self.down = False
        self.rejects: list[tuple[str, str, int]] = []
        self.healthy: dict[str, bool] = {}

    async def connect(self) -> None:
        if self.down:
            raise ControllerError("PLC down")

    async def close(self) -> None:
        return None

    async def write_healthy(self, station: str, healthy: bool) -> None:
        if self.down:
            raise ControllerError("PLC down")
        self.healthy[station] = healthy

    async def write_reject(self, station: str, part_id: str, code: int) -> int:
        if self.down:
            raise ControllerError("PLC down")
        self.rejects.append((station, part_id, code))
        return len(self.rejects)

    async def write_alive(self, station: str, counter: int) -> None:
        return None


def _config() -> object:
    node = {
        "healthy": "ns=2;s=s1.Healthy",
        "reject_part_id": "ns=2;s=s1.RejectPartId",
        "reject_decision": "ns=2;s=s1.RejectDecision",
        "reject_counter": "ns=2;s=s1.RejectCounter",
    }
    return parse_config(
        {
            "controller": {
                "protocol": "opcua",
                "endpoint": "opc.tcp://plc:4840",
                "stations": {"s1": node},
            },
            "heartbeat_window_s": 3.0,
            "reject_max_age_s": 10.0,
        }
    )


def _stamped(payload: bytes, wall: float) -> bytes:
    doc = json.loads(payload)
    doc["ts"] = format_ts(wall)
    doc["latency_ms"] = 0.0
    return json.dumps(doc).encode()


def _bridge(clocks: Clocks, plc: RecordingPlc) -> Bridge:
    return Bridge(_config(), plc, clock=clocks.monotonic, wall=clocks.wall)  # type: ignore[arg-type]


def test_a_wall_step_forward_while_a_reject_waits_does_not_expire_it() -> None:
    for step in (HOUR, -HOUR):
        clocks, plc = Clocks(), RecordingPlc()
        bridge = _bridge(clocks, plc)
        bridge.on_message(
            "lineguard/local/s1/reject",
            _stamped(result("s1", "p1"), clocks.wall()),
            clocks.monotonic(),
        )
        clocks.step_wall(step)  # NTP steps the clock while the reject waits for the PLC
        clocks.advance(1.0)
        bridge.plc_ok = True
        asyncio.run(bridge._write_pending())
        assert plc.rejects == [("s1", "p1", 1)], f"wall step {step:+g} s"
        assert bridge.stations["s1"].rejects_expired == 0


def test_a_reject_still_expires_by_monotonic_age_whatever_the_wall_clock_says() -> None:
    clocks, plc = Clocks(), RecordingPlc()
    bridge = _bridge(clocks, plc)
    bridge.on_message(
        "lineguard/local/s1/reject", _stamped(result("s1", "p1"), clocks.wall()), clocks.mono
    )
    clocks.step_wall(-HOUR)  # the wall clock going back must not keep an old reject alive
    clocks.advance(10.5)
    bridge.plc_ok = True
    asyncio.run(bridge._write_pending())
    assert plc.rejects == []
    assert bridge.stations["s1"].rejects_expired == 1


def test_a_wall_step_does_not_change_heartbeat_staleness() -> None:
    for step in (HOUR, -HOUR):
        clocks, plc = Clocks(), RecordingPlc()
        bridge = _bridge(clocks, plc)
        beat = _stamped(heartbeat("s1"), clocks.wall())
        bridge.on_message("lineguard/local/s1/heartbeat", beat, clocks.mono)
        clocks.step_wall(step)
        clocks.advance(1.0)
        assert bridge.desired(bridge.stations["s1"], clocks.mono) == (True, None)
        # the inspector's next heartbeat carries the stepped clock; it counts as fresh
        bridge.on_message(
            "lineguard/local/s1/heartbeat", _stamped(heartbeat("s1", 2), clocks.wall()), clocks.mono
        )
        assert bridge.stations["s1"].heartbeat_at == clocks.mono, f"wall step {step:+g} s"
        clocks.advance(3.1)
        healthy, reason = bridge.desired(bridge.stations["s1"], clocks.mono)
        assert healthy is False and "missing for 3.1 s" in (reason or "")

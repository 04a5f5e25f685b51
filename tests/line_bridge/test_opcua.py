"""The bridge against a real OPC UA server (asyncua) as the simulated PLC."""

from __future__ import annotations

import asyncio
import time

from line_bridge.plc_sim import OpcUaPlc

from .conftest import Beater, result, running_bridge, wait_for

STATIONS = ["station-1", "station-2"]


def test_rejects_and_manuals_reach_the_plc_once_each_per_station() -> None:
    async def scenario() -> None:
        async with OpcUaPlc(STATIONS) as plc, running_bridge(plc.controller_config()) as bridge:
            beaters = [Beater(bridge, s).start() for s in STATIONS]
            await wait_for(lambda: all(plc.record.healthy.get(s) for s in STATIONS), 10, "healthy")
            sent = [
                ("station-1", "p1", "reject"),
                ("station-2", "p2", "manual"),
                ("station-1", "p3", "manual"),
            ]
            for station, part, decision in sent:
                bridge.handle_message(
                    f"lineguard/local/{station}/reject", result(station, part, decision)
                )
                # at-least-once delivery: every message arrives twice
                bridge.handle_message(
                    f"lineguard/local/{station}/reject", result(station, part, decision)
                )
            await wait_for(lambda: len(plc.record.rejects) >= 3, 10, "three rejects")
            await asyncio.sleep(0.3)  # any duplicate would arrive by now
            got = [(r.station, r.part_id, r.code) for r in plc.record.rejects]
            assert got == [("station-1", "p1", 1), ("station-2", "p2", 2), ("station-1", "p3", 2)]
            assert [r.counter for r in plc.record.rejects if r.station == "station-1"] == [1, 2]
            assert await plc.read("station-1", "reject_part_id") == "p3"
            health = bridge.health()["stations"]
            assert health["station-1"]["duplicates_dropped"] == 2
            assert health["station-1"]["rejects_written"] == 2
            for beater in beaters:
                await beater.stop()

    asyncio.run(scenario())


def test_missing_heartbeat_drives_healthy_false_within_the_window() -> None:
    async def scenario() -> None:
        async with (
            OpcUaPlc(["station-1"]) as plc,
            running_bridge(plc.controller_config(), heartbeat_window_s=0.5) as bridge,
        ):
            assert plc.record.healthy.get("station-1") in (
                None,
                False,
            )  # never healthy before a beat
            beater = Beater(bridge, "station-1").start()
            await wait_for(lambda: plc.record.healthy.get("station-1") is True, 10, "healthy")
            await beater.stop()
            stopped = time.time()
            await wait_for(lambda: plc.record.healthy["station-1"] is False, 10, "healthy false")
            went_false = [t for t, s, v in plc.record.healthy_history if not v][-1]
            # the last beat was at most 0.1 s before `stopped`; then the 0.5 s window, one 50 ms
            # tick and the write; slack for a busy 2-core machine (a refresh-paced check would
            # need window + 0.3 s refresh at best, a missing check never gets here)
            assert went_false - stopped <= 0.5 + 0.4, went_false - stopped
            assert await plc.read("station-1", "healthy") is False
            # the bridge records what it wrote once the PLC acknowledged the write
            await wait_for(
                lambda: bridge.health()["stations"]["station-1"]["healthy"] is False,
                10, "the bridge's record of healthy false",
            )  # fmt: skip
            assert "heartbeat missing" in bridge.health()["stations"]["station-1"]["reason"]
            beater = Beater(bridge, "station-1").start()  # inspector back → healthy again
            await wait_for(lambda: plc.record.healthy["station-1"] is True, 10, "healthy again")
            await beater.stop()

    asyncio.run(scenario())


def test_an_inspector_reporting_unhealthy_drives_healthy_false() -> None:
    async def scenario() -> None:
        async with (
            OpcUaPlc(["station-1"]) as plc,
            running_bridge(plc.controller_config()) as bridge,
        ):
            beater = Beater(bridge, "station-1").start()
            await wait_for(lambda: plc.record.healthy.get("station-1") is True, 10, "healthy")
            beater.healthy = False
            await wait_for(lambda: plc.record.healthy["station-1"] is False, 10, "healthy false")
            # the PLC holds the value while the bridge's write is still being acknowledged: the
            # bridge records what it wrote (and why) once the write returns
            await wait_for(
                lambda: bridge.health()["stations"]["station-1"]["reason"] is not None,
                10,
                "the reason recorded",
            )
            assert "unhealthy" in bridge.health()["stations"]["station-1"]["reason"]
            await beater.stop()

    asyncio.run(scenario())


def test_plc_restart_restores_state_and_resumes_rejects() -> None:
    async def scenario() -> None:
        plc = OpcUaPlc(["station-1"])
        await plc.start()
        try:
            async with running_bridge(plc.controller_config(timeout_s=0.5)) as bridge:
                beater = Beater(bridge, "station-1").start()
                await wait_for(lambda: plc.record.healthy.get("station-1") is True, 10, "healthy")
                bridge.handle_message(
                    "lineguard/local/station-1/reject", result("station-1", "before")
                )
                await wait_for(lambda: plc.record.part_ids() == ["before"], 10, "first reject")
                await plc.stop()  # power cycle: memory lost
                await wait_for(lambda: not bridge.plc_ok, 10, "bridge notices the PLC is gone")
                health = bridge.health()
                assert health["plc"]["connected"] is False
                assert health["stations"]["station-1"]["healthy"] is False
                assert "PLC" in health["stations"]["station-1"]["reason"]
                # a reject while the PLC is down is kept and written once it is back
                bridge.handle_message(
                    "lineguard/local/station-1/reject", result("station-1", "during")
                )
                await plc.start()
                assert await plc.read("station-1", "healthy") is False  # fresh memory
                await wait_for(
                    lambda: plc.record.healthy.get("station-1") is True, 10, "state restored"
                )
                assert await plc.read("station-1", "healthy") is True
                await wait_for(
                    lambda: "during" in plc.record.part_ids(), 10, "pending reject written"
                )
                bridge.handle_message(
                    "lineguard/local/station-1/reject", result("station-1", "after")
                )
                await wait_for(lambda: plc.record.part_ids()[-1:] == ["after"], 10, "reject after")
                assert plc.record.part_ids() == ["before", "during", "after"]
                assert bridge.health()["plc"]["reconnects"] == 1
                await beater.stop()
            # the bridge stopping leaves no stale healthy behind
            assert await plc.read("station-1", "healthy") is False
        finally:
            await plc.stop()

    asyncio.run(scenario())


def test_a_wrong_node_id_is_reported_and_the_station_stays_unhealthy() -> None:
    async def scenario() -> None:
        async with OpcUaPlc(["station-1"]) as plc:
            config = plc.controller_config()
            config["stations"]["station-1"]["healthy"] = "ns=2;s=station-1.NoSuchNode"
            async with running_bridge(config) as bridge:
                beater = Beater(bridge, "station-1").start()
                await wait_for(lambda: "NoSuchNode" in (bridge.plc_error or ""), 10, "error")
                health = bridge.health()
                assert health["plc"]["connected"] is False
                assert health["stations"]["station-1"]["healthy"] is False
                await beater.stop()
            assert plc.record.healthy == {}

    asyncio.run(scenario())


def test_plc_sim_cli_prints_a_usable_controller_section() -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from line_bridge.config import parse_config
    from line_bridge.opcua import OpcUaController

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=f"{root / 'edge_component'}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "line_bridge.plc_sim", "--stations", "a,b"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        controller = json.loads(line)["controller"]
        assert sorted(controller["stations"]) == ["a", "b"]

        async def write() -> None:
            ctl = OpcUaController(parse_config({"controller": controller}).controller)
            await ctl.connect()
            await ctl.write_healthy("b", True)
            await ctl.close()

        asyncio.run(write())
        event = json.loads(proc.stdout.readline())
        assert event["event"] == "healthy" and event["station"] == "b" and event["healthy"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)

"""Positive verdicts: every part's verdict (pass too) is written against the PLC's part trigger."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from line_bridge.config import parse_config
from line_bridge.plc_sim import ModbusPlc, OpcUaPlc, modbus_station_map
from line_bridge.subscribers import topics_for

from .conftest import Beater, result, running_bridge, wait_for


@pytest.mark.parametrize("protocol", ["opcua", "modbus"])
def test_every_verdict_reaches_the_plc_pass_as_3(protocol: str) -> None:
    async def scenario() -> None:
        peer: Any = (
            OpcUaPlc(["s1"]) if protocol == "opcua" else ModbusPlc(modbus_station_map(["s1"]))
        )
        async with (
            peer as plc,
            running_bridge(plc.controller_config(), verdicts="positive") as bridge,
        ):
            beater = Beater(bridge, "s1").start()
            await wait_for(lambda: plc.record.healthy.get("s1") is True, 10, "healthy")
            for part, decision in [("p1", "pass"), ("p2", "reject"), ("p3", "manual")]:
                for _ in range(2):  # at-least-once: each verdict arrives twice, acts once
                    bridge.handle_message(
                        "lineguard/local/s1/verdict", result("s1", part, decision)
                    )
            # the reject topic is not this mode's input: ignored, counted, never written
            bridge.handle_message("lineguard/local/s1/reject", result("s1", "p9", "reject"))
            await wait_for(lambda: len(plc.record.rejects) >= 3, 10, "three verdicts")
            await asyncio.sleep(0.3)
            got = [(r.part_id, r.code) for r in plc.record.rejects]
            assert got == [("p1", 3), ("p2", 1), ("p3", 2)]
            assert bridge.invalid_messages == 1
            await beater.stop()

    asyncio.run(scenario())


def test_negative_mode_stays_the_default_and_ignores_verdicts() -> None:
    async def scenario() -> None:
        async with OpcUaPlc(["s1"]) as plc, running_bridge(plc.controller_config()) as bridge:
            beater = Beater(bridge, "s1").start()
            await wait_for(lambda: plc.record.healthy.get("s1") is True, 10, "healthy")
            bridge.handle_message("lineguard/local/s1/verdict", result("s1", "p1", "pass"))
            bridge.handle_message("lineguard/local/s1/reject", result("s1", "p2", "reject"))
            await wait_for(lambda: len(plc.record.rejects) >= 1, 10, "the reject")
            await asyncio.sleep(0.3)
            assert [(r.part_id, r.code) for r in plc.record.rejects] == [("p2", 1)]
            assert bridge.invalid_messages == 1
            await beater.stop()

    asyncio.run(scenario())


def test_the_mode_picks_the_topics_and_is_validated() -> None:
    assert topics_for(["s1"]) == ["lineguard/local/s1/reject", "lineguard/local/s1/heartbeat"]
    assert topics_for(["s1"], "positive") == [
        "lineguard/local/s1/verdict",
        "lineguard/local/s1/heartbeat",
    ]
    doc = json.loads(json.dumps(OpcUaPlc(["s1"]).controller_config()))
    with pytest.raises(ValueError, match="verdicts: must be one of"):
        parse_config({"controller": doc, "verdicts": "maybe"})

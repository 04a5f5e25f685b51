"""The bridge against a real Modbus TCP server (pymodbus) as the simulated PLC."""

from __future__ import annotations

import asyncio

import pytest

from line_bridge.config import ModbusStation
from line_bridge.modbus import decode_part_id, encode_part_id
from line_bridge.plc_sim import ModbusPlc, modbus_station_map

from .conftest import Beater, result, running_bridge, wait_for


def test_part_id_round_trips_through_registers() -> None:
    words = encode_part_id("P-000123", 8)
    assert len(words) == 8 and words[0] == (ord("P") << 8) | ord("-")
    assert decode_part_id(words) == "P-000123"
    # too long for the block: still a reject, and two ids sharing a prefix stay two ids
    a, b = "cam0-mj3k2x9q-000123", "cam0-mj3k2x9q-000124"
    assert decode_part_id(encode_part_id(a, 8)) != decode_part_id(encode_part_id(b, 8))
    assert decode_part_id(encode_part_id(a, 8)).startswith("cam0-mj~")
    assert len(decode_part_id(encode_part_id(a, 8))) == 16
    assert len(decode_part_id(encode_part_id(a, 2))) == 4  # a tiny block gets the hash only
    assert decode_part_id(encode_part_id(a, 2)) != decode_part_id(encode_part_id(b, 2))
    # a non-ASCII name cut mid-character: valid UTF-8 at a character boundary, no exception
    clipped = decode_part_id(encode_part_id("abcdefü-prüfung-0001.png", 8))
    assert clipped.startswith("abcdef~") and "\ufffd" not in clipped


def test_coil_and_register_map_per_station() -> None:
    async def scenario() -> None:
        stations = modbus_station_map(["station-1", "station-2"], part_id_registers=8)
        async with ModbusPlc(stations) as plc, running_bridge(plc.controller_config()) as bridge:
            beater = Beater(bridge, "station-2").start()  # only station-2's inspector is alive
            await wait_for(lambda: plc.record.healthy.get("station-2") is True, 10, "healthy")
            assert plc.record.healthy.get("station-1") is False
            for part, decision in (("a-1", "reject"), ("a-2", "manual"), ("a-1", "reject")):
                bridge.handle_message(
                    "lineguard/local/station-2/reject", result("station-2", part, decision)
                )
            await wait_for(lambda: len(plc.record.rejects) >= 2, 10, "rejects")
            await asyncio.sleep(0.3)
            assert [(r.station, r.part_id, r.code, r.counter) for r in plc.record.rejects] == [
                ("station-2", "a-1", 1, 1),
                ("station-2", "a-2", 2, 2),
            ]
            await wait_for(lambda: plc.record.alive.get("station-1", 0) >= 1, 10, "alive counter")
            await beater.stop()
            await wait_for(lambda: plc.record.healthy["station-2"] is False, 10, "healthy false")

    asyncio.run(scenario())


def test_plc_restart_restores_healthy_coil() -> None:
    async def scenario() -> None:
        plc = ModbusPlc(modbus_station_map(["station-1"]))
        await plc.start()
        try:
            async with running_bridge(plc.controller_config(timeout_s=0.5)) as bridge:
                beater = Beater(bridge, "station-1").start()
                await wait_for(lambda: plc.record.healthy.get("station-1") is True, 10, "healthy")
                await plc.stop()
                await wait_for(lambda: not bridge.plc_ok, 10, "PLC gone noticed")
                assert bridge.health()["stations"]["station-1"]["healthy"] is False
                await plc.start()
                await wait_for(lambda: plc.record.healthy.get("station-1") is True, 10, "restored")
                bridge.handle_message("lineguard/local/station-1/reject", result("station-1", "r"))
                await wait_for(lambda: plc.record.part_ids() == ["r"], 10, "reject after restart")
                await beater.stop()
            assert plc.record.healthy["station-1"] is False  # written false on shutdown
        finally:
            await plc.stop()

    asyncio.run(scenario())


def test_overlapping_register_maps_are_refused() -> None:
    from line_bridge.config import parse_config
    from line_bridge.errors import ConfigError

    stations = {
        "a": {"healthy_coil": 0, "reject_register": 100},
        "b": {"healthy_coil": 1, "reject_register": 110},  # a's block is 100..117
    }
    doc = {
        "controller": {
            "protocol": "modbus",
            "endpoint": "modbus+tcp://plc:502",
            "stations": stations,
        }
    }
    with pytest.raises(
        ConfigError, match=r"controller\.stations\.b: register 110 is also used by station a"
    ):
        parse_config(doc, "plant.yaml")
    assert ModbusStation(0, 100).block_size == 18

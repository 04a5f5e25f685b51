"""OPC UA with Basic256Sha256/SignAndEncrypt: a trusted client certificate works, another is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from line_bridge.config import parse_config
from line_bridge.errors import ControllerError
from line_bridge.opcua import OpcUaController
from line_bridge.plc_sim import OpcUaPlc, make_opcua_certificates

from .conftest import Beater, result, running_bridge, wait_for


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_opcua_certificates(tmp_path_factory.mktemp("opcua-certs"))


def _security(certs: dict[str, Path], who: str) -> dict[str, str]:
    return {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(certs[f"{who}_cert"]),
        "private_key": str(certs[f"{who}_key"]),
        "server_certificate": str(certs["server_cert"]),
    }


def test_trusted_certificate_writes_over_an_encrypted_session(certs: dict[str, Path]) -> None:
    async def scenario() -> None:
        async with OpcUaPlc(["station-1"], certificates=certs) as plc:
            settings = plc.controller_config(security=_security(certs, "client"))
            async with running_bridge(settings) as bridge:
                beater = Beater(bridge, "station-1").start()
                await wait_for(lambda: plc.record.healthy.get("station-1") is True, 10, "healthy")
                bridge.handle_message("lineguard/local/station-1/reject", result("station-1", "s1"))
                await wait_for(lambda: plc.record.part_ids() == ["s1"], 10, "reject")
                await beater.stop()

    asyncio.run(scenario())


def test_untrusted_client_certificate_is_refused_and_reported(certs: dict[str, Path]) -> None:
    async def scenario() -> None:
        async with OpcUaPlc(["station-1"], certificates=certs) as plc:
            config = parse_config(
                {"controller": plc.controller_config(security=_security(certs, "rogue"))}, "test"
            )
            with pytest.raises(ControllerError, match="BadCertificateUntrusted"):
                await OpcUaController(config.controller).connect()
            async with running_bridge(
                plc.controller_config(security=_security(certs, "rogue"))
            ) as bridge:
                beater = Beater(bridge, "station-1").start()
                await asyncio.sleep(1.0)
                health = bridge.health()
                assert health["plc"]["connected"] is False
                assert "BadCertificateUntrusted" in health["plc"]["last_error"]
                assert health["stations"]["station-1"]["healthy"] is False
                await beater.stop()
            assert plc.record.healthy == {}  # nothing was ever written
            assert await plc.read("station-1", "healthy") is False

    asyncio.run(scenario())


def test_unsecured_client_cannot_use_a_secured_plc(certs: dict[str, Path]) -> None:
    async def scenario() -> None:
        async with OpcUaPlc(["station-1"], certificates=certs) as plc:
            config = parse_config({"controller": plc.controller_config()}, "test")
            with pytest.raises(ControllerError):
                await OpcUaController(config.controller).connect()

    asyncio.run(scenario())

"""Modbus TCP implementation of :class:`LineController` (pymodbus async client)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from line_bridge.config import ControllerConfig, ModbusStation
from line_bridge.controller import LineController, next_counter
from line_bridge.errors import ControllerError

log = logging.getLogger(__name__)


def encode_part_id(part_id: str, registers: int) -> list[int]:
    """Part id → ``registers`` 16-bit words, two UTF-8 bytes each (big endian), zero padded.

    A part id longer than the block keeps a readable prefix, ``~`` and 8 hex characters of the
    SHA-256 of the whole id (only hex when the block is under 10 bytes), and is logged: cutting
    the end off would give every reject of a camera the same id, since the frame number is at
    the end (``cam0-<epoch>-000123``). The PLC still gets a reject either way.
    """
    raw = part_id.encode("utf-8")
    room = 2 * registers
    if len(raw) > room:
        digest = hashlib.sha256(raw).hexdigest().encode("ascii")
        if room >= 10:
            # cut on a character boundary: the prefix stays valid UTF-8 for the PLC's display
            prefix = raw[: room - 9].decode("utf-8", errors="ignore").encode("utf-8")
            clipped = prefix + b"~" + digest[:8]
        else:
            clipped = digest[:room]
        log.warning(
            "part id %r longer than %d bytes; %r for the PLC",
            part_id,
            room,
            clipped.decode("utf-8", errors="replace"),
        )
        raw = clipped
    raw = raw.ljust(2 * registers, b"\0")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def decode_part_id(words: list[int]) -> str:
    """Inverse of :func:`encode_part_id` (for simulated PLCs and tests)."""
    raw = b"".join(int(w).to_bytes(2, "big") for w in words)
    return raw.rstrip(b"\0").decode("utf-8", errors="replace")


class ModbusController(LineController):
    """Writes station signals to coils and holding registers from the configured map."""

    def __init__(self, config: ControllerConfig) -> None:
        if config.protocol != "modbus":
            raise ValueError(f"ModbusController needs protocol modbus, got {config.protocol}")
        self.config = config
        self._client: AsyncModbusTcpClient | None = None
        self.counters: dict[str, int] = {}

    def _station(self, station: str) -> ModbusStation:
        spec = self.config.stations[station]
        assert isinstance(spec, ModbusStation)
        return spec

    async def _call(self, what: str, coro: Any) -> Any:
        where = f"Modbus {self.config.endpoint} unit {self.config.unit}"
        try:
            result = await asyncio.wait_for(coro, self.config.timeout_s + 0.5)
        except TimeoutError:
            raise ControllerError(f"{where}: {what} timed out") from None
        except Exception as exc:  # noqa: BLE001 - pymodbus raises ModbusException, OSError, ...
            raise ControllerError(f"{where}: {what} failed: {type(exc).__name__}: {exc}") from exc
        if result.isError():
            raise ControllerError(f"{where}: {what} refused by the PLC: {result}")
        return result

    async def connect(self) -> None:
        """Connect and read each station's reject counter."""
        await self.close()
        host, port = self.config.host_port
        # reconnect_delay=0: the bridge owns reconnection (it must re-write state after it)
        client = AsyncModbusTcpClient(
            host, port=port, timeout=self.config.timeout_s, retries=0, reconnect_delay=0
        )
        try:
            ok = await asyncio.wait_for(client.connect(), self.config.timeout_s + 0.5)
        except Exception as exc:  # noqa: BLE001
            client.close()
            raise ControllerError(f"Modbus {self.config.endpoint}: connect failed: {exc}") from exc
        if not ok:
            client.close()
            raise ControllerError(f"Modbus {self.config.endpoint}: connection refused")
        self._client = client
        try:
            for station in self.config.stations:
                spec = self._station(station)
                address = spec.reject_register + spec.part_id_registers + 1
                result = await self._call(
                    f"reading the reject counter at register {address} (station {station})",
                    client.read_holding_registers(address, count=1, device_id=self.config.unit),
                )
                self.counters[station] = int(result.registers[0])
        except ControllerError:
            await self.close()
            raise
        log.info("connected to Modbus PLC %s", self.config.endpoint)

    async def close(self) -> None:
        """Close the connection; never raises."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing Modbus client: %s", exc)

    def _require(self) -> AsyncModbusTcpClient:
        if self._client is None or not self._client.connected:
            raise ControllerError(f"Modbus {self.config.endpoint}: not connected")
        return self._client

    async def write_healthy(self, station: str, healthy: bool) -> None:
        """Write the station's healthy coil."""
        spec = self._station(station)
        await self._call(
            f"writing healthy coil {spec.healthy_coil} (station {station})",
            self._require().write_coil(spec.healthy_coil, healthy, device_id=self.config.unit),
        )

    async def write_reject(self, station: str, part_id: str, code: int) -> int:
        """Write part id, decision and the next counter with one Write Multiple Registers."""
        spec = self._station(station)
        counter = next_counter(self.counters.get(station, 0))
        words = encode_part_id(part_id, spec.part_id_registers) + [code, counter]
        await self._call(
            f"writing reject of part {part_id} at register {spec.reject_register} (station {station})",
            self._require().write_registers(
                spec.reject_register, words, device_id=self.config.unit
            ),
        )
        self.counters[station] = counter
        return counter

    async def write_alive(self, station: str, counter: int) -> None:
        """Write the alive counter register when configured."""
        spec = self._station(station)
        if spec.alive_register is not None:
            await self._call(
                f"writing alive register {spec.alive_register} (station {station})",
                self._require().write_register(
                    spec.alive_register, counter % 65536, device_id=self.config.unit
                ),
            )

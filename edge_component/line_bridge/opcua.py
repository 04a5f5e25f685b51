"""OPC UA implementation of :class:`LineController` (asyncua client)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from asyncua import Client, ua
from asyncua.common.node import Node
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from line_bridge.config import ControllerConfig, OpcUaStation
from line_bridge.controller import LineController, next_counter
from line_bridge.errors import ControllerError

log = logging.getLogger(__name__)


class OpcUaController(LineController):
    """Writes station signals to OPC UA variables given by node id in the configuration."""

    def __init__(self, config: ControllerConfig) -> None:
        if config.protocol != "opcua":
            raise ValueError(f"OpcUaController needs protocol opcua, got {config.protocol}")
        self.config = config
        self._client: Client | None = None
        self._nodes: dict[str, dict[str, Node]] = {}
        self._types: dict[str, dict[str, ua.VariantType]] = {}
        self.counters: dict[str, int] = {}

    def _station(self, station: str) -> OpcUaStation:
        spec = self.config.stations[station]
        assert isinstance(spec, OpcUaStation)
        return spec

    async def _guard(self, what: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.config.timeout_s)
        except ControllerError:
            raise
        except TimeoutError:
            raise ControllerError(
                f"OPC UA {self.config.endpoint}: {what} timed out after {self.config.timeout_s} s"
            ) from None
        except Exception as exc:  # noqa: BLE001 - asyncua raises many types; all mean "PLC failed"
            raise ControllerError(
                f"OPC UA {self.config.endpoint}: {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def connect(self) -> None:
        """Open a (secured, when configured) session and resolve every station's nodes."""
        await self.close()
        client = Client(self.config.endpoint, timeout=self.config.timeout_s)
        sec = self.config.security
        if sec is not None:
            client.application_uri = sec.application_uri
            mode = getattr(ua.MessageSecurityMode, sec.mode)
            await self._guard(
                "security setup",
                client.set_security(
                    SecurityPolicyBasic256Sha256,
                    certificate=sec.certificate,
                    private_key=sec.private_key,
                    server_certificate=sec.server_certificate,
                    mode=mode,
                ),
            )
        await self._guard("connect", client.connect())
        self._client = client
        try:
            for station in self.config.stations:
                spec = self._station(station)
                names = {
                    "healthy": spec.healthy,
                    "part_id": spec.reject_part_id,
                    "decision": spec.reject_decision,
                    "counter": spec.reject_counter,
                }
                if spec.alive:
                    names["alive"] = spec.alive
                nodes = {k: client.get_node(v) for k, v in names.items()}
                types = {}
                for key, node in nodes.items():
                    types[key] = await self._guard(
                        f"reading the data type of {names[key]} (station {station})",
                        node.read_data_type_as_variant_type(),
                    )
                self._nodes[station], self._types[station] = nodes, types
                current = await self._guard(
                    f"reading {spec.reject_counter}", nodes["counter"].read_value()
                )
                self.counters[station] = int(current or 0)
        except ControllerError:
            await self.close()
            raise
        log.info("connected to OPC UA PLC %s", self.config.endpoint)

    async def close(self) -> None:
        """Disconnect; errors while closing are logged, never raised."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(), self.config.timeout_s)
        except Exception as exc:  # noqa: BLE001 - closing a dead session may fail in any way
            log.debug("closing OPC UA session: %s", exc)
            # a dead connection leaves background tasks; close the socket ourselves
            with contextlib.suppress(Exception):
                client.disconnect_socket()

    def _require(self, station: str) -> Client:
        if self._client is None or station not in self._nodes:
            raise ControllerError(f"OPC UA {self.config.endpoint}: not connected")
        return self._client

    def _value(self, station: str, key: str, value: Any) -> ua.DataValue:
        return ua.DataValue(ua.Variant(value, self._types[station][key]))

    async def _write(self, station: str, items: list[tuple[str, Any]], what: str) -> None:
        client = self._require(station)
        nodes = [self._nodes[station][k] for k, _ in items]
        values = [self._value(station, k, v) for k, v in items]
        await self._guard(f"writing {what} (station {station})", client.write_values(nodes, values))

    async def write_healthy(self, station: str, healthy: bool) -> None:
        """Write the station's healthy variable."""
        await self._write(station, [("healthy", healthy)], "healthy")

    async def write_reject(self, station: str, part_id: str, code: int) -> int:
        """Write part id, decision and the next counter in one Write request."""
        counter = next_counter(self.counters.get(station, 0))
        await self._write(
            station,
            [("part_id", part_id), ("decision", code), ("counter", counter)],
            f"reject of part {part_id}",
        )
        self.counters[station] = counter
        return counter

    async def write_alive(self, station: str, counter: int) -> None:
        """Write the bridge's alive counter when the station has an alive node."""
        if "alive" in self._nodes.get(station, {}):
            await self._write(station, [("alive", counter)], "alive counter")

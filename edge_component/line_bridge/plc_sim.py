"""Simulated PLCs for tests, the end-to-end run and the demo: a real OPC UA server and a real
Modbus TCP server exposing each station's signals, recording every write they receive.

``python -m line_bridge.plc_sim --protocol opcua --port 4840 --stations station-1`` runs one and
prints the ``controller`` section a bridge configuration needs, then one JSON line per write.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from line_bridge.config import ModbusStation
from line_bridge.modbus import decode_part_id

NAMESPACE = "urn:lineguard:plc-sim"
SERVER_URI = "urn:lineguard:plc-sim"
BRIDGE_URI = "urn:lineguard:line-bridge"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PlcReject:
    """One reject command as the PLC received it."""

    station: str
    part_id: str
    code: int
    counter: int
    received: float  # POSIX seconds at the PLC


@dataclass
class PlcRecord:
    """Everything a simulated PLC has been told since it started."""

    rejects: list[PlcReject] = field(default_factory=list)
    healthy: dict[str, bool] = field(default_factory=dict)
    healthy_history: list[tuple[float, str, bool]] = field(default_factory=list)
    alive: dict[str, int] = field(default_factory=dict)
    listeners: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)

    def _emit(self, kind: str, doc: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(kind, doc)

    def set_healthy(self, station: str, value: bool) -> None:
        """Record a healthy write (history only on change)."""
        if self.healthy.get(station) != value:
            self.healthy_history.append((time.time(), station, value))
            self._emit("healthy", {"station": station, "healthy": value})
        self.healthy[station] = value

    def add_reject(self, reject: PlcReject) -> None:
        """Record a reject command."""
        self.rejects.append(reject)
        self._emit(
            "reject",
            {"station": reject.station, "part_id": reject.part_id, "code": reject.code},
        )

    def part_ids(self, station: str | None = None) -> list[str]:
        """Part ids the PLC was told to reject, in order."""
        return [r.part_id for r in self.rejects if station is None or r.station == station]


def make_opcua_certificates(directory: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """Self-signed OPC UA application certificates (PEM): server, trusted and untrusted client.

    Returns paths keyed ``server_cert``, ``server_key``, ``client_cert``, ``client_key``,
    ``rogue_cert``, ``rogue_key`` and ``trusted_dir`` (the server's trust list: the client only).
    """
    from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key
    from asyncua.crypto.cert_gen import generate_self_signed_app_certificate as make_cert
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trusted").mkdir(exist_ok=True)
    names = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    out: dict[str, Path] = {"trusted_dir": directory / "trusted"}
    for role, uri, usage in (
        ("server", SERVER_URI, ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", BRIDGE_URI, ExtendedKeyUsageOID.CLIENT_AUTH),
        ("rogue", BRIDGE_URI, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = generate_private_key()
        alt = [x509.UniformResourceIdentifier(uri), *names]
        with contextlib.suppress(ValueError):
            import ipaddress

            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        cert = make_cert(key, f"lineguard {role}", {}, alt, [usage], days=30)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        out[f"{role}_cert"] = directory / f"{role}.pem"
        out[f"{role}_key"] = directory / f"{role}.key.pem"
        out[f"{role}_cert"].write_bytes(pem)
        out[f"{role}_key"].write_bytes(dump_private_key_as_pem(key))
        if role == "client":
            (directory / "trusted" / "client.der").write_bytes(
                cert.public_bytes(serialization.Encoding.DER)
            )
    return out


_SIGNALS = {
    "healthy": ("Healthy", "Boolean", False),
    "reject_part_id": ("RejectPartId", "String", ""),
    "reject_decision": ("RejectDecision", "Int16", 0),
    "reject_counter": ("RejectCounter", "UInt16", 0),
    "alive": ("BridgeAlive", "UInt32", 0),
}


class OpcUaPlc:
    """An asyncua server with a ``<station>`` object per station holding its signal variables.

    With ``certificates`` (from :func:`make_opcua_certificates`) it only offers
    Basic256Sha256/SignAndEncrypt and only accepts client certificates in the trust list.
    """

    def __init__(
        self,
        stations: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        certificates: dict[str, Path] | None = None,
    ) -> None:
        self.stations = list(stations)
        self.host, self.port = host, port or free_port()
        self.certificates = certificates
        self.record = PlcRecord()
        self.ns = 2
        self._server: Any = None
        self._nodes: dict[Any, tuple[str, str]] = {}

    @property
    def endpoint(self) -> str:
        """The ``opc.tcp://`` URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}"

    def node_id(self, station: str, signal: str) -> str:
        """The string node id of a station's signal (``healthy``, ``reject_counter``, ...)."""
        return f"ns={self.ns};s={station}.{_SIGNALS[signal][0]}"

    def station_config(self, station: str, alive: bool = True) -> dict[str, str]:
        """The bridge configuration block for ``station`` (node ids)."""
        keys = [k for k in _SIGNALS if alive or k != "alive"]
        return {k: self.node_id(station, k) for k in keys}

    def controller_config(self, **extra: Any) -> dict[str, Any]:
        """The bridge's whole ``controller`` section for this PLC."""
        return {
            "protocol": "opcua",
            "endpoint": self.endpoint,
            "stations": {s: self.station_config(s) for s in self.stations},
            **extra,
        }

    async def start(self) -> None:
        """Start serving (again, after :meth:`stop`: a power-cycled PLC with fresh memory)."""
        from asyncua import Server, ua
        from asyncua.common.callback import CallbackType

        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("LineGuard simulated PLC")
        await server.set_application_uri(SERVER_URI)
        if self.certificates:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            await server.load_certificate(str(self.certificates["server_cert"]))
            await server.load_private_key(str(self.certificates["server_key"]))
            store = TrustStore([self.certificates["trusted_dir"]], [])
            await store.load()
            server.set_certificate_validator(
                CertificateValidator(
                    CertificateValidatorOptions.TRUSTED_VALIDATION
                    | CertificateValidatorOptions.PEER_CLIENT,
                    store,
                )
            )
        self.ns = await server.register_namespace(NAMESPACE)
        objects = server.nodes.objects
        self._nodes.clear()
        self.record.healthy.clear()
        for station in self.stations:
            folder = await objects.add_object(
                ua.NodeId.from_string(f"ns={self.ns};s={station}"),
                ua.QualifiedName(station, self.ns),
            )
            for signal, (name, vtype, initial) in _SIGNALS.items():
                node_id = ua.NodeId.from_string(self.node_id(station, signal))
                var = await folder.add_variable(
                    node_id,
                    ua.QualifiedName(name, self.ns),
                    ua.Variant(initial, getattr(ua.VariantType, vtype)),
                )
                await var.set_writable()
                self._nodes[node_id] = (station, signal)
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        """Stop serving; connected clients lose their session."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _on_write(self, event: Any, dispatcher: Any) -> None:
        received = time.time()
        values: dict[str, dict[str, Any]] = {}
        for item, status in zip(
            event.request_params.NodesToWrite, event.response_params, strict=False
        ):
            target = self._nodes.get(item.NodeId)
            if target is None or not status.is_good():
                continue
            values.setdefault(target[0], {})[target[1]] = item.Value.Value.Value
        for station, written in values.items():
            if "healthy" in written:
                self.record.set_healthy(station, bool(written["healthy"]))
            if "alive" in written:
                self.record.alive[station] = int(written["alive"])
            if "reject_counter" in written:
                part_id = written.get("reject_part_id")
                code = written.get("reject_decision")
                if part_id is None or code is None:  # written separately: read the current values
                    part_id = await self.read(station, "reject_part_id")
                    code = await self.read(station, "reject_decision")
                self.record.add_reject(
                    PlcReject(
                        station, str(part_id), int(code), int(written["reject_counter"]), received
                    )
                )

    async def read(self, station: str, signal: str) -> Any:
        """Current value of a station's signal."""
        assert self._server is not None, "PLC not running"
        return await self._server.get_node(self.node_id(station, signal)).read_value()

    async def __aenter__(self) -> OpcUaPlc:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def modbus_station_map(
    stations: Sequence[str], part_id_registers: int = 16
) -> dict[str, ModbusStation]:
    """A non-overlapping coil/register map: station i uses coil i and registers 100*(i+1)..."""
    return {
        name: ModbusStation(
            healthy_coil=i,
            reject_register=100 * (i + 1),
            part_id_registers=part_id_registers,
            alive_register=10 + i,
        )
        for i, name in enumerate(stations)
    }


class ModbusPlc:
    """A pymodbus TCP server with the coils and holding registers of each station's map."""

    def __init__(
        self,
        stations: dict[str, ModbusStation],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        unit: int = 1,
    ) -> None:
        self.stations = stations
        self.host, self.port, self.unit = host, port or free_port(), unit
        self.record = PlcRecord()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """The ``modbus+tcp://`` URL the bridge configuration uses."""
        return f"modbus+tcp://{self.host}:{self.port}"

    def controller_config(self, **extra: Any) -> dict[str, Any]:
        """The bridge's whole ``controller`` section for this PLC."""
        return {
            "protocol": "modbus",
            "endpoint": self.endpoint,
            "unit": self.unit,
            "stations": {
                name: {
                    "healthy_coil": s.healthy_coil,
                    "reject_register": s.reject_register,
                    "part_id_registers": s.part_id_registers,
                    "alive_register": s.alive_register,
                }
                for name, s in self.stations.items()
            },
            **extra,
        }

    async def start(self) -> None:
        """Start serving with zeroed memory."""
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        coils = max(s.healthy_coil for s in self.stations.values()) + 1
        regs = max(
            max(s.reject_register + s.block_size, (s.alive_register or 0) + 1)
            for s in self.stations.values()
        )
        device = SimDevice(
            id=self.unit,
            simdata=(
                [SimData(0, count=coils, values=False, datatype=DataType.BITS)],
                [SimData(0, count=1, values=False, datatype=DataType.BITS)],
                [SimData(0, count=regs, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._on_request,
        )
        self.record.healthy.clear()
        server = ModbusTcpServer(device, address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        """Stop serving."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> None:
        if values is None:
            return None
        received = time.time()
        for name, st in self.stations.items():
            if function_code in (5, 15) and address <= st.healthy_coil < address + len(values):
                self.record.set_healthy(name, bool(values[st.healthy_coil - address]))
            elif function_code in (6, 16):
                if address == st.reject_register and len(values) == st.block_size:
                    words = [int(v) for v in values]
                    self.record.add_reject(
                        PlcReject(
                            name,
                            decode_part_id(words[: st.part_id_registers]),
                            words[-2],
                            words[-1],
                            received,
                        )
                    )
                elif st.alive_register is not None and address == st.alive_register:
                    self.record.alive[name] = int(values[0])
        return None

    async def __aenter__(self) -> ModbusPlc:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(args: argparse.Namespace) -> None:
    stations = [s for s in args.stations.split(",") if s]
    plc: OpcUaPlc | ModbusPlc
    if args.protocol == "opcua":
        plc = OpcUaPlc(stations, host=args.host, port=args.port)
    else:
        plc = ModbusPlc(modbus_station_map(stations), host=args.host, port=args.port)
    plc.record.listeners.append(
        lambda kind, doc: print(json.dumps({"event": kind, "ts": time.time(), **doc}), flush=True)
    )
    await plc.start()
    print(json.dumps({"controller": plc.controller_config()}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await plc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a simulated PLC until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m line_bridge.plc_sim",
        description="Simulated PLC (OPC UA or Modbus TCP) with each station's bridge signals.",
    )
    parser.add_argument("--protocol", choices=["opcua", "modbus"], default="opcua")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--stations", default="station-1", help="comma-separated station names")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

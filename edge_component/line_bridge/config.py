"""The bridge configuration: read once into frozen, typed objects, validated with clear errors.

The same document is the recipe's ``DefaultConfiguration`` (read through IPC under Greengrass)
and a JSON or YAML file (``python -m line_bridge run --config FILE``)::

    device: core-1
    heartbeat_window_s: 3.0
    transport: {kind: mqtt, host: 127.0.0.1, port: 8883, ca_file: ..., cert_file: ..., key_file: ...}
    controller:
      protocol: opcua
      endpoint: opc.tcp://10.0.0.5:4840
      stations:
        station-1: {healthy: "ns=2;s=station-1.Healthy", reject_part_id: ..., ...}
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from line_bridge.errors import ConfigError

STATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PROTOCOLS = ("opcua", "modbus")
TRANSPORTS = ("mqtt", "greengrass")
SECURITY_MODES = ("Sign", "SignAndEncrypt")
SECURITY_POLICIES = ("Basic256Sha256",)
MODBUS_MAX_ADDRESS = 65535
VERDICT_MODES = ("negative", "positive")
# in the per-station form, controller.signals strings may name the station; the nucleus leaves
# it alone: its interpolation only matches {namespace:key} (KernelConfigResolver.java,
# SAME_COMPONENT_INTERPOLATION_REGEX)
STATION_PLACEHOLDER = "{station}"


@dataclass(frozen=True)
class OpcUaStation:
    """OPC UA node ids of one station's signals on the PLC."""

    healthy: str
    reject_part_id: str
    reject_decision: str
    reject_counter: str
    alive: str | None = None


@dataclass(frozen=True)
class OpcUaSecurity:
    """Message security of the OPC UA session: policy, mode and the bridge's certificate."""

    certificate: str
    private_key: str
    policy: str = "Basic256Sha256"
    mode: str = "SignAndEncrypt"
    server_certificate: str | None = None
    application_uri: str = "urn:lineguard:line-bridge"


@dataclass(frozen=True)
class ModbusStation:
    """Modbus addresses of one station's signals.

    ``healthy_coil`` is a coil; the reject block is ``part_id_registers`` holding registers with
    the part id (ASCII, two characters per register, zero padded), one register with the
    decision code (1 reject, 2 manual) and one with the reject counter, starting at
    ``reject_register``, written in one request. ``alive_register`` is an optional counter.
    """

    healthy_coil: int
    reject_register: int
    part_id_registers: int = 16
    alive_register: int | None = None

    @property
    def block_size(self) -> int:
        """Registers in the reject block: part id, decision, counter."""
        return self.part_id_registers + 2


@dataclass(frozen=True)
class ControllerConfig:
    """Which PLC, over which protocol, and where each station's signals live."""

    protocol: str
    endpoint: str
    stations: Mapping[str, OpcUaStation | ModbusStation]
    timeout_s: float = 2.0
    unit: int = 1
    security: OpcUaSecurity | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        """Host and port of the endpoint (default port 4840 for OPC UA, 502 for Modbus)."""
        parts = urlsplit(self.endpoint)
        default = 4840 if self.protocol == "opcua" else 502
        return parts.hostname or "127.0.0.1", parts.port or default


@dataclass(frozen=True)
class TransportConfig:
    """How the bridge receives the inspector's local messages: Greengrass IPC or MQTT."""

    kind: str
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "line-bridge"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class BridgeConfig:
    """The whole bridge configuration."""

    controller: ControllerConfig
    transport: TransportConfig
    device: str = "local"
    heartbeat_window_s: float = 3.0
    refresh_interval_s: float = 1.0
    reject_max_age_s: float = 10.0
    health_interval_s: float = 5.0
    health_topic: str = "lineguard/local/line-bridge/health"
    dedup_size: int = 4096
    identity_poll_s: float = 30.0
    verdicts: str = "negative"
    stations: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "stations", tuple(sorted(self.controller.stations)))


class _Reader:
    """Reads typed fields out of a mapping, raising errors that name the field."""

    def __init__(self, where: str, doc: Any, path: str = "") -> None:
        self.where, self.doc, self.path = where, doc, path
        if not isinstance(doc, dict):
            raise ConfigError(where, path.rstrip(".") or "(root)", "must be a mapping")

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.where, f"{self.path}{key}", message)

    def child(self, key: str) -> _Reader:
        if key not in self.doc:
            raise self.fail(key, "is required")
        return _Reader(self.where, self.doc[key], f"{self.path}{key}.")

    def has(self, key: str) -> bool:
        return self.doc.get(key) is not None

    def get(
        self,
        key: str,
        kind: type,
        default: Any = ...,
        check: Callable[[Any], bool] | None = None,
        expect: str = "",
    ) -> Any:
        if key not in self.doc or self.doc[key] is None:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.doc[key]
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif kind is int:
            # Greengrass hands numbers over as JSON, where 502 may arrive as 502.0
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok or (check is not None and not check(value)):
            raise self.fail(key, f"must be {expect or kind.__name__}, got {value!r}")
        return value

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(set(self.doc) - allowed)
        if extra:
            raise self.fail(extra[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _positive(value: float) -> bool:
    return value > 0


def _address(value: int) -> bool:
    return 0 <= value <= MODBUS_MAX_ADDRESS


def _fields(cls: type) -> set[str]:
    return set(cls.__dataclass_fields__)  # type: ignore[attr-defined]


def _opcua_station(reader: _Reader) -> OpcUaStation:
    reader.unknown(_fields(OpcUaStation))

    def node(key: str, default: Any = ...) -> Any:
        return reader.get(
            key, str, default, lambda v: "=" in v, "an OPC UA node id like 'ns=2;s=X'"
        )

    return OpcUaStation(
        healthy=node("healthy"),
        reject_part_id=node("reject_part_id"),
        reject_decision=node("reject_decision"),
        reject_counter=node("reject_counter"),
        alive=node("alive", None),
    )


def _modbus_station(reader: _Reader) -> ModbusStation:
    reader.unknown(_fields(ModbusStation))
    addr = "an address 0..65535"
    station = ModbusStation(
        healthy_coil=reader.get("healthy_coil", int, check=_address, expect=addr),
        reject_register=reader.get("reject_register", int, check=_address, expect=addr),
        part_id_registers=reader.get(
            "part_id_registers", int, 16, lambda v: 1 <= v <= 64, "an integer 1..64"
        ),
        alive_register=reader.get("alive_register", int, None, _address, addr),
    )
    if station.reject_register + station.block_size - 1 > MODBUS_MAX_ADDRESS:
        raise reader.fail("reject_register", "reject block runs past register 65535")
    if station.alive_register is not None and (
        station.reject_register
        <= station.alive_register
        < station.reject_register + station.block_size
    ):
        raise reader.fail("alive_register", "overlaps the reject block")
    return station


def _security(reader: _Reader) -> OpcUaSecurity:
    reader.unknown(_fields(OpcUaSecurity))
    return OpcUaSecurity(
        certificate=reader.get("certificate", str),
        private_key=reader.get("private_key", str),
        policy=reader.get(
            "policy",
            str,
            "Basic256Sha256",
            lambda v: v in SECURITY_POLICIES,
            f"one of {SECURITY_POLICIES}",
        ),
        mode=reader.get(
            "mode", str, "SignAndEncrypt", lambda v: v in SECURITY_MODES, f"one of {SECURITY_MODES}"
        ),
        server_certificate=reader.get("server_certificate", str, None),
        application_uri=reader.get("application_uri", str, "urn:lineguard:line-bridge"),
    )


def _controller(reader: _Reader) -> ControllerConfig:
    reader.unknown(_fields(ControllerConfig))
    protocol = reader.get(
        "protocol", str, check=lambda v: v in PROTOCOLS, expect=f"one of {PROTOCOLS}"
    )
    scheme = "opc.tcp" if protocol == "opcua" else "modbus+tcp"
    endpoint = reader.get(
        "endpoint",
        str,
        check=lambda v: urlsplit(v).scheme == scheme and bool(urlsplit(v).hostname),
        expect=f"a URL like {scheme}://host:port",
    )
    stations_reader = reader.child("stations")
    if not stations_reader.doc:
        raise reader.fail("stations", "must name at least one station")
    stations: dict[str, OpcUaStation | ModbusStation] = {}
    for name in stations_reader.doc:
        if not isinstance(name, str) or not STATION.match(name):
            raise stations_reader.fail(str(name), "station names are [A-Za-z0-9_.-], up to 64")
        child = stations_reader.child(name)
        stations[name] = _opcua_station(child) if protocol == "opcua" else _modbus_station(child)
    if protocol == "modbus":
        _check_modbus_overlap(stations_reader, stations)
    security = None
    if reader.has("security"):
        if protocol != "opcua":
            raise reader.fail("security", "only applies to protocol opcua")
        security = _security(reader.child("security"))
    return ControllerConfig(
        protocol=protocol,
        endpoint=endpoint,
        stations=stations,
        timeout_s=reader.get("timeout_s", float, 2.0, _positive, "a positive number"),
        unit=reader.get("unit", int, 1, lambda v: 0 <= v <= 255, "an integer 0..255"),
        security=security,
    )


def _check_modbus_overlap(reader: _Reader, stations: Mapping[str, Any]) -> None:
    used: dict[tuple[str, int], str] = {}
    for name, st in stations.items():
        spans = [("coil", st.healthy_coil)]
        spans += [
            ("register", a) for a in range(st.reject_register, st.reject_register + st.block_size)
        ]
        if st.alive_register is not None:
            spans.append(("register", st.alive_register))
        for span in spans:
            if span in used and used[span] != name:
                raise reader.fail(name, f"{span[0]} {span[1]} is also used by station {used[span]}")
            used[span] = name


def _transport(reader: _Reader) -> TransportConfig:
    reader.unknown(_fields(TransportConfig))
    kind = reader.get("kind", str, check=lambda v: v in TRANSPORTS, expect=f"one of {TRANSPORTS}")
    config = TransportConfig(
        kind=kind,
        host=reader.get("host", str, "127.0.0.1"),
        port=reader.get("port", int, 1883, lambda v: 1 <= v <= 65535, "a port 1..65535"),
        client_id=reader.get("client_id", str, "line-bridge", bool, "a non-empty string"),
        ca_file=reader.get("ca_file", str, None),
        cert_file=reader.get("cert_file", str, None),
        key_file=reader.get("key_file", str, None),
    )
    if (config.cert_file is None) != (config.key_file is None):
        raise reader.fail("cert_file", "cert_file and key_file go together")
    return config


def parse_config(doc: Any, where: str = "configuration") -> BridgeConfig:
    """Validate a configuration document and return it typed; raise :class:`ConfigError`."""
    top = _Reader(where, doc)
    # accessControl sits beside the settings in a recipe's DefaultConfiguration
    top.unknown((_fields(BridgeConfig) - {"stations"}) | {"accessControl"})
    window = top.get("heartbeat_window_s", float, 3.0, _positive, "a positive number of seconds")
    return BridgeConfig(
        controller=_controller(top.child("controller")),
        transport=_transport(top.child("transport"))
        if top.has("transport")
        else TransportConfig("mqtt"),
        device=top.get("device", str, "local", bool, "a non-empty string"),
        heartbeat_window_s=window,
        refresh_interval_s=top.get(
            "refresh_interval_s", float, 1.0, _positive, "a positive number"
        ),
        reject_max_age_s=top.get("reject_max_age_s", float, 10.0, _positive, "a positive number"),
        health_interval_s=top.get("health_interval_s", float, 5.0, _positive, "a positive number"),
        health_topic=top.get("health_topic", str, "lineguard/local/line-bridge/health"),
        dedup_size=top.get("dedup_size", int, 4096, lambda v: v >= 16, "an integer >= 16"),
        identity_poll_s=top.get("identity_poll_s", float, 30.0, _positive, "a positive number"),
        verdicts=top.get(
            "verdicts", str, "negative", lambda v: v in VERDICT_MODES, f"one of {VERDICT_MODES}"
        ),
    )


@dataclass(frozen=True)
class ComponentConfig:
    """The component configuration: one :class:`BridgeConfig` per station it can serve.

    ``by_identity`` is true for the per-station form (top-level ``stations``): a device serves
    the one station its identity names. The explicit form (``controller.stations``) serves every
    station it lists, whatever the identity (a per-device configuration, or a run outside
    Greengrass).
    """

    by_station: Mapping[str, BridgeConfig]
    by_identity: bool
    explicit: BridgeConfig | None = None

    def for_station(self, station: str) -> BridgeConfig:
        """The bridge configuration of ``station``; raise :class:`ConfigError` if it has none."""
        if station not in self.by_station:
            known = ", ".join(sorted(self.by_station)) or "none"
            raise ConfigError(
                "component configuration",
                f"stations.{station}",
                f"no settings for this device's station (configured: {known})",
            )
        return self.by_station[station]


def _substitute(value: Any, station: str) -> Any:
    if isinstance(value, str):
        return value.replace(STATION_PLACEHOLDER, station)
    return value


def parse_component_config(doc: Any, where: str = "configuration") -> ComponentConfig:
    """Validate either configuration form; every station's settings are checked up front."""
    top = _Reader(where, doc)
    if "stations" not in top.doc:
        config = parse_config(doc, where)
        return ComponentConfig({s: config for s in config.stations}, False, config)
    rest = {k: v for k, v in top.doc.items() if k != "stations"}
    stations = top.child("stations")
    if not stations.doc:
        raise top.fail("stations", "must name at least one station")
    defaults = _Reader(where, rest.get("controller", {}), "controller.")
    if "stations" in defaults.doc:
        raise defaults.fail("stations", "give stations at the top level or here, not both")
    template = defaults.doc.get("signals")
    base = {k: v for k, v in defaults.doc.items() if k != "signals"}
    by_station: dict[str, BridgeConfig] = {}
    for name in stations.doc:
        if not isinstance(name, str) or not STATION.match(name):
            raise stations.fail(str(name), "station names are [A-Za-z0-9_.-], up to 64")
        entry = stations.child(name)
        signals = entry.doc.get("signals", template)
        if signals is None:
            raise entry.fail("signals", "is required (no controller.signals default)")
        if isinstance(signals, dict):
            signals = {k: _substitute(v, name) for k, v in signals.items()}
        controller = {**base, **{k: v for k, v in entry.doc.items() if k != "signals"}}
        controller["stations"] = {name: signals}
        try:
            by_station[name] = parse_config({**rest, "controller": controller}, where)
        except ConfigError as exc:
            # the merged document's path, said from the station the setting is for
            raise ConfigError(where, f"stations.{name} ({exc.field_path})", exc.reason) from None
    return ComponentConfig(by_station, True)


def load_config(path: Path | str) -> BridgeConfig:
    """Read a JSON or YAML configuration file and validate it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read ({exc.strerror or exc})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # only needed for YAML files; the device runtime reads JSON

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one clear line
        raise ConfigError(
            str(path), "", f"not valid {path.suffix.lstrip('.') or 'JSON'} ({exc})"
        ) from None
    return parse_config(doc, str(path))

"""A production line on this machine: broker, simulated PLC, line bridges, inspector processes.

Everything runs as it would on the plant floor, only on 127.0.0.1: a mosquitto broker with mutual
TLS and an ACL per identity stands in for the Greengrass local pub/sub and for IoT Core, each core
device runs ``python -m inspector run`` (MQTT transport) and ``python -m line_bridge run``, and a
simulated OPC UA PLC records what the bridges write. An observer identity listens to the local
reject topics (to time decision → PLC) and to the plant's upstream topics (what the cloud would
receive). Used by ``make demo`` and ``make e2e-line``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from demo.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parents[1]
OBSERVER = "observer"


@dataclass(frozen=True)
class Device:
    """A core device at one station: its thing name and how many cameras it serves."""

    name: str
    station: str
    cameras: int = 1

    @property
    def bridge(self) -> str:
        """The line bridge's MQTT identity on this device."""
        return f"{self.name}-bridge"


@dataclass
class Upstream:
    """What reached the plant's upstream topics, as the cloud would receive it."""

    results: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    publishes: int = 0
    payload_bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll every 10 ms; return the seconds waited or raise ``TimeoutError`` naming ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


class PlcThread:
    """A simulated PLC serving from its own event loop thread (the harness itself blocks)."""

    def __init__(self, plc: Any) -> None:
        self.plc = plc
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="plc", daemon=True)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 20) -> Any:
        """Run a coroutine on the PLC's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        """Start the loop thread and the server."""
        self.thread.start()
        self.call(self.plc.start())

    def stop(self) -> None:
        """Stop the server and the loop thread."""
        if not self.thread.is_alive():
            return
        try:
            self.call(self.plc.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def child_env() -> dict[str, str]:
    """Environment for the component processes: the repository and edge_component importable."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "edge_component"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


class LocalLine:
    """Broker + simulated PLC (OPC UA or Modbus) + a line bridge per device (+ inspectors)."""

    def __init__(
        self,
        workdir: Path,
        *,
        plant: str,
        line: str,
        devices: Sequence[Device],
        heartbeat_window_s: float = 1.0,
        protocol: str = "opcua",
    ) -> None:
        from line_bridge.plc_sim import ModbusPlc, OpcUaPlc, modbus_station_map

        self.workdir = workdir
        self.plant, self.line = plant, line
        self.devices = {d.name: d for d in devices}
        self.heartbeat_window_s = heartbeat_window_s
        acl: dict[str, list[str]] = {
            OBSERVER: ["read lineguard/local/#", f"read lineguard/{plant}/#"],
        }
        for d in devices:
            acl[d.name] = [
                f"write lineguard/local/{d.station}/reject",
                f"write lineguard/local/{d.station}/heartbeat",
                f"readwrite lineguard/{plant}/{line}/{d.station}/{d.name}/#",
            ]
            acl[d.bridge] = [
                f"read lineguard/local/{d.station}/reject",
                f"read lineguard/local/{d.station}/heartbeat",
                "write lineguard/local/line-bridge/health",
            ]
        self.broker = MosquittoBroker(acl)
        stations = [d.station for d in devices]
        self.plc: Any = (
            OpcUaPlc(stations) if protocol == "opcua" else ModbusPlc(modbus_station_map(stations))
        )
        self.plc_thread = PlcThread(self.plc)
        self.bridges: list[subprocess.Popen[bytes]] = []
        self.inspectors: list[subprocess.Popen[bytes]] = []
        self.observed: dict[tuple[str, str], dict[str, Any]] = {}
        self.observed_count = 0
        self.upstream = Upstream()
        self._lock = threading.Lock()
        self._observer: Any = None

    def _log(self, name: str) -> IO[bytes]:
        return (self.workdir / f"{name}.log").open("ab")

    def start(self) -> LocalLine:
        """Start broker, PLC, bridges and the observer; wait for every station's first write."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker.start()
        self.plc_thread.start()
        for device in self.devices.values():
            self._start_bridge(device)
        self._start_observer()
        stations = {d.station for d in self.devices.values()}
        wait_until(
            lambda: stations <= set(self.plc.record.healthy), 30, "the bridges' first PLC writes"
        )
        return self

    def _start_bridge(self, device: Device) -> None:
        creds = self.broker.credentials(device.bridge)
        controller = self.plc.controller_config(timeout_s=1.0)
        controller["stations"] = {device.station: controller["stations"][device.station]}
        config = {
            "device": device.name,
            "heartbeat_window_s": self.heartbeat_window_s,
            "refresh_interval_s": 0.5,
            "health_interval_s": 2.0,
            "transport": {
                "kind": "mqtt",
                "host": self.broker.host,
                "port": self.broker.port,
                "client_id": device.bridge,
                "ca_file": str(creds.ca_file),
                "cert_file": str(creds.cert_file),
                "key_file": str(creds.key_file),
            },
            "controller": controller,
        }
        config_file = self.workdir / f"{device.bridge}.json"
        config_file.write_text(json.dumps(config, indent=2))
        self.bridges.append(
            subprocess.Popen(
                [sys.executable, "-m", "line_bridge", "run", "--config", str(config_file)],
                env=child_env(),
                stdout=self._log(device.bridge),
                stderr=subprocess.STDOUT,
            )
        )

    def _on_message(self, topic: str, payload: bytes) -> None:
        now = time.time()
        parts = topic.split("/")
        with self._lock:
            if parts[1] == "local":
                if parts[-1] != "reject":
                    return
                doc = json.loads(payload)
                doc["_observed_at"] = now
                self.observed_count += 1
                self.observed.setdefault((doc["station"], doc["part_id"]), doc)
                return
            kind = parts[-1]
            up = self.upstream
            up.publishes += 1
            up.payload_bytes += len(payload)
            up.by_kind[kind] = up.by_kind.get(kind, 0) + len(payload)
            doc = json.loads(payload)
            if kind == "results":
                up.results.extend(doc.get("results", []))
            elif kind == "health":
                up.health.append(doc)

    def _start_observer(self) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        creds = self.broker.credentials(OBSERVER)
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=OBSERVER,
            protocol=paho.MQTTv5,
        )
        client.tls_set(
            ca_certs=str(creds.ca_file), certfile=str(creds.cert_file), keyfile=str(creds.key_file)
        )
        subscribed = threading.Event()
        client.on_message = lambda c, u, m: self._on_message(m.topic, bytes(m.payload))
        client.on_subscribe = lambda *a: subscribed.set()
        client.on_connect = lambda c, *a: c.subscribe(
            [("lineguard/local/+/reject", 1), (f"lineguard/{self.plant}/#", 1)]
        )
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("observer could not subscribe")
        self._observer = client

    def start_inspector(
        self,
        device: str,
        images: Path,
        model: Path,
        *,
        fps: float,
        frames: int | None,
        heartbeat_s: float = 0.2,
        health_s: float = 5.0,
        extra: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m inspector run`` on ``device`` with simulated cameras replaying ``images``."""
        d = self.devices[device]
        creds = self.broker.credentials(d.name)
        cmd = [
            sys.executable, "-m", "inspector", "run",
            "--transport", "mqtt", "--host", self.broker.host, "--port", str(self.broker.port),
            "--ca", str(creds.ca_file), "--cert", str(creds.cert_file), "--key", str(creds.key_file),
            "--plant", self.plant, "--line", self.line, "--station", d.station, "--device", d.name,
            "--images", str(images), "--source", "camera", "--cameras", str(d.cameras),
            "--fps", str(fps), "--model", str(model),
            "--journal", str(self.workdir / f"{d.name}-journal.db"),
            "--heartbeat-interval", str(heartbeat_s), "--health-interval", str(health_s),
            *extra,
        ]  # fmt: skip
        if frames is not None:
            cmd += ["--max-frames", str(frames), "--once"]
        proc = subprocess.Popen(
            cmd, env=child_env(), stdout=self._log(d.name), stderr=subprocess.STDOUT
        )
        self.inspectors.append(proc)
        return proc

    def stop(self) -> None:
        """Stop everything this line started (each by its own handle)."""
        for proc in [*self.inspectors, *self.bridges]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self._observer is not None:
            self._observer.disconnect()
            self._observer.loop_stop()
            self._observer = None
        self.plc_thread.stop()
        self.broker.stop()

    def logs(self) -> str:
        """Tail of every process log (for failure messages)."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )

    def __enter__(self) -> LocalLine:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by rank, rounded to 0.01; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

"""``python -m core_device run``: one core device on this machine, as the nucleus runs it.

``make device`` calls it. It starts the plant's cloud as the device sees it (mosquitto with
client certificates for IoT Core, the AckRule behind it), a simulated OPC UA PLC for the line
bridge, and a core device that deploys a ring's release from ``releases/<plant>.json`` —
Inspector, Model and LineBridge built in ``build/components`` — with its identity shadow set as
provisioning would. Then it prints where everything is and runs until Ctrl-C (or, with
``--check``, judges one frame, waits for the cloud to acknowledge it and exits).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INSPECTOR, BRIDGE, MODEL = (
    "com.lineguard.Inspector",
    "com.lineguard.LineBridge",
    "com.lineguard.Model",
)


class DeviceRunError(RuntimeError):
    """Something the device needs is missing or did not start (the message says what)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core_device",
        description="Run one LineGuard core device on this machine through the built "
        "components' recipes, with the nucleus' rules (IPC, accessControl, lifecycle, spooler).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start a core device and keep it running")
    run.add_argument("--plant", default="demo", help="plant file plants/<plant>.yaml (demo)")
    run.add_argument("--ring", help="ring whose release to deploy (default: the first ring)")
    run.add_argument("--line", help="the device's line (default: the plant's first line)")
    run.add_argument("--station", help="the device's station (default: the line's first)")
    run.add_argument(
        "--serial", default="DEV-0001", help="serial: thing lineguard-<plant>-<serial>"
    )
    run.add_argument("--root", type=Path, default=Path("/tmp/lineguard-device"),
                     help="the nucleus root (short: it holds the IPC socket)")  # fmt: skip
    run.add_argument("--components", type=Path, default=REPO / "build" / "components",
                     help="built components (make component)")  # fmt: skip
    run.add_argument("--frames", type=Path,
                     help="folder the inspector watches (default: <root>/frames)")  # fmt: skip
    run.add_argument("--check", action="store_true",
                     help="judge one sample frame, wait for the cloud's acknowledgement, exit")  # fmt: skip
    run.add_argument("--fresh", action="store_true", help="remove --root first")
    return p


def run(args: argparse.Namespace) -> int:
    """Start the cloud, the PLC and the device; deploy; report; wait."""
    from core_device.local import Identity, LocalCloud, ring_deployment, start_device
    from stacks.config import load_plant

    plant_file = REPO / "plants" / f"{args.plant}.yaml"
    release_file = REPO / "releases" / f"{args.plant}.json"
    plant = load_plant(plant_file)
    line = (
        next((x for x in plant.lines if x.name == args.line), None) if args.line else plant.lines[0]
    )
    if line is None:
        raise DeviceRunError(f"{plant_file}: no line {args.line!r}")
    station = (next((s for s in line.stations if s.name == args.station), None)
               if args.station else line.stations[0])  # fmt: skip
    if station is None:
        raise DeviceRunError(f"{plant_file}: line {line.name} has no station {args.station!r}")
    ring = args.ring or plant.rings[0].name
    for name in (INSPECTOR, BRIDGE, MODEL):
        if not (args.components / name).is_dir():
            raise DeviceRunError(f"{args.components / name}: not built (run `make component`)")
    thing = f"lineguard-{plant.name}-{args.serial}"
    if args.fresh:
        shutil.rmtree(args.root, ignore_errors=True)
    args.root.mkdir(parents=True, exist_ok=True)
    args.root.chmod(0o755)
    frames = args.frames or args.root / "frames"
    frames.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from demo.local_line import PlcThread
    from line_bridge.plc_sim import OpcUaPlc

    cloud = LocalCloud(plant.name, [thing], args.root / "cloud").start()
    plc = OpcUaPlc([station.name])
    plc_thread = PlcThread(plc)
    plc_thread.start()
    device = None
    try:
        device = start_device(args.root / "gg", thing,
                              Identity(plant.name, line.name, station.name, station.cameras),
                              components_dir=args.components, cloud=cloud)  # fmt: skip
        request = ring_deployment(
            plant_file,
            release_file,
            ring,
            configuration={
                INSPECTOR: {"imagesDir": str(frames), "source": "dir"},
                # where the PLC is and its node ids (a plant sets these per station)
                BRIDGE: {
                    "controller": {"protocol": "opcua", "endpoint": plc.endpoint},
                    "stations": {station.name: {"signals": plc.station_config(station.name)}},
                },
            },
        )
        versions = ", ".join(
            f"{name}@{spec['componentVersion']}" for name, spec in request["components"].items()
        )
        print(f"core device {thing}: deploying ring {ring} of {release_file.name} ({versions})",
              flush=True)  # fmt: skip
        started = time.monotonic()
        result = device.deploy(request)
        print(f"  deployment {result.status} in {time.monotonic() - started:.1f} s {result.message}",
              flush=True)  # fmt: skip
        if result.status != "SUCCESSFUL":
            for name in (INSPECTOR, BRIDGE):
                print(f"--- {name} log (last lines) ---\n{device.log(name)[-2000:]}")
            return 1
        print(f"  identity: plant {plant.name}, line {line.name}, station {station.name}")
        print(f"  IPC socket: {device.ipc.socket_path}")
        print(f"  logs: {device.layout.logs}/<component>.log")
        print(f"  frames: drop images into {frames}")
        print(
            f"  IoT Core stand-in: mosquitto {cloud.broker.host}:{cloud.broker.port} (mutual TLS)"
        )
        print(f"  PLC: {plc.endpoint}")
        if args.check:
            return _check(device, cloud, plc, station.name, frames, thing)
        print("running; Ctrl-C stops the device", flush=True)
        while not stop.wait(5):
            print(f"  {len(cloud.upstream.results)} results at the cloud, "
                  f"{len(plc.record.rejects)} rejects at the PLC", flush=True)  # fmt: skip
        return 0
    finally:
        if device is not None:
            device.stop()
        cloud.stop()
        plc_thread.stop()


def _check(device: Any, cloud: Any, plc: Any, station: str, frames: Path, thing: str) -> int:
    """Judge one sample frame; 0 once its result is acknowledged by the cloud and the line
    bridge reports the station healthy to the PLC (the inspector's heartbeats reach it)."""
    from PIL import Image

    staged = frames.parent / "check-0001.png"  # written beside, then moved in whole
    Image.new("RGB", (640, 480), (128, 128, 128)).save(staged)
    staged.rename(frames / staged.name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        results = [r for r in cloud.upstream.results if r.get("device") == thing]
        acked = cloud.acknowledger is not None and cloud.acknowledger.acknowledged > 0
        healthy = plc.record.healthy.get(station) is True
        if results and acked and healthy:
            print(f"  check: {json.dumps(results[0])}")
            print("  check: result stored and acknowledged by the cloud; "
                  f"PLC {station}.Healthy is true")  # fmt: skip
            return 0
        time.sleep(0.2)
    print("error: within 60 s, no acknowledged result or no healthy station at the PLC\n"
          f"--- inspector ---\n{device.log(INSPECTOR)[-2000:]}\n"
          f"--- line bridge ---\n{device.log(BRIDGE)[-2000:]}", file=sys.stderr)  # fmt: skip
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except DeviceRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

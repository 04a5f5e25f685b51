"""Bytes sent upstream per frame (batched result messages) against sending the frame's image.

    .venv/bin/python bench/inspector_upstream.py [--frames 3000] [--fps 1 50] [--linger 0.5]

Real frames (640×480 photographs from ``skimage.data``, JPEG q90 and PNG) are judged by the tiny
real ONNX model, journaled and sent through the real uplink on a simulated clock, so batches form
as they would at each frame rate. The transport counts the payload bytes of every publish; the
MQTT 5 and TLS overhead per publish is estimated from the packet layout (fixed header, topic,
packet id, properties length; one TLS 1.3 record header + tag per 16 KiB record) plus the PUBACK.
Prints JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]  # before site-packages' own `tests`

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from inspector.engine import Inspector  # noqa: E402
from inspector.journal import Journal  # noqa: E402
from inspector.messages import Identity, encode  # noqa: E402
from inspector.runner import ModelRunner  # noqa: E402
from inspector.runtime_config import RuntimeConfig  # noqa: E402
from inspector.sources import Frame  # noqa: E402
from inspector.transports.base import ConfigCallback, Transport  # noqa: E402
from inspector.uplink import Uplink  # noqa: E402
from tests.support.tiny_model import build_tiny_package  # noqa: E402

IDENTITY = Identity(plant="plant-a", line="line-01", station="station-03", device="gg-core-0042")
TLS_RECORD = 16 * 1024
TLS_OVERHEAD = 5 + 1 + 16  # TLS 1.3 AES-GCM: record header, content type, tag
PUBACK = 4 + TLS_OVERHEAD  # MQTT 5 PUBACK (success, no properties) in its own record


def mqtt_publish_bytes(topic: str, payload: int) -> int:
    """Bytes on the wire for one QoS 1 MQTT 5 PUBLISH over TLS, plus its PUBACK."""
    variable = 2 + len(topic.encode()) + 2 + 1  # topic, packet id, properties length (0)
    remaining = variable + payload
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16_384 else 3
    packet = 1 + length_bytes + remaining
    records = math.ceil(packet / TLS_RECORD)
    return packet + records * TLS_OVERHEAD + PUBACK


class Counter(Transport):
    """Counts what would go upstream."""

    name = "counter"

    def __init__(self) -> None:
        self.publishes: list[tuple[str, int]] = []

    def publish_upstream(self, topic: str, payload: bytes) -> None:
        self.publishes.append((topic, len(payload)))

    def publish_local(self, topic: str, payload: bytes) -> None:
        pass

    def on_config(self, callback: ConfigCallback) -> None:
        pass

    def close(self) -> None:
        pass


def frames_bytes() -> dict[str, list[bytes]]:
    """640×480 real photographs encoded as a camera would send them."""
    from skimage import data

    sources = [data.camera(), data.brick(), data.coffee(), data.gravel(), data.grass()]
    out: dict[str, list[bytes]] = {"jpeg_q90": [], "png": []}
    for array in sources:
        image = Image.fromarray(np.asarray(array)).convert("RGB").resize((640, 480))
        for fmt, key, kw in (("JPEG", "jpeg_q90", {"quality": 90}), ("PNG", "png", {})):
            buffer = io.BytesIO()
            image.save(buffer, fmt, **kw)
            out[key].append(buffer.getvalue())
    return out


def scenario(
    runner: ModelRunner, images: list[bytes], *, frames: int, fps: float, linger: float
) -> dict[str, Any]:
    """Judge ``frames`` frames at ``fps`` on a simulated clock; count upstream bytes."""
    now = [0.0]
    engine = Inspector(
        IDENTITY,
        runner=runner,
        config=RuntimeConfig(deadline_ms=60_000),
        clock=lambda: now[0],
        wall_clock=lambda: 1_800_000_000.0 + now[0],
    )
    counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(
            Path(tmp) / "j.db", device=IDENTITY.device, cap_bytes=256 << 20, synchronous="NORMAL"
        )
        uplink = Uplink(
            journal,
            counter,
            IDENTITY.topic("results"),
            clock=lambda: now[0],
            sleep=lambda s: None,
            linger_s=linger,
        )
        result_bytes = []
        for n in range(frames):
            frame = Frame(
                camera="cam-01",
                part_id=f"P{n:010d}",
                data=images[n % len(images)],
                captured=now[0],
                wall=1_800_000_000.0 + now[0],
            )
            result = engine.judge(frame)
            result["seq"] = journal.append(result)
            result_bytes.append(len(encode(result)))
            uplink.step()
            now[0] += 1.0 / fps
        now[0] += 3600
        while journal.backlog():
            now[0] += 1.0
            uplink.step(flush=True)
        journal.close()
    payload = sum(size for _, size in counter.publishes)
    wire = sum(mqtt_publish_bytes(topic, size) for topic, size in counter.publishes)
    return {
        "fps": fps,
        "frames": frames,
        "publishes": len(counter.publishes),
        "results_per_publish": round(frames / len(counter.publishes), 1),
        "result_json_bytes_mean": round(sum(result_bytes) / len(result_bytes), 1),
        "result_json_bytes_max": max(result_bytes),
        "payload_bytes_per_frame": round(payload / frames, 1),
        "wire_bytes_per_frame_mqtt_tls": round(wire / frames, 1),
        "max_publish_bytes": max(size for _, size in counter.publishes),
        "publishes_per_s": round(len(counter.publishes) / (frames / fps), 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=3000, help="frames per scenario")
    parser.add_argument("--fps", type=float, nargs="+", default=[1.0, 50.0], help="frame rates")
    parser.add_argument("--linger", type=float, default=0.5, help="uplink linger (s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    images = frames_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        runner = ModelRunner.load(build_tiny_package(Path(tmp) / "pkg"))
        image_jpeg = sum(map(len, images["jpeg_q90"])) / len(images["jpeg_q90"])
        image_png = sum(map(len, images["png"])) / len(images["png"])
        runs = []
        for fps in args.fps:
            run = scenario(
                runner, images["jpeg_q90"], frames=args.frames, fps=fps, linger=args.linger
            )
            wire = run["wire_bytes_per_frame_mqtt_tls"]
            run["image_jpeg_wire_bytes"] = mqtt_publish_bytes("x" * 48, int(image_jpeg))
            run["ratio_vs_jpeg"] = round(wire / run["image_jpeg_wire_bytes"], 5)
            run["ratio_vs_png"] = round(wire / image_png, 5)
            runs.append(run)
    print(
        json.dumps(
            {
                "benchmark": "inspector_upstream",
                "frame": "640x480 RGB photographs (skimage.data)",
                "image_bytes_mean": {"jpeg_q90": round(image_jpeg), "png": round(image_png)},
                "linger_s": args.linger,
                "scenarios": runs,
                "machine": {"arch": platform.machine(), "python": platform.python_version()},
                "elapsed_s": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End to end on this machine: camera → inspector process → MQTT → line bridge process → OPC UA PLC.

A simulated camera replays a fixed number of frames at a set fps, a known share of them
defective (and a share in the manual band). The inspector (``python -m inspector run``) judges
them with a real ONNX model and publishes reject messages and heartbeats to a real mosquitto
(mutual TLS); the line bridge (``python -m line_bridge run``) writes them to a simulated OPC UA
PLC. Prints JSON::

    {"frames", "rejects_expected", "rejects_seen_by_plc", "missed_rejects",
     "decision_to_plc_ms_p50", "decision_to_plc_ms_p99", ...}

and exits 1 if a reject was missed (or seen twice, or a pass part was rejected).

    .venv/bin/python bench/line_e2e.py --frames 300 --fps 20 --defect-share 0.1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]  # before site-packages' own `tests`


from demo.local_line import Device, LocalLine, percentile, wait_until  # noqa: E402
from line_bridge.messages import parse_ts  # noqa: E402
from tests.support.tiny_model import build_tiny_package, expected_score, part_image  # noqa: E402

PLANT, LINE, DEVICE, STATION, CAMERA = "demo", "line-1", "dev-1", "station-1", "cam0"
P99_TARGET_MS = 50.0
DELTAS = {"pass": 0.0, "manual": 0.15, "reject": 0.3}


def make_frames(
    folder: Path, frames: int, defect_share: float, manual_share: float, seed: int = 7
) -> dict[str, str]:
    """Write ``frames`` images (one per part, name order = part order); return number → decision."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = ["reject"] * round(frames * defect_share) + ["manual"] * round(frames * manual_share)
    kinds += ["pass"] * (frames - len(kinds))
    rng.shuffle(kinds)
    cache: dict[str, bytes] = {}
    expected = {}
    for n, kind in enumerate(kinds):
        if kind not in cache:
            image = part_image(DELTAS[kind])
            score = expected_score(image)
            decided = "reject" if score >= 0.2 else "manual" if score >= 0.1 else "pass"
            assert decided == kind, f"{kind} image scores {score}"
            path = folder / f"{n:06d}.png"
            image.save(path)
            cache[kind] = path.read_bytes()
        else:
            (folder / f"{n:06d}.png").write_bytes(cache[kind])
        expected[f"{n:06d}"] = kind
    return expected


def part_number(part_id: str) -> str:
    """The frame number in a camera's part id ``<camera>-<journal epoch>-<n:06d>``."""
    return part_id.rsplit("-", 1)[-1]


def run_line_e2e(
    workdir: Path,
    *,
    frames: int = 200,
    fps: float = 20.0,
    defect_share: float = 0.1,
    manual_share: float = 0.05,
    protocol: str = "opcua",
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the whole line once and return the figures (see the module docstring)."""
    expected = make_frames(workdir / "frames", frames, defect_share, manual_share)
    model = build_tiny_package(workdir / "model").root
    device = Device(DEVICE, STATION)
    with LocalLine(workdir, plant=PLANT, line=LINE, devices=[device], protocol=protocol) as rig:
        progress(f"line up (broker :{rig.broker.port}, PLC {rig.plc.endpoint}); starting inspector")
        proc = rig.start_inspector(DEVICE, workdir / "frames", model, fps=fps, frames=frames)
        code = proc.wait(timeout=frames / fps + 120)
        inspector_done = time.time()
        if code != 0:
            raise RuntimeError(f"inspector exited {code}\n{rig.logs()}")
        progress("inspector done; waiting for the last PLC writes")
        actuate = {p for p, kind in expected.items() if kind != "pass"}
        with contextlib.suppress(TimeoutError):  # a missed reject is reported, not raised
            wait_until(
                lambda: actuate <= {part_number(p) for p in rig.plc.record.part_ids()},
                5,
                "every reject at the PLC",
            )
        time.sleep(0.5)  # a late duplicate would show up now
        seen = [part_number(p) for p in rig.plc.record.part_ids(STATION)]
        rejects = list(rig.plc.record.rejects)
        observed = {part_number(part): doc for (_, part), doc in rig.observed.items()}
        observed_count = rig.observed_count
        healthy_history = list(rig.plc.record.healthy_history)
    latencies, to_broker, bridge = [], [], []
    for reject in rejects:
        msg = observed.get(part_number(reject.part_id))
        if msg is not None:
            decided = parse_ts(msg["ts"], "result") + float(msg.get("latency_ms", 0)) / 1000.0
            latencies.append((reject.received - decided) * 1000.0)
            # split at the observer (a second subscriber on the same broker): inspector side
            # (journal commit + publish) vs bridge side (broker → bridge → PLC write)
            to_broker.append((msg["_observed_at"] - decided) * 1000.0)
            bridge.append((reject.received - msg["_observed_at"]) * 1000.0)
    missed = sorted(actuate - set(seen))
    return {
        "frames": frames,
        "fps": fps,
        "protocol": protocol,
        "rejects_expected": len(actuate),
        "rejects_seen_by_plc": len(set(seen)),
        "missed_rejects": len(missed),
        "missed_part_ids": missed[:20],
        "duplicates_at_plc": len(seen) - len(set(seen)),
        "unexpected_at_plc": sorted(set(seen) - actuate)[:20],
        "inspector_reject_messages": observed_count,
        "decision_to_plc_ms_p50": percentile(latencies, 0.50),
        "decision_to_plc_ms_p99": percentile(latencies, 0.99),
        "decision_to_plc_ms_max": round(max(latencies), 2) if latencies else None,
        "p99_target_ms": P99_TARGET_MS,
        "p99_within_target": (percentile(latencies, 0.99) or float("inf")) <= P99_TARGET_MS,
        "decision_to_broker_ms_p50": percentile(to_broker, 0.50),
        "decision_to_broker_ms_p99": percentile(to_broker, 0.99),
        "broker_to_plc_ms_p50": percentile(bridge, 0.50),
        "broker_to_plc_ms_p99": percentile(bridge, 0.99),
        # before the inspector exits the station must stay healthy (after it, false is right)
        "healthy_false_while_inspecting": sum(
            1 for t, _, v in healthy_history[1:] if not v and t < inspector_done - 1.0
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: run once, print JSON, exit 1 on a missed reject."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=20.0)
    parser.add_argument("--defect-share", type=float, default=0.1, help="share of reject frames")
    parser.add_argument(
        "--manual-share", type=float, default=0.05, help="share of manual-band frames"
    )
    parser.add_argument("--protocol", choices=["opcua", "modbus"], default="opcua")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.fps <= 0 or not 0 <= args.defect_share + args.manual_share <= 1:
        print(
            "error: need --frames >= 1, --fps > 0 and shares summing to at most 1", file=sys.stderr
        )
        return 2
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lineguard-e2e-line-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)

    def progress(text: str) -> None:
        print(f"e2e-line: {text}", file=sys.stderr, flush=True)

    progress(f"{args.frames} frames at {args.fps} fps; logs in {workdir}")
    figures = run_line_e2e(
        workdir,
        frames=args.frames,
        fps=args.fps,
        defect_share=args.defect_share,
        manual_share=args.manual_share,
        protocol=args.protocol,
        progress=progress,
    )
    print(json.dumps(figures))
    bad = figures["missed_rejects"] or figures["duplicates_at_plc"] or figures["unexpected_at_plc"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

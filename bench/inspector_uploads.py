"""Sample uploads per simulated hour at the default budgets, and what waits on the device.

    .venv/bin/python bench/inspector_uploads.py [--hours 12] [--offline-hours 0] [--station]

A stream at 1 frame/s for ``--hours`` simulated hours goes through the real sampler, journal
and uploader on a simulated clock: the demo's images (256×256 PNG parts from
``training.sample_data``, as the demo's cameras replay), the demo's share of defective parts
(15 %, rejected) and small manual and near-threshold shares (``--manual``, ``--near``). The
budgets are the recipe's defaults (``sampleBudgetMbPerHour`` 20, ``sampleCapMb`` 64, hold 8 h).
The object store is in memory (this measures the budgets, not a network); ``--offline-hours``
fails every upload for the first hours. ``--station`` queues manual and reject parts for review
(held for a verdict; none is given here), as when a review station runs. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]  # before site-packages' own `tests`

from inspector.journal import Journal  # noqa: E402
from inspector.messages import Identity, rfc3339_ms  # noqa: E402
from inspector.sampler import Sampler  # noqa: E402
from inspector.uploader import Uploader  # noqa: E402

MB = 1024 * 1024
IDENTITY = Identity(plant="plant-a", line="line-01", station="station-03", device="gg-core-0042")
START = 1_800_000_000.0 - 1_800_000_000.0 % 3600  # the top of a clock hour


class MemoryStore:
    """Keeps what it is sent; raises while ``offline``."""

    def __init__(self) -> None:
        self.objects: dict[str, int] = {}
        self.offline = False

    def put(self, key: str, body: bytes, *, content_type: str, metadata: Mapping[str, str]) -> None:
        if self.offline:
            raise ConnectionError("offline")
        self.objects[key] = len(body)

    def reset(self) -> None:
        pass


def demo_images(folder: Path) -> list[bytes]:
    """The demo product's images (good and defective), as PNG bytes."""
    from training.sample_data import main as sample_data

    with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON
        sample_data(["--out", str(folder), "--seed", "7", "--size", "small", "--products", "brick"])
    return [p.read_bytes() for p in sorted(folder.rglob("*.png")) if "masks" not in p.parts]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Simulate the stream and the uploader; per-hour figures."""
    with tempfile.TemporaryDirectory(prefix="lg-uploads-") as tmp:
        return _run(args, Path(tmp))


def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    images = demo_images(work / "data")
    now = [START]
    journal = Journal(work / "j.db", device=IDENTITY.device, cap_bytes=512 * MB,
                      clock=lambda: now[0], synchronous="NORMAL")  # fmt: skip
    sampler = Sampler(journal, band=0.1, bytes_per_hour=20 * MB, disk_cap_bytes=64 * MB,
                      clock=lambda: now[0])  # fmt: skip
    store = MemoryStore()
    uploader = Uploader(journal, IDENTITY, store, bytes_per_hour=20 * MB, hold_s=8 * 3600,
                        clock=lambda: now[0], sample_cap_bytes=64 * MB)  # fmt: skip
    rng = random.Random(11)
    hours: list[dict[str, Any]] = []
    next_try = START
    sent_before = 0
    for hour in range(args.hours):
        store.offline = hour < args.offline_hours
        kept_before = sampler.stats.kept_bytes
        for second in range(3600):
            now[0] = START + hour * 3600 + second
            draw = rng.random()
            if draw < 0.15:
                decision, score = "reject", 0.3
            elif draw < 0.15 + args.manual:
                decision, score = "manual", 0.15
            elif draw < 0.15 + args.manual + args.near:
                decision, score = "pass", 0.19
            else:
                decision, score = "pass", 0.02
            result = {"v": 1, "part_id": f"cam0-{hour}-{second}", "ts": rfc3339_ms(now[0]),
                      "decision": decision, "score": score, "threshold": 0.2,
                      "model": "brick@1.0.0", "camera": "cam0"}  # fmt: skip
            review = ("manual", "reject") if args.station else ()
            (seq,) = journal.append_many([result], review=review)
            result["seq"] = seq
            sampler.offer(result, rng.choice(images))
            journal.mark_sent(seq)  # the results' own uplink is not what this measures
            while now[0] >= next_try:
                delay = uploader.step()
                if delay:
                    next_try = now[0] + delay
        stats = journal.stats()
        sent = sum(store.objects.values())
        hours.append({
            "hour": hour,
            "offline": store.offline,
            "kept_mb": round((sampler.stats.kept_bytes - kept_before) / MB, 2),
            "uploaded_mb": round((sent - sent_before) / MB, 2),
            "waiting_samples": stats.samples,
            "waiting_mb": round(stats.sample_bytes / MB, 2),
            "held": uploader.stats.held,
            "journal_disk_mb": round(stats.disk_bytes / MB, 2),
        })  # fmt: skip
        sent_before = sent
    journal.close()
    return {
        "stream": {"fps": 1, "reject": 0.15, "manual": args.manual, "near_threshold": args.near,
                   "image_bytes_mean": round(sum(map(len, images)) / len(images)),
                   "station": args.station},
        "budgets": {"sample_budget_mb_per_hour": 20, "sample_cap_mb": 64, "hold_hours": 8},
        "hours": hours,
        "objects": len(store.objects),
        "sampler": {"over_budget": sampler.stats.over_budget, "evicted": sampler.stats.evicted},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=int, default=12)
    p.add_argument("--offline-hours", type=int, default=0)
    p.add_argument("--manual", type=float, default=0.02, help="share of manual parts")
    p.add_argument("--near", type=float, default=0.03, help="share of near-threshold passes")
    p.add_argument("--station", action="store_true", help="manual/reject parts wait for review")
    args = p.parse_args(argv)
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A long outage on an accelerated clock: 72 h without a broker, then the backlog drains.

The journal and the uplink are driven directly (no model: the results are what matters here).
The clock is simulated, so 72 hours take seconds. By default the line runs at
``LINEGUARD_OFFLINE_FPS`` = 1 frame/s (259,200 results, ~80 MB); ``LINEGUARD_OFFLINE_FPS=50``
runs the full 72 h × 50 frames/s (12.96 M results, 3.6 GB of journal, ~4 minutes) with the
cap scaled to fit. At any rate the cap is sized so every result fits (DESIGN.md §3: results are
dropped last); retraining samples arrive faster than the cap allows, so the policy evicts
samples, oldest first, and never a result. Dropping results when even they do not fit is
tested in test_journal.py.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from inspector.journal import Journal
from inspector.sampler import Sampler
from inspector.uplink import Uplink
from tests.inspector.test_uplink import FakeClock, Recorder

HOURS = 72
FPS = float(os.environ.get("LINEGUARD_OFFLINE_FPS", "1"))
TOPIC = "lineguard/p1/l1/s1/dev-1/results"
RESULT_BYTES_ON_DISK = 290  # measured 274-277 bytes per ~270-byte result (12.96 M rows)


def result(n: int, score: float) -> dict[str, object]:
    return {
        "v": 1, "plant": "p1", "line": "l1", "station": "s1", "device": "dev-1",
        "camera": "cam0", "part_id": f"cam0-{n:09d}", "seq": 0,
        "ts": "2026-11-28T04:30:00.000Z", "decision": "reject" if score >= 0.2 else "pass",
        "score": round(score, 6), "threshold": 0.2, "model": "tiny@1.0.0", "latency_ms": 11.5,
    }  # fmt: skip


def test_72h_outage_then_drain(tmp_path: Path) -> None:
    frames = int(HOURS * 3600 * FPS)
    # results fit; the samples (41 × 100 KB per hour, 295 MB in 72 h) do not
    cap = frames * RESULT_BYTES_ON_DISK + (24 << 20)
    wall = FakeClock()
    wall.now = 1_800_000_000.0
    mono = FakeClock()
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=cap, clock=wall,
                      synchronous="NORMAL")  # fmt: skip
    transport = Recorder(mono)
    transport.down = True
    uplink = Uplink(journal, transport, TOPIC, clock=mono, sleep=mono.sleep, max_backoff_s=600)
    # samples: 60 offered per hour of 100 KB, a 4 MiB/h budget keeps 41 of them
    sampler = Sampler(journal, band=0.0, bytes_per_hour=4 << 20, disk_cap_bytes=cap, clock=wall)
    rng = random.Random(72)
    image = rng.randbytes(100_000)
    first_seq: int | None = None
    n = 0
    max_disk = 0
    step_s = 60.0
    per_step = int(FPS * step_s)
    for minute in range(int(HOURS * 60)):
        batch = [result(n + i, 0.5 if i == 0 else 0.05) for i in range(per_step)]
        seqs = journal.append_many(batch)
        if first_seq is None:
            first_seq = seqs[0]
        batch[0]["seq"] = seqs[0]
        sampler.offer(batch[0], image)  # a reject every minute wants sampling (budget: 41/h)
        n += per_step
        wall.now += step_s
        for _ in range(4):  # the uplink keeps trying, with backoff, while the broker is down
            mono.now += step_s / 4
            assert uplink.step() == 0
        if minute % 30 == 0:
            disk = journal.disk_bytes()
            max_disk = max(max_disk, disk)
            assert disk <= cap, f"hour {minute / 60:.1f}: {disk} > cap {cap}"
    stats = journal.stats()
    max_disk = max(max_disk, journal.disk_bytes())
    assert max_disk <= cap
    assert stats.pending == frames and stats.dropped_results == 0
    assert stats.evicted_samples > 0, "samples should have gone first"
    assert 0 < stats.samples < HOURS * 41
    assert sampler.stats.kept == HOURS * 41 and sampler.stats.over_budget == HOURS * 19
    # backoff kept retries sparse: about one attempt per max_backoff_s, not one per step
    assert HOURS * 3600 / 600 <= transport.attempts <= HOURS * 3600 / 600 + 20
    # the broker is back: everything drains, in seq order, with nothing lost or duplicated
    transport.down = False
    assert uplink.drain(timeout_s=HOURS * 3600)
    assert first_seq is not None
    got = [r["seq"] for _, _, payload in transport.sent for r in json.loads(payload)["results"]]
    assert got == list(range(first_seq, first_seq + frames))
    assert all(len(p) < 128 * 1024 for _, _, p in transport.sent)
    times = [t for t, _, _ in transport.sent]
    assert all(times[i + 100] - times[i] >= 1.0 - 1e-9 for i in range(len(times) - 100))
    assert journal.backlog() == 0
    journal.close()

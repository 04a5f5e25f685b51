"""The journal: seq assignment, durability across reopen, order, cursor, and the cap policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.journal import Journal, JournalError, base36


def result(part: str, decision: str = "pass") -> dict[str, object]:
    return {
        "v": 1,
        "plant": "p1",
        "line": "l1",
        "station": "s1",
        "device": "dev-1",
        "camera": "cam0",
        "part_id": part,
        "seq": 0,
        "ts": "2026-11-28T04:30:00.000Z",
        "decision": decision,
        "score": 0.1,
        "threshold": 0.2,
        "model": "tiny@1.0.0",
        "latency_ms": 3.0,
    }


def open_journal(path: Path, cap: int = 8 << 20, now: float = 1000.0) -> Journal:
    return Journal(path, device="dev-1", cap_bytes=cap, clock=lambda: now, synchronous="NORMAL")


def test_seq_is_monotonic_and_survives_reopen(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    seqs = [journal.append(result(f"p{i}")) for i in range(5)]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert seqs[0] == 1_000_000  # a new journal starts at the clock's milliseconds
    journal.mark_sent(seqs[2])
    journal.close()
    again = open_journal(tmp_path / "j.db", now=0.0)
    assert [p.seq for p in again.pending()] == seqs[3:]
    assert again.append(result("p5")) == seqs[-1] + 1
    payload = json.loads(again.pending()[0].payload)
    assert payload["seq"] == seqs[3] and payload["part_id"] == "p3"


def test_epoch_names_one_life_of_the_journal(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db", now=1000.0)
    epoch = journal.epoch
    assert epoch[:-2] == base36(1_000_000) == "lfls" and len(epoch) == 6
    journal.close()

    def reopened(now: float, *, wipe: bool) -> str:
        if wipe:
            for path in tmp_path.glob("j.db*"):
                path.unlink()
        journal = open_journal(tmp_path / "j.db", now=now)
        try:
            return journal.epoch
        finally:
            journal.close()

    assert reopened(2000.0, wipe=False) == epoch  # kept on reopen
    assert reopened(1001.0, wipe=True)[:-2] == base36(1_001_000)
    # the same clock reading after a wipe (a device without a real-time clock) still differs
    assert len({reopened(1000.0, wipe=True) for _ in range(20)}) >= 15
    with pytest.raises(ValueError):
        base36(-1)
    assert base36(0) == "0" and base36(35) == "z" and base36(36) == "10"


def test_wal_mode_and_other_device_refused(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    journal.append(result("p0"))
    assert (tmp_path / "j.db-wal").exists()
    journal.close()
    with pytest.raises(JournalError, match="belongs to device 'dev-1'"):
        Journal(tmp_path / "j.db", device="dev-2", cap_bytes=8 << 20)


def test_seq_never_reused_after_all_sent(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    last = journal.append_many([result("a"), result("b")])[-1]
    assert journal.mark_sent(last) == 2
    journal.close()
    again = open_journal(tmp_path / "j.db")
    assert again.backlog() == 0
    assert again.append(result("c")) == last + 1
    assert again.stats().last_sent_seq == last


def test_cursor_saved_with_the_result(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    assert journal.cursor("dir") is None
    journal.append(result("a"), cursor=("dir", "a.png"))
    journal.append(result("b"), cursor=("dir", "b.png"))
    journal.close()
    assert open_journal(tmp_path / "j.db").cursor("dir") == "b.png"


def test_pending_respects_limit_and_bytes(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    journal.append_many([result(f"p{i}") for i in range(50)])
    assert len(journal.pending(limit=10)) == 10
    size = len(journal.pending(limit=1)[0].payload)
    batch = journal.pending(limit=50, max_bytes=size * 7 + 3)
    assert len(batch) == 7
    assert [p.seq for p in batch] == sorted(p.seq for p in batch)


def test_samples_go_first_then_oldest_results(tmp_path: Path) -> None:
    cap = 2 << 20
    journal = open_journal(tmp_path / "j.db", cap=cap)
    for i in range(6):
        journal.add_sample(part_id=f"s{i}", reason="reject", data=bytes([i]) * 100_000)
    assert journal.stats().samples == 6
    first = journal.append(result("r0"))
    # results that need the room push the samples out first, oldest first, and no result is lost
    for chunk in range(40):
        journal.append_many([result(f"r{chunk}-{i}") for i in range(400)])
        assert journal.disk_bytes() <= cap
        if journal.stats().evicted_samples:
            break
    stats = journal.stats()
    assert 1 <= stats.evicted_samples < 6
    assert stats.dropped_results == 0
    kept = [s.part_id for s in journal.samples()]
    assert kept == [f"s{i}" for i in range(6)][6 - len(kept) :]
    # keep writing: no sample left, so the oldest unsent results go, newest stay
    for chunk in range(30):
        journal.append_many([result(f"x{chunk}-{i}") for i in range(400)])
        assert journal.disk_bytes() <= cap
    stats = journal.stats()
    assert stats.samples == 0 and stats.dropped_results > 0
    pending = journal.pending(limit=1_000_000)
    assert pending[0].seq > first
    assert pending[-1].seq == stats.next_seq - 1
    assert len(pending) + stats.dropped_results == stats.next_seq - first


def test_cap_below_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cap_bytes"):
        Journal(tmp_path / "j.db", device="d", cap_bytes=1000)


def test_sampler_keeps_rejects_and_near_threshold_under_budgets(tmp_path: Path) -> None:
    from inspector.sampler import Sampler

    now = [0.0]
    journal = open_journal(tmp_path / "j.db", cap=16 << 20)
    sampler = Sampler(
        journal, band=0.1, bytes_per_hour=50_000, disk_cap_bytes=70_000, clock=lambda: now[0]
    )

    def scored(part: str, score: float | None, decision: str = "pass") -> dict[str, object]:
        return {**result(part, decision), "score": score, "threshold": 0.2}

    image = b"x" * 20_000
    assert not sampler.offer(scored("good", 0.05), image)  # far from the threshold
    assert not sampler.offer(scored("corrupt", None, "manual"), image)  # nothing to learn
    assert sampler.offer(scored("near", 0.19), image)  # within 10 % of the threshold
    assert sampler.offer(scored("band", 0.15, "manual"), image)  # the model's manual band
    assert not sampler.offer(scored("rej", 0.9, "reject"), image)  # 60 KB > 50 KB this hour
    assert sampler.stats.over_budget == 1
    now[0] += 3600  # a new hour, a new budget; the disk cap (70 KB) evicts the oldest
    assert sampler.offer(scored("rej", 0.9, "reject"), image)
    assert sampler.offer(scored("rej2", 0.8, "reject"), image)
    kept = [s.part_id for s in journal.samples()]
    assert kept == ["band", "rej", "rej2"]
    assert sampler.stats.evicted == 1 and journal.samples()[0].data == image


def test_a_sample_never_pushes_out_a_result(tmp_path: Path) -> None:
    cap = 1 << 20
    journal = open_journal(tmp_path / "j.db", cap=cap)
    journal.add_sample(part_id="old", reason="reject", data=b"o" * 100_000)
    journal.append_many([result(f"r{i}") for i in range(2500)])  # ~0.7 MB of results
    assert journal.add_sample(part_id="big", reason="reject", data=b"b" * 400_000) == 0
    stats = journal.stats()
    assert stats.dropped_results == 0 and stats.pending == 2500
    assert stats.samples == 0 and stats.evicted_samples == 1  # older samples still went first
    assert journal.disk_bytes() <= cap

"""Labels in the journal: the review queue, verdicts journaled idempotently by part id, labels
upstream in the results' batches, the cap policy, and the migration from layout 1 (and back)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from inspector.journal import LAYOUT_VERSION, SCHEMA_VERSION, Journal, Review
from inspector.messages import Identity, MessageError, build_label, validate_label
from inspector.uplink import encode_batch
from tests.inspector.test_journal import result as journal_result
from tests.support import journal_v1

IDENTITY = Identity("p1", "l1", "s1", "dev-1")


def result(part: str, decision: str = "pass", score: float | None = 0.1) -> dict[str, Any]:
    out: dict[str, Any] = {**journal_result(part, decision), "score": score}
    if decision == "manual":
        out["reason"] = "manual_band"
    return out


def open_journal(path: Path, cap: int = 8 << 20, **kw: Any) -> Journal:
    return Journal(path, device="dev-1", cap_bytes=cap, clock=lambda: 1000.0, synchronous="NORMAL", **kw)  # fmt: skip


def label_message(label: str = "defect", defect_type: str | None = None) -> Any:
    def make(review: Review, seq: int) -> dict[str, Any]:
        return build_label(
            IDENTITY,
            camera=review.camera,
            part_id=review.part_id,
            seq=seq,
            ts=1_800_000_000.0,
            label=label,
            operator="alice",
            revision=review.revision,
            result_seq=review.result_seq,
            decision=review.decision,
            model=review.model,
            defect_type=defect_type,
        )

    return make


def give(journal: Journal, part: str, label: str, *, revision: int | None = None, **kw: Any):
    current = journal.review(part)
    assert current is not None
    return journal.record_label(
        part,
        result_seq=current.result_seq,
        revision=current.revision if revision is None else revision,
        label=label,
        defect_type=kw.get("defect_type"),
        operator="alice",
        at="2027-01-15T08:00:00.000Z",
        message=label_message(label, kw.get("defect_type")),
    )


def test_manual_and_reject_parts_queue_in_the_results_transaction(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    seqs = journal.append_many(
        [result("a"), result("b", "manual", 0.15), result("c", "reject", 0.3)],
        review=("manual", "reject"),
    )
    journal.add_sample(part_id="b", reason="manual", data=b"\x89PNG-bytes", score=0.15, seq=seqs[1])
    manual = journal.reviews()
    assert [(r.part_id, r.result_seq, r.decision, r.reason) for r in manual] == [
        ("b", seqs[1], "manual", "manual_band")
    ]
    assert manual[0].sample_id is not None and manual[0].label is None
    both = journal.reviews(decisions=("manual", "reject"))
    assert [r.part_id for r in both] == ["b", "c"] and both[1].sample_id is None
    assert journal.review("a") is None  # a passed part is not queued
    journal.close()
    again = open_journal(tmp_path / "j.db")  # the queue is durable
    assert [r.part_id for r in again.reviews(decisions=("manual", "reject"))] == ["b", "c"]


def test_a_verdict_is_journaled_once_replaced_by_another_and_refused_when_stale(
    tmp_path: Path,
) -> None:
    journal = open_journal(tmp_path / "j.db")
    (seq,) = journal.append_many([result("b", "manual", 0.15)], review=("manual",))
    first = give(journal, "b", "defect")
    assert first.status == "recorded" and first.seq == seq + 1
    assert first.review is not None and first.review.revision == 1
    assert (
        first.review.operator == "alice" and first.review.labelled_at == "2027-01-15T08:00:00.000Z"
    )
    # the same verdict again (a double tap, a resent form): nothing new is written
    assert give(journal, "b", "defect", revision=0).status == "unchanged"
    assert journal.next_seq() == seq + 2
    # another verdict from someone who saw revision 0: refused, the first stands
    assert give(journal, "b", "good", revision=0).status == "conflict"
    # another verdict on what is there now replaces it: a second label upstream
    second = give(journal, "b", "good")
    assert second.status == "recorded" and second.review is not None
    assert second.review.revision == 2 and second.review.label == "good"
    labels = [json.loads(p.payload) for p in journal.pending() if p.kind == "label"]
    assert [(m["label"], m["revision"], m["result_seq"]) for m in labels] == [
        ("defect", 1, seq),
        ("good", 2, seq),
    ]
    for message in labels:
        validate_label(message)
    assert journal.reviews() == [] and [r.part_id for r in journal.reviews(labelled=True)] == ["b"]
    unknown = journal.record_label(
        "nope", result_seq=1, revision=0, label="good", defect_type=None, operator="alice",
        at="x", message=label_message("good"),
    )  # fmt: skip
    assert unknown.status == "unknown"


def test_a_part_judged_again_awaits_a_new_verdict(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    (old,) = journal.append_many([result("b", "manual", 0.15)], review=("manual",))
    assert give(journal, "b", "defect").status == "recorded"
    (new,) = journal.append_many([result("b", "manual", 0.16)], review=("manual",))
    entry = journal.review("b")
    assert entry is not None and entry.result_seq == new and entry.label is None
    # a form still showing the old judgement cannot label the new one
    stale = journal.record_label(
        "b", result_seq=old, revision=1, label="good", defect_type=None, operator="alice",
        at="x", message=label_message("good"),
    )  # fmt: skip
    assert stale.status == "conflict"


def test_labels_travel_in_the_results_batches_in_seq_order(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    first = journal.append_many([result("a"), result("b", "manual", 0.15)], review=("manual",))[0]
    give(journal, "b", "defect")
    journal.append_many([result("c")])
    pending = journal.pending()
    assert [(p.seq, p.kind) for p in pending] == [
        (first, "result"),
        (first + 1, "result"),
        (first + 2, "label"),
        (first + 3, "result"),
    ]
    assert journal.backlog() == 4 and journal.oldest_seq() == first
    batch = json.loads(encode_batch("dev-1", pending))
    assert (batch["first_seq"], batch["last_seq"]) == (first, first + 3)
    assert [r["part_id"] for r in batch["results"]] == ["a", "b", "c"]
    assert [(m["part_id"], m["label"], m["seq"]) for m in batch["labels"]] == [
        ("b", "defect", first + 2)
    ]
    # a batch without labels is what it always was
    assert b'"labels"' not in encode_batch("dev-1", pending[:2])
    assert journal.mark_sent(first + 2) == 3
    assert [(p.seq, p.kind) for p in journal.pending()] == [(first + 3, "result")]
    assert journal.backlog() == 1


def test_label_messages_refuse_what_the_contract_does_not_allow() -> None:
    def build(**change: Any) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            camera="cam0", part_id="b", seq=5, ts=0.0, label="defect", operator="alice",
            revision=1, result_seq=4, decision="manual", model="m@1.0.0",
        )  # fmt: skip
        return build_label(IDENTITY, **{**kw, **change})

    assert build(defect_type="scratch")["defect_type"] == "scratch"
    with pytest.raises(MessageError, match=r"label\.label"):
        build(label="maybe")
    with pytest.raises(MessageError, match=r"label\.operator"):
        build(operator="<script>")
    with pytest.raises(MessageError, match=r"label\.defect_type"):
        build(label="good", defect_type="scratch")
    with pytest.raises(MessageError, match=r"label\.revision"):
        build(revision=0)


def test_the_frame_loop_holds_the_seq_counter_against_labels(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db")
    journal.append_many([result("b", "manual", 0.15)], review=("manual",))
    done = threading.Event()
    with journal.reserve():
        first = journal.next_seq()

        def label() -> None:
            give(journal, "b", "good")
            done.set()

        worker = threading.Thread(target=label)
        worker.start()
        # the label waits for the counter: the frame loop's seq is still the one it read
        assert not done.wait(0.2)
        assert journal.append_many([result("c")]) == [first]
    worker.join(timeout=10)
    assert done.is_set()
    assert [p.kind for p in journal.pending()][-2:] == ["result", "label"]


def test_the_frame_loop_never_waits_for_a_labels_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = open_journal(tmp_path / "j.db")
    journal.append_many([result("b", "manual", 0.15)], review=("manual",))
    in_checkpoint, finish = threading.Event(), threading.Event()
    real = journal._checkpoint_if_needed

    def slow_checkpoint() -> None:  # a WAL fold that takes long (a slow card)
        in_checkpoint.set()
        finish.wait(10)
        real()

    monkeypatch.setattr(journal, "_checkpoint_if_needed", slow_checkpoint)
    labelled: list[Any] = []
    worker = threading.Thread(target=lambda: labelled.append(give(journal, "b", "good")))
    worker.start()
    try:
        assert in_checkpoint.wait(10)  # the label is committed and its checkpoint runs
        got: list[int] = []

        def frame_loop_signal() -> None:  # what the frame loop does before its reject signal
            with journal.reserve():
                got.append(journal.next_seq())

        reader = threading.Thread(target=frame_loop_signal)
        reader.start()
        reader.join(timeout=2)
        assert got, "the frame loop waited for the label's checkpoint"
    finally:
        finish.set()
        worker.join(timeout=10)
    (outcome,) = labelled
    assert outcome.status == "recorded" and got == [outcome.seq + 1]


def test_cap_policy_samples_then_the_queue_then_the_oldest_entries(tmp_path: Path) -> None:
    cap = 512 * 1024
    journal = open_journal(tmp_path / "j.db", cap=cap)
    journal.append_many([result("b", "manual", 0.15)], review=("manual",))
    give(journal, "b", "defect")
    for i in range(40):
        journal.add_sample(part_id=f"s{i}", reason="reject", data=b"x" * 8000, score=0.3)
    assert journal.stats().samples > 0
    # results that fit on their own, each queued for review: the queue gives way, no result
    for i in range(20):
        journal.append_many(
            [result(f"m{i}-{k}", "manual", 0.15) for k in range(40)], review=("manual",)
        )
    stats = journal.stats()
    assert stats.disk_bytes <= cap
    assert stats.samples == 0 and stats.evicted_samples == 40  # samples went first
    assert stats.dropped_results == 0
    queued = len(journal.reviews(labelled=None, limit=10_000))
    assert 0 < queued < 20 * 40 + 1  # the oldest queued parts made room
    assert [p.kind for p in journal.pending(10_000)].count("label") == 1
    assert journal.backlog() == 20 * 40 + 2
    # more than results alone fit: the oldest entries go, the label among them; the rest
    # stays one contiguous seq range
    for i in range(20):
        journal.append_many([result(f"n{i}-{k}") for k in range(100)])
    stats = journal.stats()
    assert stats.disk_bytes <= cap and stats.dropped_results > 0
    pending = journal.pending(100_000)
    assert [p.seq for p in pending] == list(range(pending[0].seq, pending[-1].seq + 1))
    assert journal.backlog() == len(pending)
    assert json.loads(pending[-1].payload)["part_id"] == "n19-99"  # the newest always fit


def test_the_review_queue_keeps_its_newest_parts(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j.db", max_reviews=5)
    journal.append_many([result(f"m{i}", "manual", 0.15) for i in range(8)], review=("manual",))
    assert [r.part_id for r in journal.reviews()] == [f"m{i}" for i in range(3, 8)]


def test_a_layout_1_journal_is_migrated_and_stays_usable_after_a_rollback(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    old = journal_v1.Journal(path, device="dev-1", cap_bytes=8 << 20, clock=lambda: 1000.0)
    first = old.append_many([result("a"), result("b", "manual", 0.15)])[0]
    old.add_sample(part_id="b", reason="manual", data=b"img", score=0.15)
    old.close()
    with sqlite3.connect(path) as db:
        assert dict(db.execute("SELECT key, value FROM meta"))["schema"] == "1"

    journal = open_journal(path)  # migrates
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert meta["schema"] == str(SCHEMA_VERSION) == "1" and meta["layout"] == str(LAYOUT_VERSION)
    assert {"labels", "reviews"} <= tables
    assert [p.seq for p in journal.pending()] == [first, first + 1]  # nothing lost
    assert journal.samples()[0].part_id == "b"
    journal.append_many([result("c", "manual", 0.15)], review=("manual",))
    assert give(journal, "c", "good").status == "recorded"
    journal.close()
    open_journal(path).close()  # opening a migrated journal again changes nothing

    # rolled back to the release before labels: it opens, writes and drains its results
    rolled = journal_v1.Journal(path, device="dev-1", cap_bytes=8 << 20, clock=lambda: 1000.0)
    last = rolled.append(result("d"))
    rolled.add_sample(part_id="d", reason="reject", data=b"img2", score=0.3)
    assert [json.loads(p.payload)["part_id"] for p in rolled.pending()] == ["a", "b", "c", "d"]
    rolled.close()

    # and forward again: the label waited, in seq order with the results
    journal = open_journal(path)
    assert [(json.loads(p.payload)["part_id"], p.kind) for p in journal.pending()] == [
        ("a", "result"),
        ("b", "result"),
        ("c", "result"),
        ("c", "label"),
        ("d", "result"),
    ]
    assert journal.pending()[-1].seq == last
    assert journal.mark_sent(last) == 5 and journal.backlog() == 0


def test_a_journal_of_an_unknown_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    open_journal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    from inspector.journal import JournalError

    with pytest.raises(JournalError, match="unsupported schema '2'"):
        open_journal(path)


def test_labels_wait_for_a_cloud_that_stores_them_and_none_is_lost(tmp_path: Path) -> None:
    from inspector.uplink import Uplink
    from tests.inspector.test_uplink import ACK, FakeClock, Spooling

    class Cloud(Spooling):
        """Acknowledges like the AckRule; stores labels only once its stack knows them."""

        stores_labels = False
        labels: list[dict[str, Any]]

        def deliver(self, *, reverse: bool = False) -> None:
            batches, self.spool = self.spool, []
            for payload in batches:
                doc = json.loads(payload)
                self.cloud.extend(r["seq"] for r in doc["results"])
                ack = {k: doc[k] for k in ("v", "device", "first_seq", "last_seq")}
                if self.stores_labels:  # the new stack: SELECT ..., 1 AS labels
                    self.labels.extend(doc.get("labels", []))
                    ack["labels"] = 1
                for callback in self.ack_callbacks.values():
                    callback(json.dumps(ack).encode())  # type: ignore[operator]

    journal = open_journal(tmp_path / "j.db")
    clock = FakeClock()
    cloud = Cloud(clock)
    cloud.labels = []
    uplink = Uplink(journal, cloud, "t", clock=clock, sleep=clock.sleep, ack_topic=ACK)

    def exchange() -> None:
        for _ in range(20):
            uplink.step(flush=True)
            cloud.deliver()
            clock.sleep(0.1)

    journal.append_many([result("a"), result("b", "manual", 0.15)], review=("manual",))
    assert give(journal, "b", "defect").status == "recorded"
    journal.append_many([result("c")])
    # an old stack: every result goes and is acknowledged; the label is never sent, it waits
    exchange()
    assert len(cloud.cloud) == 3 and uplink.cloud_stores_labels is False
    assert all("labels" not in json.loads(payload) for _, _, payload in cloud.sent)
    assert journal.held_labels() == 1 and journal.backlog() == 1
    journal.close()
    # a restart keeps it; the stack is upgraded: the first acknowledgement brings the label out
    journal = open_journal(tmp_path / "j.db")
    cloud.stores_labels = True
    uplink = Uplink(journal, cloud, "t", clock=clock, sleep=clock.sleep, ack_topic=ACK)
    journal.append_many([result("d")])
    exchange()
    assert uplink.cloud_stores_labels is True
    (label,) = cloud.labels
    validate_label(label)
    assert (label["part_id"], label["label"], label["revision"]) == ("b", "defect", 1)
    assert label["seq"] > max(cloud.cloud)  # a new seq, after every result already sent
    assert journal.held_labels() == 0 and journal.backlog() == 0
    # from now on a label goes at once, in its batch
    journal.append_many([result("b", "manual", 0.16)], review=("manual",))
    assert give(journal, "b", "good").status == "recorded"
    exchange()
    assert [m["label"] for m in cloud.labels] == ["defect", "good"] and journal.backlog() == 0


def test_verdicts_wait_for_the_sample_uploader_past_the_upstream_acknowledgement(
    tmp_path: Path,
) -> None:
    journal = open_journal(tmp_path / "j.db")
    (seq,) = journal.append_many([result("a", "manual", 0.15)], review=("manual",))
    first = give(journal, "a", "good")
    second = give(journal, "a", "defect")
    journal.mark_sent(journal.next_seq() - 1)  # the cloud has both: upstream forgets them
    assert journal.pending() == []
    waiting = journal.label_uploads()
    assert [u.seq for u in waiting] == [first.seq, second.seq]
    assert [u.message["revision"] for u in waiting] == [1, 2]
    assert waiting[0].result_ts == result("a")["ts"] and waiting[0].message["result_seq"] == seq
    assert waiting[1].message["labelled_at"] == "2027-01-15T08:00:00.000Z"
    assert journal.label_upload_cursor() == -1
    journal.mark_label_uploaded(first.seq)  # S3 stored the first
    journal.close()
    journal = open_journal(tmp_path / "j.db")  # the cursor survives a restart
    assert journal.label_upload_cursor() == first.seq
    assert [u.seq for u in journal.label_uploads()] == [second.seq]
    journal.mark_label_uploaded(second.seq)
    assert journal.label_uploads() == []
    journal.close()

"""Operators' verdicts counted for the health message: first verdicts, corrections (-1 / +1),
double taps and conflicts (nothing), one model per message with the rest waiting — through the
review station's real HTTP boundary and the journal, as the service wires them."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inspector.health import HealthReporter
from inspector.journal import Journal
from inspector.quality import VerdictTally
from inspector.review_station import LiveFeed, ReviewStation, StationConfig
from inspector.station_auth import PasswordHash, hash_password
from tests.inspector.test_review_station import (
    IDENTITY,
    PASSWORD,
    Client,
    Clock,
    queued,
    result,
)


def standing(entry: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    assert entry is not None
    return {d: entry[d] for d in ("reject", "manual")}


def test_a_correction_moves_one_verdict_and_the_same_verdict_counts_nothing() -> None:
    tally = VerdictTally()
    tally.record(decision="reject", model="m@1.0.0", label="defect", previous=None)
    tally.record(decision="reject", model="m@1.0.0", label="good", previous=None)
    tally.record(decision="manual", model="m@1.0.0", label="good", previous=None)
    tally.record(decision="manual", model="m@1.0.0", label="good", previous="good")  # no change
    tally.record(decision="pass", model="m@1.0.0", label="good", previous=None)  # never queued
    entry = tally.take()
    assert entry is not None and entry["model"] == "m@1.0.0"
    assert standing(entry) == {
        "reject": {"good": 1, "defect": 1},
        "manual": {"good": 1, "defect": 0},
    }
    assert tally.take() is None  # taken: the next interval starts from nothing
    # a verdict of an earlier interval corrected now: -1 good, +1 defect, nothing reviewed anew
    tally.record(decision="reject", model="m@1.0.0", label="defect", previous="good")
    assert standing(tally.take()) == {
        "reject": {"good": -1, "defect": 1},
        "manual": {"good": 0, "defect": 0},
    }
    # a verdict and its correction back within one interval cancel: nothing to report
    tally.record(decision="manual", model="m@1.0.0", label="defect", previous="good")
    tally.record(decision="manual", model="m@1.0.0", label="good", previous="defect")
    assert tally.take() is None


def test_one_model_per_message_the_longest_waiting_first_none_dropped() -> None:
    tally = VerdictTally()
    tally.record(decision="manual", model="m@1.0.0", label="defect", previous=None)
    tally.record(decision="manual", model="m@2.0.0", label="good", previous=None)
    tally.record(decision="manual", model="m@1.0.0", label="good", previous=None)
    assert tally.peek() == tally.peek()  # peeking takes nothing
    first, second = tally.take(), tally.take()
    assert first is not None and second is not None
    assert (first["model"], first["manual"]) == ("m@1.0.0", {"good": 1, "defect": 1})
    assert (second["model"], second["manual"]) == ("m@2.0.0", {"good": 1, "defect": 0})
    assert tally.take() is None


def test_verdicts_from_many_threads_are_all_counted() -> None:
    tally = VerdictTally()

    def give(n: int) -> None:
        for _ in range(n):
            tally.record(decision="reject", model="m@1.0.0", label="defect", previous=None)

    threads = [threading.Thread(target=give, args=(500,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert standing(tally.take())["reject"] == {"good": 0, "defect": 4000}


# ---------------------------------------------------------------- through the station


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal(
        tmp_path / "journal.db", device="dev-1", cap_bytes=8 << 20, synchronous="NORMAL"
    )
    journal.append_many(
        [result("part-1", "manual", 0.15), result("part-2", "reject", 0.3)],
        review=("manual", "reject"),
    )
    yield journal
    journal.close()


@pytest.fixture
def tally() -> VerdictTally:
    return VerdictTally()


@pytest.fixture
def station(journal: Journal, tally: VerdictTally) -> Iterator[ReviewStation]:
    station = ReviewStation(
        StationConfig(
            bind="127.0.0.1",
            port=0,
            operators={"alice": PasswordHash.parse(hash_password(PASSWORD, n=2**10))},
        ),
        journal,
        IDENTITY,
        feed=LiveFeed(),
        model=lambda: "tiny@1.0.0",
        # as inspector.service wires it
        on_verdict=lambda review, previous: tally.record(
            decision=review.decision,
            model=review.model,
            label=str(review.label),
            previous=previous,
        ),
        clock=Clock(),
    )
    station.start()
    yield station
    station.stop()


def test_the_health_message_carries_the_standing_verdicts_of_its_interval(
    station: ReviewStation, journal: Journal, tally: VerdictTally
) -> None:
    now = [0.0]
    reporter = HealthReporter(
        IDENTITY,
        interval_s=60,
        status=lambda: {"healthy": True, "model": "tiny@1.0.0"},
        verdicts=tally,
        clock=lambda: now[0],
        wall_clock=lambda: 1_800_000_000.0 + now[0],
    )
    client = Client(station)
    assert client.login() == 303
    token = {"X-CSRF-Token": client.csrf()}

    def verdict(part: str, label: str, **change: Any) -> int:
        return client.verdict({**queued(journal, part), "label": label, **change}, **token)[0]

    assert verdict("part-1", "good") == 200
    assert verdict("part-1", "good", revision=0) == 200  # a double tap: "unchanged"
    assert verdict("part-2", "defect") == 200
    assert verdict("part-1", "defect", revision=0) == 409  # a stale page: refused, not counted
    assert verdict("part-1", "defect") == 200  # the operator corrects it (revision 2)
    assert reporter.message()["labels"] == reporter.message()["labels"]  # message() peeks
    now[0] = 60.0
    message = reporter.tick()
    assert message is not None
    assert message["labels"] == {
        "model": "tiny@1.0.0",
        "reject": {"good": 0, "defect": 1},
        "manual": {"good": 0, "defect": 1},  # the standing verdict only, not its first one
    }
    # the journal's history says the same: the highest revision per part stands
    assert {r.part_id: (r.label, r.revision) for r in map(journal.review, ("part-1", "part-2"))
            if r is not None} == {"part-1": ("defect", 2), "part-2": ("defect", 1)}  # fmt: skip
    # the next interval: a correction of part-2, made after its verdict was reported
    assert verdict("part-2", "good") == 200
    now[0] = 120.0
    later = reporter.tick()
    assert later is not None and later["labels"]["reject"] == {"good": 1, "defect": -1}
    now[0] = 180.0
    idle = reporter.tick()
    assert idle is not None and idle["labels"] is None


def test_a_health_message_without_a_station_says_labels_null() -> None:
    reporter = HealthReporter(IDENTITY, interval_s=60, status=lambda: {"healthy": True})
    assert reporter.message()["labels"] is None


def test_the_service_counts_the_stations_verdicts_in_its_health(
    tmp_path: Path, tiny_package_dir: Path
) -> None:
    from inspector import service
    from inspector.transports.file import FileTransport
    from tests.support.tiny_model import image_bytes, part_image

    images = tmp_path / "frames"
    images.mkdir()
    (images / "band.png").write_bytes(image_bytes(part_image(0.15)))  # manual band
    operators = tmp_path / "operators.json"
    hashed = hash_password(PASSWORD, n=2**10)
    operators.write_text(json.dumps({"operators": {"alice": hashed}, "bind": "127.0.0.1"}))
    operators.chmod(0o600)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [
        "--transport", "file", "--out", str(tmp_path / "out"), "--images", str(images),
        "--once", "--model", str(tiny_package_dir), "--journal", str(tmp_path / "j.db"),
        "--plant", "p1", "--line", "l1", "--station", "s1", "--device", "dev-1",
        "--review-port", str(port), "--review-operators", str(operators),
    ]  # fmt: skip
    svc = service.Service(service.parse_settings(args), FileTransport(tmp_path / "out"))
    assert svc.station is not None
    for frames, cursors in svc._batches():
        svc.process(frames, cursors)
    svc.station.start()
    try:
        client = Client(svc.station)
        assert client.login() == 303
        token = {"X-CSRF-Token": client.csrf()}
        status, _ = client.verdict({**queued(svc.journal, "band.png"), "label": "defect"}, **token)
        assert status == 200
        labels = svc.health.message()["labels"]
    finally:
        svc.station.stop()
        svc.journal.close()
    assert labels is not None and labels["model"] == svc.engine.model_ref
    assert labels["manual"] == {"good": 0, "defect": 1}

"""Health messages, local reject messages and heartbeats."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.actuation import Actuator
from inspector.engine import Inspector
from inspector.health import HealthReporter, engine_status, percentile
from tests.inspector.conftest import IDENTITY, frame
from tests.support.tiny_model import build_tiny_package, image_bytes, part_image


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) is None


def test_health_message_every_interval_from_real_results(
    make_engine: Callable[..., Inspector],
) -> None:
    engine = make_engine()
    clock = Clock()
    published: list[tuple[str, bytes]] = []
    reporter = HealthReporter(
        IDENTITY,
        interval_s=10,
        status=lambda: engine_status(engine),
        backlog=lambda: 17,
        publish=lambda t, p: published.append((t, p)),
        clock=clock,
        wall_clock=lambda: 0.0,
    )
    for delta in [0.0, 0.0, 0.15, 0.25, 0.35]:
        reporter.record(engine.judge(frame(image_bytes(part_image(delta)))))
    reporter.record(engine.judge(frame(b"")))
    assert reporter.tick() is None  # not due yet
    clock.now = 10.0
    message = reporter.tick()
    assert message is not None
    assert published and published[0][0] == "lineguard/plant-a/line-1/st-1/dev-1/health"
    assert json.loads(published[0][1]) == message
    assert message["counts"] == {"pass": 2, "reject": 2, "manual": 2}
    assert message["reasons"] == {"manual_band": 1, "image_empty": 1}
    assert message["frames"] == 6 and message["backlog"] == 17
    assert message["model"] == "tiny@1.0.0" and message["healthy"] is True
    assert message["latency_ms"]["p50"] is not None and message["latency_ms"]["p99"] >= 0
    hist = message["score_hist"]
    assert sum(hist["counts"]) == 5  # the empty frame has no score
    assert hist["counts"][0] == 2  # scores ≈ 0 → first bin
    assert hist["counts"][hist["edges"].index(1.5)] == 1  # 0.35 / 0.2 = 1.75 → [1.5, 2.0)
    assert message["last_error"] is None and message["shadow"] is None
    assert message["ring"] is None  # no ring deployment told it one
    clock.now = 15.0
    assert reporter.tick() is None
    clock.now = 20.0
    second = reporter.tick()
    assert second is not None and second["frames"] == 0 and second["seq"] == 1


def test_health_message_carries_the_ring() -> None:
    status = {"healthy": True, "model": "tiny@1.0.0", "last_error": None, "shadow": None}
    reporter = HealthReporter(IDENTITY, interval_s=1, ring="canary", status=lambda: status)
    assert reporter.message()["ring"] == "canary"
    assert (
        HealthReporter(IDENTITY, interval_s=1, ring="", status=lambda: status).message()["ring"]
        is None
    )


def test_shadow_figures_are_each_intervals_own(
    make_engine: Callable[..., Inspector], tmp_path: Path
) -> None:
    engine = make_engine()
    clock = Clock()
    reporter = HealthReporter(
        IDENTITY, interval_s=10, status=lambda: engine_status(engine), clock=clock
    )
    shadow = build_tiny_package(tmp_path / "v2", version="2.0.0", reject=0.1, manual=0.05)
    assert engine.set_shadow(shadow.root).ok
    for delta in (0.0, 0.12, 0.25):  # served: pass, manual, reject; shadow: pass, reject, reject
        reporter.record(engine.judge(frame(image_bytes(part_image(delta)))))
    clock.now = 10.0
    first = reporter.tick()
    assert first is not None
    assert first["shadow"] == {
        "model": "tiny@2.0.0",
        "frames": 3,
        "agreement": pytest.approx(0.6667, abs=1e-4),
        "errors": 0,
        "reject": {"both": 1, "served_only": 0, "shadow_only": 1},
    }
    assert reporter.message()["shadow"]["frames"] == 0  # nothing judged since that report
    reporter.record(engine.judge(frame(image_bytes(part_image(0.25)))))
    clock.now = 20.0
    second = reporter.tick()
    assert second is not None and second["shadow"]["frames"] == 1  # not 4: since the last one
    assert second["shadow"]["reject"] == {"both": 1, "served_only": 0, "shadow_only": 0}
    assert second["shadow"]["agreement"] == 1.0
    assert engine.set_shadow(None).ok
    clock.now = 30.0
    third = reporter.tick()
    assert third is not None and third["shadow"] is None


def test_health_publish_failure_is_contained(make_engine: Callable[..., Inspector]) -> None:
    engine = make_engine()

    def fail(topic: str, payload: bytes) -> None:
        raise ConnectionError("broker down")

    reporter = HealthReporter(
        IDENTITY, interval_s=1, status=lambda: engine_status(engine), publish=fail, clock=Clock()
    )
    reporter._next = 0.0
    assert reporter.tick() is not None
    assert "broker down" in (reporter.last_publish_error or "")


def test_actuator_publishes_rejects_and_manuals_only(make_engine: Callable[..., Inspector]) -> None:
    engine = make_engine()
    sent: list[tuple[str, bytes]] = []
    actuator = Actuator("st-1", "dev-1", lambda t, p: sent.append((t, p)))
    results = [
        engine.judge(frame(image_bytes(part_image(d)), part_id=f"p{i}"))
        for i, d in enumerate([0.0, 0.15, 0.25])
    ]
    results.append(engine.judge(frame(b"junk", part_id="p3")))
    assert [actuator.on_result(r) for r in results] == [False, True, True, True]
    assert [t for t, _ in sent] == ["lineguard/local/st-1/reject"] * 3
    assert [json.loads(p) for _, p in sent] == results[1:]


def test_heartbeat_every_interval_with_health_and_model() -> None:
    clock = Clock()
    sent: list[tuple[str, bytes]] = []
    actuator = Actuator(
        "st-1",
        "dev-1",
        lambda t, p: sent.append((t, p)),
        heartbeat_interval_s=0.5,
        status=lambda: (True, "tiny@1.0.0"),
        clock=clock,
        wall_clock=lambda: 1_764_304_200.5,
    )
    assert actuator.tick() is True
    assert actuator.tick() is False
    clock.now = 0.5
    assert actuator.tick() is True
    assert [t for t, _ in sent] == ["lineguard/local/st-1/heartbeat"] * 2
    beats = [json.loads(p) for _, p in sent]
    assert beats[0] == {
        "v": 1,
        "station": "st-1",
        "device": "dev-1",
        "ts": "2025-11-28T04:30:00.500Z",
        "seq": 0,
        "healthy": True,
        "model": "tiny@1.0.0",
        "interval_s": 0.5,
    }
    assert beats[1]["seq"] == 1


def test_local_publish_failure_is_counted_not_raised() -> None:
    def fail(topic: str, payload: bytes) -> None:
        raise OSError("bus down")

    actuator = Actuator("st-1", "dev-1", fail)
    assert actuator.on_result({"decision": "reject"}) is False
    assert actuator.tick() is False
    assert actuator.failures == 2 and "bus down" in (actuator.last_error or "")


def test_intervals_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Actuator("s", "d", lambda t, p: None, heartbeat_interval_s=0)
    with pytest.raises(ValueError):
        HealthReporter(IDENTITY, interval_s=0, status=dict)


def test_rejects_wait_for_the_local_bus_and_go_out_in_order_before_any_heartbeat() -> None:
    bus_up = False
    sent: list[tuple[str, dict[str, object]]] = []

    def publish(topic: str, payload: bytes) -> None:
        if not bus_up:
            raise OSError("not connected")
        sent.append((topic, json.loads(payload)))

    clock = Clock()
    actuator = Actuator("st-1", "dev-1", publish, heartbeat_interval_s=0.5, clock=clock)
    assert actuator.on_result({"decision": "reject", "part_id": "p1"}) is False
    assert actuator.on_result({"decision": "manual", "part_id": "p2"}) is False
    assert actuator.on_result({"decision": "pass", "part_id": "p3"}) is False
    assert actuator.pending == 2
    assert actuator.tick() is False  # no heartbeat while a reject is outstanding
    bus_up = True
    assert actuator.tick() is True
    assert actuator.pending == 0
    assert [(t.rsplit("/", 1)[1], m.get("part_id")) for t, m in sent] == [
        ("reject", "p1"),
        ("reject", "p2"),
        ("heartbeat", None),
    ]


def test_waiting_rejects_are_bounded_oldest_dropped_first() -> None:
    def fail(topic: str, payload: bytes) -> None:
        raise OSError("bus down")

    sent: list[str] = []
    actuator = Actuator("st-1", "dev-1", fail, max_pending=3)
    for n in range(5):
        actuator.on_result({"decision": "reject", "part_id": f"p{n}"})
    assert actuator.pending == 3 and actuator.dropped == 2
    actuator._publish = lambda t, p: sent.append(json.loads(p)["part_id"])
    assert actuator.flush() is True
    assert sent == ["p2", "p3", "p4"]


def test_verdicts_go_out_for_every_part_when_asked() -> None:
    sent: list[tuple[str, dict[str, object]]] = []
    actuator = Actuator(
        "st-1", "dev-1", lambda t, p: sent.append((t, json.loads(p))), verdicts=True
    )
    for part, decision in (("p1", "pass"), ("p2", "reject")):
        actuator.on_result({"decision": decision, "part_id": part})
    assert [(t.rsplit("/", 1)[1], m["part_id"]) for t, m in sent] == [
        ("verdict", "p1"),
        ("verdict", "p2"),
        ("reject", "p2"),
    ]


def test_a_refused_verdict_is_counted_and_does_not_hold_the_reject_back() -> None:
    sent: list[str] = []

    def publish(topic: str, payload: bytes) -> None:
        if topic.endswith("/verdict"):
            raise OSError("not authorised")
        sent.append(topic)

    actuator = Actuator("st-1", "dev-1", publish, verdicts=True)
    assert actuator.on_result({"decision": "reject", "part_id": "p1"}) is True
    assert actuator.verdict_failures == 1 and actuator.pending == 0
    assert sent == ["lineguard/local/st-1/reject"]

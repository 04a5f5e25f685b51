"""The per-frame path: decisions, fail-safe verdicts, hot swap, shadow model, config updates."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.engine import Inspector
from inspector.messages import MAX_RESULT_BYTES, encode, validate_result
from inspector.model_package import FrameSpec
from inspector.runner import ModelRunner, RunnerOptions
from inspector.runtime_config import RuntimeConfig
from inspector.sources import Frame
from tests.inspector.conftest import bad_images, frame
from tests.support.tiny_model import (
    build_tiny_package,
    expected_score,
    image_bytes,
    mono16,
    part_image,
)

Make = Callable[..., Inspector]


def _png(delta: float, size: int = 32) -> bytes:
    return image_bytes(part_image(delta, size))


def _check(result: dict) -> dict:
    validate_result(result)
    assert len(encode(result)) <= MAX_RESULT_BYTES
    return result


@pytest.mark.parametrize(
    ("delta", "decision", "reason"),
    [
        (0.0, "pass", None),
        (0.05, "pass", None),
        (0.15, "manual", "manual_band"),
        (0.25, "reject", None),
    ],
)
def test_decision_from_thresholds(make_engine: Make, delta: float, decision: str, reason) -> None:
    result = _check(make_engine().judge(frame(_png(delta), part_id="part-7")))
    assert result["decision"] == decision
    assert result.get("reason") == reason
    assert result["score"] == pytest.approx(abs(delta), abs=5e-3)
    assert result["threshold"] == 0.2
    assert result["model"] == "tiny@1.0.0"
    assert (result["plant"], result["line"], result["station"], result["device"]) == (
        "plant-a",
        "line-1",
        "st-1",
        "dev-1",
    )
    assert (result["camera"], result["part_id"]) == ("cam-1", "part-7")
    assert result["ts"].endswith("Z") and len(result["ts"]) == 24


@pytest.mark.parametrize("kind", sorted(bad_images()))
def test_every_bad_image_kind_is_manual_with_its_reason(make_engine: Make, kind: str) -> None:
    data, reason = bad_images()[kind]
    engine = make_engine()
    result = _check(engine.judge(frame(data)))
    assert result["decision"] == "manual"
    assert result["reason"].startswith(reason)
    assert result["score"] is None
    # the engine is still alive and judges the next good frame normally
    assert engine.judge(frame(_png(0.0)))["decision"] == "pass"


def test_unreadable_source_frame_is_manual(make_engine: Make) -> None:
    result = make_engine().judge(Frame("cam", "p", error="image_unreadable: Permission denied"))
    assert result["decision"] == "manual"
    assert result["reason"] == "image_unreadable: Permission denied"


def test_decoded_frames_from_cameras_are_checked(make_engine: Make) -> None:
    engine = make_engine()
    ok = engine.judge(Frame("cam", "p1", image=part_image(0.25, 40)))
    assert ok["decision"] == "reject"
    bad = engine.judge(Frame("cam", "p2", image=part_image(0.0).convert("CMYK")))
    assert (bad["decision"], bad["reason"].split(":")[0]) == ("manual", "image_mode")


def test_no_model_is_manual(make_engine: Make) -> None:
    engine = make_engine(runner=None)
    result = _check(engine.judge(frame(_png(0.0))))
    assert (result["decision"], result["reason"].split(":")[0]) == ("manual", "no_model")
    assert result["model"] is None
    assert not engine.healthy


def test_model_error_is_manual(make_engine: Make, tmp_path: Path) -> None:
    broken = ModelRunner.load(
        build_tiny_package(tmp_path / "broken", broken=True),
        RunnerOptions(warmup_runs=0),
        self_test=False,
    )
    engine = make_engine(runner=broken)
    results = engine.judge_batch([frame(_png(0.0), part_id=f"p{i}") for i in range(3)])
    assert [r["decision"] for r in results] == ["manual"] * 3
    assert all(r["reason"].startswith("model_error") for r in results)
    assert engine.last_error is not None and "model_error" in engine.last_error


def test_nan_score_is_manual(make_engine: Make, tmp_path: Path) -> None:
    nan = ModelRunner.load(build_tiny_package(tmp_path / "nan", nan_score=True), self_test=False)
    result = _check(make_engine(runner=nan).judge(frame(_png(0.0))))
    assert (result["decision"], result["reason"]) == ("manual", "score_invalid")


class StepClock:
    """Monotonic clock that advances ``step`` seconds at every reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 100.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_frame_queued_past_its_deadline_is_manual_without_inference(make_engine: Make) -> None:
    clock = StepClock(0.0)
    engine = make_engine(clock=clock, config=RuntimeConfig(deadline_ms=100))
    stale = frame(_png(0.0), captured=clock.now - 0.5)
    result = _check(engine.judge(stale))
    assert result["decision"] == "manual"
    assert result["reason"] == "deadline_missed: queued 500 ms"
    assert result["score"] is None


def test_slow_decision_past_the_deadline_is_manual_keeping_the_score(make_engine: Make) -> None:
    clock = StepClock(0.3)  # every reading is 300 ms later: the decision ends after 600 ms
    engine = make_engine(clock=clock, config=RuntimeConfig(deadline_ms=500))
    result = _check(engine.judge(frame(_png(0.0), captured=clock.now)))
    assert result["decision"] == "manual"
    assert result["reason"].startswith("deadline_missed")
    assert result["score"] == pytest.approx(0.0, abs=1e-3)
    assert result["latency_ms"] >= 500


def test_micro_batch_from_several_cameras_equals_single_judgments(make_engine: Make) -> None:
    engine = make_engine()
    frames = [
        frame(_png(d), part_id=f"p{i}", camera=f"cam-{i % 3}")
        for i, d in enumerate([0.0, 0.15, 0.25, 0.3, 0.02, 0.12, 0.22, 0.0, 0.18, 0.01])
    ]
    frames.insert(4, frame(b"", part_id="bad"))
    batched = engine.judge_batch(frames)
    single = [engine.judge(f) for f in frames]
    assert [r["part_id"] for r in batched] == [f.part_id for f in frames]
    assert [r["camera"] for r in batched] == [f.camera for f in frames]
    assert [(r["decision"], r["score"]) for r in batched] == [
        (r["decision"], r["score"]) for r in single
    ]
    assert batched[4]["reason"].startswith("image_empty")


def _unbatched(engine: Inspector) -> ModelRunner:
    """A fresh runner of the engine's package that scores one frame per unit of work."""
    assert engine.runner is not None
    runner = ModelRunner.load(engine.runner.package.root, RunnerOptions(warmup_runs=0))
    runner.batch_pays = False  # every frame its own unit: all judging threads get work
    return runner


def test_judge_threads_keep_order_and_fail_safe(make_engine: Make) -> None:
    deltas = [0.0, 0.15, 0.25, 0.3, 0.02, 0.12, 0.22, 0.0, 0.18, 0.01, 0.26]
    frames = [frame(_png(d), part_id=f"p{i}") for i, d in enumerate(deltas)]
    frames.insert(3, frame(b"not an image", part_id="bad"))
    serial = make_engine().judge_batch(frames)
    engine = make_engine(
        runner=_unbatched(make_engine()),
        config=RuntimeConfig(deadline_ms=10_000, judge_threads=3, max_batch=2),
    )
    for _ in range(3):
        parallel = engine.judge_batch(frames)
        assert [r["part_id"] for r in parallel] == [f.part_id for f in frames]
        assert [(r["decision"], r["score"]) for r in parallel] == [
            (r["decision"], r["score"]) for r in serial
        ]
    assert parallel[3]["decision"] == "manual"
    engine.close()


def test_an_error_in_a_judging_thread_makes_the_batch_manual(make_engine: Make) -> None:
    engine = make_engine(
        runner=_unbatched(make_engine()), config=RuntimeConfig(deadline_ms=10_000, judge_threads=2)
    )

    def broken(*_: object) -> None:
        raise RuntimeError("lane bug")

    engine._judge_unit = broken  # type: ignore[method-assign]
    results = engine.judge_batch([frame(_png(0.0), part_id=f"p{i}") for i in range(4)])
    assert [r["decision"] for r in results] == ["manual"] * 4
    assert all(r["reason"].startswith("internal_error") for r in results)
    engine.close()


def test_seq_comes_from_the_callable(make_engine: Make) -> None:
    counter = itertools.count(41)
    engine = make_engine(seq=lambda: next(counter))
    assert [engine.judge(frame(_png(0.0)))["seq"] for _ in range(3)] == [41, 42, 43]


def test_long_ids_and_reasons_still_fit_512_bytes(make_engine: Make) -> None:
    engine = make_engine()
    result = engine.judge(Frame("c" * 200, "p" * 300, error="image_unreadable: " + "x" * 400))
    _check(result)


# ---- hot swap --------------------------------------------------------------------------------


@pytest.fixture
def v2_dir(tmp_path: Path) -> Path:
    build_tiny_package(tmp_path / "v2", version="2.0.0", reject=0.1, manual=0.05)
    return tmp_path / "v2"


def test_hot_swap_switches_to_the_new_model(make_engine: Make, v2_dir: Path) -> None:
    engine = make_engine()
    assert engine.judge(frame(_png(0.15)))["decision"] == "manual"
    report = engine.swap_model(v2_dir)
    assert report.ok and report.model == "tiny@2.0.0"
    result = engine.judge(frame(_png(0.15)))
    assert (result["model"], result["decision"], result["threshold"]) == (
        "tiny@2.0.0",
        "reject",
        0.1,
    )
    assert engine.healthy


def _corrupt_sha(root: Path) -> None:
    doc = json.loads((root / "manifest.json").read_text())
    doc["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("sha256", "sha256_mismatch"),
        ("shape", "input_shape"),
        ("golden", "golden_mismatch"),
        ("missing", "package_invalid"),
    ],
)
def test_failed_hot_swap_keeps_the_old_model_and_reports_unhealthy(
    make_engine: Make, tmp_path: Path, v2_dir: Path, kind: str, reason: str
) -> None:
    bad = tmp_path / "bad"
    if kind == "sha256":
        shutil.copytree(v2_dir, bad)
        _corrupt_sha(bad)
    elif kind == "shape":
        build_tiny_package(bad, version="2.0.0", manifest_size=64)
    elif kind == "golden":
        build_tiny_package(bad, version="2.0.0", golden_score=0.9)
    engine = make_engine()
    report = engine.swap_model(bad)
    assert not report.ok
    assert report.model == "tiny@1.0.0"
    assert reason in (report.reason or "")
    assert not engine.healthy
    assert reason in (engine.last_error or "")
    result = engine.judge(frame(_png(0.15)))
    assert (result["model"], result["decision"]) == ("tiny@1.0.0", "manual")
    # a later good swap makes the engine healthy again
    assert engine.swap_model(v2_dir).ok and engine.healthy


def test_swap_from_no_model(make_engine: Make, v2_dir: Path) -> None:
    engine = make_engine(runner=None)
    assert engine.swap_model(v2_dir).ok
    assert engine.judge(frame(_png(0.0)))["decision"] == "pass"


# ---- shadow ----------------------------------------------------------------------------------


def test_shadow_scores_every_frame_never_decides_and_tracks_agreement(
    make_engine: Make, v2_dir: Path
) -> None:
    engine = make_engine()
    assert engine.set_shadow(v2_dir).ok
    deltas = [0.0, 0.02, 0.07, 0.12, 0.25]  # v2 (reject 0.1, manual 0.05) differs on 0.07, 0.12
    results = [engine.judge(frame(_png(d), part_id=f"p{i}")) for i, d in enumerate(deltas)]
    assert [r["decision"] for r in results] == ["pass", "pass", "pass", "manual", "reject"]
    assert all(r["model"] == "tiny@1.0.0" for r in results)
    engine.judge(frame(b"not an image"))  # unscored frames do not count
    stats = engine.shadow_stats()
    assert (stats.model, stats.frames, stats.agreed) == ("tiny@2.0.0", 5, 3)
    assert stats.agreement == pytest.approx(0.6)
    # rejects: 0.25 by both, 0.12 by the shadow only (it rejects from 0.1)
    assert (stats.both, stats.served_only, stats.shadow_only, stats.errors) == (1, 0, 1, 0)
    assert engine.set_shadow(None).ok and engine.shadow_stats().model is None


def test_shadow_reject_confusion_counts_what_only_the_served_model_rejected(
    make_engine: Make, tmp_path: Path
) -> None:
    engine = make_engine()
    lenient = build_tiny_package(tmp_path / "v3", version="3.0.0", reject=0.3, manual=0.25)
    assert engine.set_shadow(lenient.root).ok
    for i, delta in enumerate([0.0, 0.22, 0.26, 0.35]):  # served: pass, reject, reject, reject
        engine.judge(frame(_png(delta), part_id=f"p{i}"))
    stats = engine.shadow_stats()
    # the shadow: pass, pass, manual, reject
    assert (stats.frames, stats.both, stats.served_only, stats.shadow_only) == (4, 1, 2, 0)
    assert stats.agreed == 2


def test_a_frame_the_shadow_cannot_score_is_an_error_not_an_agreement(
    make_engine: Make, tmp_path: Path
) -> None:
    def loader(package: Path, options: RunnerOptions) -> ModelRunner:
        return ModelRunner.load(package, RunnerOptions(warmup_runs=0), self_test=False)

    engine = make_engine(loader=loader)
    assert engine.set_shadow(build_tiny_package(tmp_path / "nan", nan_score=True).root).ok
    engine.judge(frame(_png(0.15)))  # served: manual, the shadow's NaN would be manual too
    stats = engine.shadow_stats()
    assert (stats.frames, stats.agreed, stats.errors) == (0, 0, 1)
    assert stats.agreement is None


def test_shadow_counts_since_an_earlier_reading_and_a_new_shadow_starts_a_new_epoch(
    make_engine: Make, v2_dir: Path
) -> None:
    engine = make_engine()
    assert engine.set_shadow(v2_dir).ok
    engine.judge(frame(_png(0.12)))
    first = engine.shadow_stats()
    engine.judge(frame(_png(0.25)))
    delta = engine.shadow_stats().since(first)
    assert (delta.frames, delta.both, delta.shadow_only, delta.model) == (1, 1, 0, "tiny@2.0.0")
    assert engine.set_shadow(v2_dir).ok  # set again: its counts start from nothing
    engine.judge(frame(_png(0.12)))
    again = engine.shadow_stats().since(first)
    assert (again.frames, again.shadow_only) == (1, 1)  # not 2 - 1 across the two shadows


def test_failing_shadow_never_touches_the_decision(make_engine: Make, tmp_path: Path) -> None:
    def loader(package: Path, options: RunnerOptions) -> ModelRunner:
        return ModelRunner.load(package, RunnerOptions(warmup_runs=0), self_test=False)

    engine = make_engine(loader=loader)
    assert engine.set_shadow(build_tiny_package(tmp_path / "broken", broken=True)).ok
    result = engine.judge(frame(_png(0.25)))
    assert result["decision"] == "reject"
    assert engine.shadow_stats().errors == 1


def test_bad_shadow_package_is_refused(make_engine: Make, tmp_path: Path) -> None:
    engine = make_engine()
    report = engine.set_shadow(tmp_path / "nowhere")
    assert not report.ok and "shadow_load_failed" in (report.reason or "")
    assert engine.shadow_stats().model is None


# ---- runtime configuration --------------------------------------------------------------------


def test_config_update_applies(make_engine: Make) -> None:
    engine = make_engine()
    report = engine.update_config({"reject_threshold": 0.1, "manual_threshold": 0.05})
    assert report.ok
    result = engine.judge(frame(_png(0.15)))
    assert (result["decision"], result["threshold"]) == ("reject", 0.1)


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"deadline_ms": -1}, "deadline_ms"),
        ({"deadline_ms": "fast"}, "deadline_ms"),
        ({"max_batch": 2.5}, "max_batch"),
        ({"reject_threshold": 0.1}, "set both"),
        ({"reject_threshold": 0.1, "manual_threshold": 0.3}, "manual_threshold"),
        ({"image_modes": ["XYZ"]}, "image_modes"),
        ({"colour": "red"}, "colour"),
        ([1, 2], "object"),
    ],
)
def test_bad_config_update_is_refused_and_the_last_good_one_stays(
    make_engine: Make, update: object, field: str
) -> None:
    engine = make_engine()
    engine.update_config({"deadline_ms": 900})
    before = engine.config
    report = engine.update_config(update)  # type: ignore[arg-type]
    assert not report.ok and field in (report.error or "")
    assert engine.config is before and engine.config.deadline_ms == 900
    assert "config_refused" in (engine.last_error or "")
    assert engine.judge(frame(_png(0.0)))["decision"] == "pass"


def test_thread_change_reloads_the_model(make_engine: Make) -> None:
    engine = make_engine()
    old = engine.runner
    assert engine.update_config({"intra_op_threads": 2}).ok
    assert engine.runner is not old and engine.runner is not None
    assert engine.runner._session.get_session_options().intra_op_num_threads == 2


def test_an_internal_error_is_manual_not_an_exception(make_engine: Make) -> None:
    engine = make_engine()
    weird = Frame("cam", 12345, data=_png(0.0))  # type: ignore[arg-type]  # a caller's bug
    (result,) = engine.judge_batch([weird])
    assert (result["decision"], result["part_id"]) == ("manual", "12345")
    assert result["reason"].startswith("internal_error")
    assert engine.judge(frame(_png(0.0)))["decision"] == "pass"


def test_swap_is_atomic_while_another_thread_judges(make_engine: Make, v2_dir: Path) -> None:
    engine = make_engine()
    v1_dir = engine.runner.package.root if engine.runner else None
    stop = threading.Event()
    seen: list[tuple[str, float, str]] = []

    def judge() -> None:
        while not stop.is_set():
            for r in engine.judge_batch([frame(_png(0.15), part_id=str(i)) for i in range(4)]):
                seen.append((r["model"], r["threshold"], r["decision"]))

    worker = threading.Thread(target=judge)
    worker.start()
    try:
        for _ in range(6):
            assert engine.swap_model(v2_dir).ok
            assert engine.swap_model(v1_dir).ok  # type: ignore[arg-type]
    finally:
        stop.set()
        worker.join(timeout=30)
    # each result is wholly one model's: its ref, its threshold, its decision for score 0.15
    assert set(seen) <= {("tiny@1.0.0", 0.2, "manual"), ("tiny@2.0.0", 0.1, "reject")}
    assert len(seen) > 0


def test_thread_change_that_cannot_reload_is_refused(make_engine: Make, tmp_path: Path) -> None:
    root = tmp_path / "gone"
    runner = ModelRunner.load(build_tiny_package(root))
    engine = make_engine(runner=runner)
    shutil.rmtree(root)  # the package vanished from disk: a new session cannot be made
    report = engine.update_config({"intra_op_threads": 2})
    assert not report.ok and "config_refused" in (report.error or "")
    assert engine.config.intra_op_threads == 1
    assert engine.runner is runner
    assert engine.judge(frame(_png(0.0)))["decision"] == "pass"


@pytest.mark.parametrize(("delta", "decision"), [(0.0, "pass"), (0.3, "reject")])
def test_sixteen_bit_mono_frames_are_judged_by_a_sixteen_bit_model(
    make_engine: Make, tmp_path: Path, delta: float, decision: str
) -> None:
    grey = part_image(delta).convert("L")
    mono12 = mono16(grey, 12)
    runner = ModelRunner.load(build_tiny_package(tmp_path / "m12", bit_depth=12).root)
    engine = make_engine(runner=runner)
    result = _check(engine.judge(frame(image_bytes(mono12))))
    assert result["decision"] == decision, result
    assert result.get("reason") is None
    # the device's score is the one training's preprocessing gives the same frame
    want = expected_score(mono12, bit_depth=12)
    assert result["score"] == pytest.approx(want, abs=1e-5)
    # and the 8-bit frame of the same scene scores the same, within 12-bit rounding
    eight = make_engine().judge(frame(image_bytes(grey)))["score"]
    assert result["score"] == pytest.approx(eight, abs=5e-3)


@pytest.mark.parametrize("delta", [0.0, 0.3])
def test_rgba_frames_are_judged(make_engine: Make, delta: float) -> None:
    rgb = part_image(delta)
    engine = make_engine()
    result = _check(engine.judge(frame(image_bytes(rgb.convert("RGBA")))))
    assert result["decision"] == ("pass" if delta == 0.0 else "reject"), result
    assert result["score"] == pytest.approx(engine.judge(frame(image_bytes(rgb)))["score"])


def test_frames_that_do_not_fit_the_model_are_manual_with_the_reason(
    make_engine: Make, tmp_path: Path
) -> None:
    colour = FrameSpec(channels=3, min_size=(24, 24), max_size=(48, 48))
    runner = ModelRunner.load(build_tiny_package(tmp_path / "fit", frames=colour).root)
    engine = make_engine(runner=runner)
    grey = part_image(0.0, 32, "L")
    cases = {
        "image_bit_depth": mono16(grey, 12),  # 16-bit frame, 8-bit model
        "image_channels": grey,  # grey frame, colour model
        "image_size": part_image(0.0, 64),  # 64x64, model took 24..48
    }
    for reason, image in cases.items():
        result = _check(engine.judge(frame(image_bytes(image))))
        assert result["decision"] == "manual" and result["score"] is None, result
        assert result["reason"].startswith(reason), result
    assert _check(engine.judge(frame(image_bytes(part_image(0.0, 32)))))["decision"] == "pass"
    eight_bit = make_engine(
        runner=ModelRunner.load(build_tiny_package(tmp_path / "m12", bit_depth=12).root)
    )
    result = _check(eight_bit.judge(frame(image_bytes(part_image(0.0, 32)))))
    assert result["decision"] == "manual" and result["reason"].startswith("image_bit_depth")

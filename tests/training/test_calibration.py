"""Thresholds calibrated to target rates, and the registration gate that checks the same rates."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from inspector.model_package import Thresholds
from training.calibration import (
    DEFAULT_TARGET_FALSE_REJECT_RATE,
    DEFAULT_TARGET_MANUAL_RATE,
    Targets,
    calibrate,
    describe_gate,
    rate_lower_bound,
    registration_gate,
)
from training.errors import CalibrationError


def _counts(good: np.ndarray, thresholds: Thresholds) -> tuple[int, int]:
    rejected = int((good >= thresholds.reject).sum())
    manual = int(((good >= thresholds.manual) & (good < thresholds.reject)).sum())
    return rejected, manual


@pytest.mark.parametrize(
    ("n", "false_reject", "manual"),
    [(299, 0.005, 0.02), (199, 0.005, 0.02), (500, 0.01, 0.05), (120, 0.02, 0.03)],
)
def test_rates_on_validation_good_images_follow_the_order_statistic_rule(
    n: int, false_reject: float, manual: float
) -> None:
    good = np.random.default_rng(n).gamma(2.0, size=n)
    targets = Targets(false_reject, manual)
    result = calibrate(good, targets=targets)
    rejected, in_band = _counts(good, result.thresholds)
    assert rejected == math.floor(false_reject * (n + 1)) >= 1
    assert in_band == math.floor(manual * (n + 1)) >= 1
    record = result.record
    assert record["targets"] == {"false_reject_rate": false_reject, "manual_rate": manual}
    assert (record["false_reject"]["count"], record["manual"]["count"]) == (rejected, in_band)
    assert record["manual"]["rate"] == pytest.approx(in_band / n)
    # the measured share is the target within the rule's one-image resolution
    assert abs(record["manual"]["rate"] - manual) <= 1 / n + 1e-12
    for name, target in (("false_reject", false_reject), ("manual", manual)):
        assert record[name]["expected_rate_bound"] <= target
        assert record[name]["resolved"] is True
    assert record["manual"]["band"] == "calibrated" and record["notes"] == []
    assert result.thresholds.manual < result.thresholds.reject


def test_a_target_times_n_plus_one_that_is_whole_is_not_lost_to_float_error() -> None:
    good = np.random.default_rng(5).random(99)  # 0.29 * 100 is 28.999999999999996 in floats
    result = calibrate(good, targets=Targets(0.07, 0.29))
    assert _counts(good, result.thresholds) == (7, 29)


def test_expected_rates_on_new_good_parts_stay_within_the_targets() -> None:
    """Uniform scores: a new part's chance of ``score >= t`` is ``1 - t``, so every calibration's
    true rates are known; averaged over many validation sets they meet the targets."""
    rng = np.random.default_rng(7)
    targets, n = Targets(0.01, 0.05), 199
    false_reject, manual = [], []
    for _ in range(2000):
        thresholds = calibrate(rng.random(n), targets=targets).thresholds
        false_reject.append(1 - thresholds.reject)
        manual.append(thresholds.reject - thresholds.manual)
    # the rule's expectations: floor(target * (n + 1)) / (n + 1) = 0.01 and 0.05 exactly here
    assert np.mean(false_reject) == pytest.approx(0.01, abs=0.001)
    assert np.mean(manual) == pytest.approx(0.05, abs=0.002)


def test_ties_are_never_split_and_never_push_a_count_above_the_rule() -> None:
    good = np.repeat([1.0, 2.0, 3.0, 4.0, 5.0], [150, 60, 6, 3, 1])  # n = 220
    result = calibrate(good, targets=Targets(0.02, 0.03))  # allows 4 rejects, 6 manual
    rejected, in_band = _counts(good, result.thresholds)
    assert (rejected, in_band) == (4, 6)
    assert result.thresholds.reject == 4.0 and result.thresholds.manual == 3.0


def test_too_few_images_widen_the_band_and_say_so_never_an_empty_band() -> None:
    good = np.random.default_rng(1).normal(size=30)  # resolves 1/31: above both targets
    result = calibrate(good, targets=Targets(DEFAULT_TARGET_FALSE_REJECT_RATE, 0.02))
    thresholds, record = result.thresholds, result.record
    assert thresholds.reject > good.max()  # reject above every validation good score
    assert thresholds.manual < thresholds.reject
    assert _counts(good, thresholds) == (0, 1)  # widened to the highest good score
    assert record["false_reject"]["resolved"] is False
    assert record["false_reject"]["expected_rate_bound"] == pytest.approx(1 / 31)
    assert (record["manual"]["band"], record["manual"]["resolved"]) == ("widened", False)
    assert any("needs at least 199" in note for note in record["notes"])
    assert any("widened" in note and "needs at least 49" in note for note in record["notes"])


def test_a_tied_group_larger_than_the_band_widens_it_and_says_so() -> None:
    good = np.repeat([1.0, 2.0, 3.0], [200, 30, 2])  # n = 232: 2 rejects, 4 manual allowed
    result = calibrate(good, targets=Targets(0.01, 0.02))
    assert _counts(good, result.thresholds) == (2, 30)
    assert result.record["manual"]["band"] == "widened"
    assert result.record["manual"]["resolved"] is False
    assert any("tied scores" in note for note in result.record["notes"])


def test_a_zero_manual_target_is_the_only_empty_band_and_is_recorded() -> None:
    good = np.random.default_rng(2).normal(size=400)
    result = calibrate(good, targets=Targets(0.01, 0.0))
    assert result.thresholds.manual == result.thresholds.reject
    assert result.record["manual"]["count"] == 0
    assert result.record["manual"]["band"] == "none (target manual rate 0)"


def test_defects_only_report_the_operating_point() -> None:
    rng = np.random.default_rng(3)
    good, defect = rng.normal(size=300), rng.normal(3.0, 1.0, size=40)
    alone = calibrate(good)
    with_defects = calibrate(good, defect)
    assert with_defects.thresholds == alone.thresholds  # defects never move the thresholds
    report = with_defects.record["defects"]
    rejected = int((defect >= alone.thresholds.reject).sum())
    manual = int(((defect >= alone.thresholds.manual) & (defect < alone.thresholds.reject)).sum())
    assert (report["images"], report["rejected"], report["manual"]) == (40, rejected, manual)
    assert report["recall"] == pytest.approx(rejected / 40)
    assert report["manual_share"] == pytest.approx(manual / 40)
    assert report["passed"] == 40 - rejected - manual
    assert alone.record["defects"] is None


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ((0.0, 0.02), "false-reject rate must be in (0, 0.5)"),
        ((0.6, 0.02), "false-reject rate must be in (0, 0.5)"),
        ((0.01, -0.1), "manual rate must be in [0, 0.5)"),
    ],
)
def test_bad_targets_are_refused(targets: tuple[float, float], message: str) -> None:
    with pytest.raises(CalibrationError, match=re.escape(message)):
        Targets(*targets)


def test_calibration_needs_a_good_image_and_finite_scores() -> None:
    with pytest.raises(CalibrationError, match="at least one good"):
        calibrate([])
    with pytest.raises(CalibrationError, match="finite"):
        calibrate([1.0, float("nan")])


def test_defaults_are_the_plant_files() -> None:
    from stacks.config import Calibration

    plant = Calibration()
    assert (plant.target_false_reject_rate, plant.target_manual_rate) == (
        DEFAULT_TARGET_FALSE_REJECT_RATE,
        DEFAULT_TARGET_MANUAL_RATE,
    )
    assert Targets() == Targets(plant.target_false_reject_rate, plant.target_manual_rate)


@pytest.mark.parametrize(("count", "images"), [(1, 30), (3, 30), (5, 200), (40, 40), (7, 1000)])
def test_lower_bound_is_clopper_pearson(count: int, images: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    expected = stats.beta.ppf(0.05, count, images - count + 1)
    assert rate_lower_bound(count, images, 0.95) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert rate_lower_bound(0, images) == 0.0


def test_gate_passes_a_calibrated_model_on_fresh_good_parts() -> None:
    rng = np.random.default_rng(11)
    targets = Targets(0.01, 0.03)
    thresholds = calibrate(rng.gamma(2.0, size=600), targets=targets).thresholds
    gate = registration_gate(rng.gamma(2.0, size=300), thresholds, targets)
    assert gate["passed"] is True and gate["failed"] == 0
    checks = gate["checks"]
    for name, target in (("false_reject", 0.01), ("manual", 0.03)):
        assert checks[name]["images"] == 300 and checks[name]["target"] == target
        assert checks[name]["lower_bound"] <= target
    assert checks["image_auroc"]["applies"] is False  # good-only: rates decide
    assert "registration gate passed" in describe_gate(gate)


def test_gate_fails_a_model_whose_test_false_reject_rate_is_clearly_above_target() -> None:
    rng = np.random.default_rng(12)
    targets = Targets(0.01, 0.03)
    thresholds = calibrate(rng.gamma(2.0, size=600), targets=targets).thresholds
    drifted = rng.gamma(2.0, size=300) * 1.6  # the test parts score higher: ~8 % false rejects
    gate = registration_gate(drifted, thresholds, targets)
    check = gate["checks"]["false_reject"]
    assert check["rate"] > 0.05 and check["lower_bound"] > 0.01
    assert gate["passed"] is False and "false_reject" in gate["failed_checks"]
    assert "FAILED (false_reject" in describe_gate(gate)


def test_a_rate_just_above_target_within_sampling_error_passes() -> None:
    thresholds = Thresholds(reject=10.0, manual=5.0)
    good = np.r_[np.zeros(97), [11.0, 12.0, 6.0]]  # 2 % false rejects, target 1 %, 100 images
    gate = registration_gate(good, thresholds, Targets(0.01, 0.02))
    assert gate["checks"]["false_reject"]["rate"] == 0.02
    assert gate["checks"]["false_reject"]["lower_bound"] < 0.01
    assert gate["passed"] is True


def test_gate_checks_auroc_only_with_defect_images_and_needs_good_images() -> None:
    thresholds, targets = Thresholds(reject=10.0, manual=5.0), Targets(0.01, 0.02)
    good = np.zeros(50)
    weak = registration_gate(
        good, thresholds, targets, image_auroc=0.8, defect_images=10, min_image_auroc=0.9
    )
    assert weak["failed_checks"] == ["image_auroc"]
    strong = registration_gate(good, thresholds, targets, image_auroc=0.97, defect_images=10)
    assert strong["passed"] is True
    empty = registration_gate([], thresholds, targets)
    assert empty["passed"] is False and empty["reason"] == "no good test image"

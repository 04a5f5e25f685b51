"""Decision thresholds calibrated to a plant's target rates, and the registration gate.

Calibration uses the validation good images only. With ``n`` of them, a new good part's score
is equally likely to take any of the ``n + 1`` ranks among them (the images are exchangeable),
so a threshold placed *at* a validation score with ``k`` scores at or above it (itself
included) has an expected false-reject rate of ``k / (n + 1)`` on new good parts. The rule
takes the largest ``k`` whose expected rate is within the target, ``k = floor(target * (n +
1))``: ``reject`` is the ``k``-th highest good score, and ``manual`` the score that puts
``floor(target_manual * (n + 1))`` good images in the band ``[manual, reject)`` (expected
manual rate ``band count / (n + 1)``). Thresholds are validation scores themselves, never
between them. Ties: a threshold never splits a tied group (all of it is at or above), so the
counts can come out below ``k`` but never above it.

When ``n`` is too small to resolve a target (``floor(target * (n + 1)) == 0``, i.e. fewer
than ``1 / target - 1`` images), the fallbacks are documented and recorded, never silent:
``reject`` goes above every validation good score (their maximum plus half the spread above
their median; the expected rate is then at most ``1 / (n + 1)``), and a manual band that the
rule leaves empty (too few images, or a tied group larger than the band) is widened to the
next tied group of good scores below ``reject``. The record says ``resolved: false`` and why.
A manual band is empty only when the target manual rate is 0.

The registration gate measures the same two rates on the held-out test good images and fails
a rate whose one-sided Clopper–Pearson lower bound (confidence 0.95 by default) is above its
target: the model is refused only when the test images show, beyond sampling error, that it
misses the target. With defect images in the test split the image AUROC must also reach a
minimum; without them (AUROC undefined) the gate decides on the rates alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inspector.model_package import Thresholds
from training.errors import CalibrationError

# The plant file's calibration defaults (stacks/config.py ``Calibration``; a test keeps them
# equal: the SageMaker steps ship training/ without stacks/).
DEFAULT_TARGET_FALSE_REJECT_RATE = 0.005
DEFAULT_TARGET_MANUAL_RATE = 0.02
DEFAULT_GATE_CONFIDENCE = 0.95
DEFAULT_MIN_IMAGE_AUROC = 0.95
RULE = "target rates on validation good images, floor(target * (n + 1)) order statistics"
GATE_RULE = (
    "fails when a test good-image rate's one-sided Clopper-Pearson lower bound exceeds its "
    "target, or (with test defect images) when image AUROC is below the minimum"
)


@dataclass(frozen=True)
class Targets:
    """A plant's target rates on good parts: false rejects and manual decisions."""

    false_reject_rate: float = DEFAULT_TARGET_FALSE_REJECT_RATE
    manual_rate: float = DEFAULT_TARGET_MANUAL_RATE

    def __post_init__(self) -> None:
        if not 0 < self.false_reject_rate < 0.5:
            raise CalibrationError(
                f"target false-reject rate must be in (0, 0.5), got {self.false_reject_rate}"
            )
        if not 0 <= self.manual_rate < 0.5:
            raise CalibrationError(
                f"target manual rate must be in [0, 0.5), got {self.manual_rate}"
            )


@dataclass(frozen=True)
class Calibrated:
    """Calibrated thresholds and the record of how they were chosen (``metrics.calibration``)."""

    thresholds: Thresholds
    record: dict[str, Any]


def _cut(scores: np.ndarray, allowed: int) -> float | None:
    """Lowest score with at most ``allowed`` scores at or above it (a tied group is counted
    whole); ``None`` when only a threshold above every score qualifies."""
    values = np.unique(scores)
    at_or_above = len(scores) - np.searchsorted(scores, values, side="left")
    fits = np.nonzero(at_or_above <= allowed)[0]
    return float(values[fits[0]]) if len(fits) else None


def _allowed(target: float, images: int) -> int:
    """``floor(target * (images + 1))``, robust to the float error of products like 0.29 * 100."""
    return math.floor(target * (images + 1) + 1e-9)


def _rate(count: int, images: int, bound: float, target: float) -> dict[str, Any]:
    return {
        "count": count,
        "images": images,
        "rate": count / images,
        "expected_rate_bound": bound,
        "resolved": bound <= target + 1e-12,
    }


def calibrate(
    good: Sequence[float] | np.ndarray,
    defect: Sequence[float] | np.ndarray = (),
    targets: Targets = Targets(),
) -> Calibrated:
    """Thresholds from validation scores at the ``targets``, with the figures behind them.

    Args:
        good: validation good-image scores (at least one).
        defect: validation defect-image scores; they do not move the thresholds, only the
            recall and manual share reported at the chosen operating point.
        targets: the plant's target false-reject and manual rates.

    Raises:
        CalibrationError: no good score, or a score that is not finite.
    """
    good_scores = np.sort(np.asarray(good, dtype=np.float64))
    defect_scores = np.sort(np.asarray(defect, dtype=np.float64))
    n = len(good_scores)
    if n == 0:
        raise CalibrationError("calibration needs at least one good validation image")
    if not (np.isfinite(good_scores).all() and np.isfinite(defect_scores).all()):
        raise CalibrationError("validation scores must be finite")
    notes: list[str] = []

    allowed_rejects = _allowed(targets.false_reject_rate, n)
    reject = _cut(good_scores, allowed_rejects)
    if reject is None:
        top, median = float(good_scores[-1]), float(np.median(good_scores))
        reject = top + 0.5 * max(top - median, 1e-6)
        why = (
            f"{n} validation good image(s) resolve a false-reject rate down to 1/(n+1) = "
            f"{1 / (n + 1):.4f}, above the target {targets.false_reject_rate:g} (it needs at "
            f"least {math.ceil(1 / targets.false_reject_rate) - 1})"
            if allowed_rejects == 0
            else f"the highest tied group of good scores ({int((good_scores == top).sum())} "
            f"images) is more than the {allowed_rejects} the rule allows at or above reject"
        )
        notes.append(
            f"{why}; reject placed above every validation good score: their maximum plus half "
            "the spread above their median"
        )
    rejected = int((good_scores >= reject).sum())

    allowed_manual = _allowed(targets.manual_rate, n)
    band = "calibrated"
    manual = reject
    if targets.manual_rate > 0:
        cut = _cut(good_scores, rejected + allowed_manual)
        manual = reject if cut is None else min(cut, reject)
        if not ((good_scores >= manual) & (good_scores < reject)).any():
            below = good_scores[good_scores < reject]
            manual = float(below[-1]) if len(below) else reject
            band = "widened"
            notes.append(
                "the rule put no validation good image in the manual band "
                + (
                    f"({n} image(s) resolve a manual rate down to 1/(n+1) = {1 / (n + 1):.4f}, "
                    f"above the target {targets.manual_rate:g}; it needs at least "
                    f"{math.ceil(1 / targets.manual_rate) - 1})"
                    if allowed_manual == 0
                    else "(tied scores)"
                )
                + "; widened to the next good score(s) below reject"
            )
        if manual >= reject:
            band = "empty"
            notes.append("no good score lies below reject: the manual band is empty")
    else:
        band = "none (target manual rate 0)"
    in_band = int(((good_scores >= manual) & (good_scores < reject)).sum())
    # the rule's bound on the expected rate on new good parts: count / (n + 1), and 1 / (n + 1)
    # for a reject threshold above every validation score
    reject_bound = max(rejected, 1) / (n + 1)

    record: dict[str, Any] = {
        "rule": RULE,
        "targets": {
            "false_reject_rate": targets.false_reject_rate,
            "manual_rate": targets.manual_rate,
        },
        "false_reject": _rate(rejected, n, reject_bound, targets.false_reject_rate),
        "manual": {**_rate(in_band, n, in_band / (n + 1), targets.manual_rate), "band": band},
        "defects": defect_report(defect_scores, Thresholds(reject=reject, manual=manual)),
        "notes": notes,
    }
    return Calibrated(Thresholds(reject=reject, manual=manual), record)


def defect_report(
    defect: Sequence[float] | np.ndarray, thresholds: Thresholds
) -> dict[str, Any] | None:
    """Recall and the manual share of defect images at ``thresholds`` (None without defects)."""
    scores = np.asarray(defect, dtype=np.float64)
    if not len(scores):
        return None
    rejected = int((scores >= thresholds.reject).sum())
    manual = int(((scores >= thresholds.manual) & (scores < thresholds.reject)).sum())
    return {
        "images": len(scores),
        "rejected": rejected,
        "manual": manual,
        "passed": len(scores) - rejected - manual,
        "recall": rejected / len(scores),
        "manual_share": manual / len(scores),
    }


def _binomial_tail(count: int, images: int, p: float) -> float:
    """P(X >= count) for X ~ Binomial(images, p)."""
    if p <= 0:
        return 0.0 if count > 0 else 1.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(images + 1)
        - math.lgamma(k + 1)
        - math.lgamma(images - k + 1)
        + k * log_p
        + (images - k) * log_q
        for k in range(count, images + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def rate_lower_bound(count: int, images: int, confidence: float = DEFAULT_GATE_CONFIDENCE) -> float:
    """One-sided Clopper–Pearson lower bound of a binomial rate: the ``p`` at which
    ``count`` or more of ``images`` has probability ``1 - confidence`` (0 when ``count`` is 0)."""
    if not 0 < confidence < 1:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence}")
    if images <= 0 or not 0 <= count <= images:
        raise CalibrationError(f"a rate needs 0 <= count <= images, images > 0 ({count}/{images})")
    if count == 0:
        return 0.0
    alpha = 1 - confidence
    low, high = 0.0, 1.0
    for _ in range(100):  # bisection: the tail grows with p
        mid = (low + high) / 2
        if _binomial_tail(count, images, mid) < alpha:
            low = mid
        else:
            high = mid
    return low


def registration_gate(
    good: Sequence[float] | np.ndarray,
    thresholds: Thresholds,
    targets: Targets,
    *,
    image_auroc: float | None = None,
    defect_images: int = 0,
    min_image_auroc: float = DEFAULT_MIN_IMAGE_AUROC,
    confidence: float = DEFAULT_GATE_CONFIDENCE,
) -> dict[str, Any]:
    """Whether a package may be registered, from its held-out test scores, with the figures.

    Args:
        good: test good-image scores.
        thresholds: the package's thresholds.
        targets: the target rates it was calibrated to (the plant's).
        image_auroc: test image AUROC (None when the test split has no defect image).
        defect_images: number of test defect images.
        min_image_auroc: minimum AUROC, checked only when there are defect images.
        confidence: of the one-sided Clopper–Pearson lower bounds.
    """
    scores = np.asarray(good, dtype=np.float64)
    n = len(scores)
    checks: dict[str, Any] = {}
    for name, count, target in (
        ("false_reject", int((scores >= thresholds.reject).sum()), targets.false_reject_rate),
        (
            "manual",
            int(((scores >= thresholds.manual) & (scores < thresholds.reject)).sum()),
            targets.manual_rate,
        ),
    ):
        bound = rate_lower_bound(count, n, confidence) if n else None
        checks[name] = {
            "count": count,
            "images": n,
            "rate": count / n if n else None,
            "lower_bound": bound,
            "target": target,
            "passed": bound is not None and bound <= target,
        }
    applies = defect_images > 0
    checks["image_auroc"] = {
        "value": image_auroc,
        "minimum": min_image_auroc,
        "applies": applies,
        "passed": (not applies) or (image_auroc is not None and image_auroc >= min_image_auroc),
    }
    failed = [name for name, check in checks.items() if not check["passed"]]
    return {
        "passed": not failed,
        "failed": len(failed),
        "failed_checks": failed,
        "rule": GATE_RULE,
        "confidence": confidence,
        "reason": "no good test image" if not n else None,
        "checks": checks,
    }


def describe_gate(gate: dict[str, Any]) -> str:
    """One line with the figures behind a gate decision."""
    parts = []
    for name in ("false_reject", "manual"):
        c = gate["checks"][name]
        bound = "n/a" if c["lower_bound"] is None else f"{c['lower_bound']:.4f}"
        parts.append(
            f"{name} {c['count']}/{c['images']} (lower bound {bound}, target {c['target']:g})"
        )
    auroc = gate["checks"]["image_auroc"]
    if not auroc["applies"]:
        parts.append("AUROC not checked (no defect image)")
    else:
        value = "n/a" if auroc["value"] is None else f"{auroc['value']:.4f}"
        parts.append(f"AUROC {value} (minimum {auroc['minimum']:g})")
    verdict = "passed" if gate["passed"] else f"FAILED ({', '.join(gate['failed_checks'])})"
    return f"registration gate {verdict}: " + "; ".join(parts)

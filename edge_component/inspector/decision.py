"""Score → pass / reject / manual, and the fail-safe verdicts for frames that cannot be judged.

``score >= reject`` → reject; ``manual <= score < reject`` → manual; below → pass. Anything that
prevents a trustworthy score (bad image, model error, deadline missed, no model, a NaN score)
gives ``manual`` with a reason: the inspector never passes a part it did not judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PASS = "pass"
REJECT = "reject"
MANUAL = "manual"

# Reason codes for fail-safe verdicts (image reasons come from inspector.decode).
MANUAL_BAND = "manual_band"
MODEL_ERROR = "model_error"
DEADLINE_MISSED = "deadline_missed"
NO_MODEL = "no_model"
SCORE_INVALID = "score_invalid"
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class DecisionThresholds:
    """The reject threshold and the lower edge of the manual band (``manual <= reject``)."""

    reject: float
    manual: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.reject) and math.isfinite(self.manual)):
            raise ValueError("thresholds must be finite numbers")
        if self.manual > self.reject:
            raise ValueError(f"thresholds: manual {self.manual} > reject {self.reject}")


@dataclass(frozen=True)
class Verdict:
    """A decision with the score it was made on (None when unscored) and a reason if any."""

    decision: str
    score: float | None
    reason: str | None = None


def decide(score: float, thresholds: DecisionThresholds) -> Verdict:
    """Apply the thresholds to a score; a non-finite score is ``manual`` (never ``pass``)."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        return Verdict(MANUAL, None, SCORE_INVALID)
    if not math.isfinite(value):
        return Verdict(MANUAL, None, SCORE_INVALID)
    if value >= thresholds.reject:
        return Verdict(REJECT, value, None)
    if value >= thresholds.manual:
        return Verdict(MANUAL, value, MANUAL_BAND)
    return Verdict(PASS, value, None)


def fail_safe(reason: str, detail: str = "", score: float | None = None) -> Verdict:
    """The ``manual`` verdict for a frame that could not be judged, with its reason."""
    text = f"{reason}: {detail}" if detail else reason
    return Verdict(MANUAL, score, text)

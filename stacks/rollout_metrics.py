"""The rollout's health metrics: what the Plant stack publishes and ``rollout.aws`` reads.

One definition for both sides, with no CDK import (the promotion job runs without Node). The
Plant stack's rollout-health rules (``stacks/constructs/rollout_health.py``) turn each health
message that names its ring into metrics of the namespace :func:`rollout_namespace`:

- per ring, served model version, line and station (:data:`STRATUM`), and per ring and served
  version (:data:`RING_VERSION`): :data:`DECISION_METRICS`;
- with a shadow model, per ring and the **shadow's** version (:data:`SHADOW`):
  :data:`SHADOW_METRICS` (frames and the reject confusion against the served decision), and per
  ring and served version: :data:`SERVED_SHADOW_METRICS` (frames and raw agreements);
- with operators' verdicts from a review station (the health message's ``labels``), per ring
  and the version of the model that judged the reviewed parts (:data:`RING_VERSION`):
  :data:`LABEL_METRICS`, the interval's verdicts counted with their corrections (a replaced
  verdict moves -1 / +1), so their sums over a window are the standing verdicts given in it.
  The plant's quality metrics per line (``stacks/constructs/quality_metrics.py``) have the same
  names.
"""

from __future__ import annotations

RING = "Ring"
VERSION = "Version"
"""The served model's version: the part of the health message's ``model`` after ``@``."""
LINE = "Line"
STATION = "Station"
SHADOW_VERSION = "ShadowVersion"
"""The shadow model's version: the part of ``shadow.model`` after ``@``."""

STRATUM = (RING, VERSION, LINE, STATION)
RING_VERSION = (RING, VERSION)
SHADOW = (RING, SHADOW_VERSION)

INSPECTIONS = "Inspections"
REJECTS = "Rejects"
MANUAL = "Manual"
INFERENCE_P99 = "InferenceP99"
HEALTH_REPORTS = "HealthReports"
SHADOW_FRAMES = "ShadowFrames"
SHADOW_REJECT_BOTH = "ShadowRejectBoth"
SHADOW_REJECT_SERVED_ONLY = "ShadowRejectServedOnly"
SHADOW_REJECT_SHADOW_ONLY = "ShadowRejectShadowOnly"
SHADOW_AGREED = "ShadowAgreed"
REVIEWED_REJECTS = "ReviewedRejects"
"""Rejects operators gave a verdict (good or defect)."""
DEFECTIVE_REJECTS = "DefectiveRejects"
"""Rejects operators found defective: reject precision = DefectiveRejects / ReviewedRejects."""
REVIEWED_MANUAL = "ReviewedManual"
DEFECTIVE_MANUAL = "DefectiveManual"
"""Manual parts operators found defective (their share: DefectiveManual / ReviewedManual)."""

# (metric name, CloudWatch unit)
DECISION_METRICS: tuple[tuple[str, str], ...] = (
    (INSPECTIONS, "Count"),
    (REJECTS, "Count"),
    (MANUAL, "Count"),
    (INFERENCE_P99, "Milliseconds"),
    (HEALTH_REPORTS, "Count"),
)
SHADOW_METRICS: tuple[tuple[str, str], ...] = (
    (SHADOW_FRAMES, "Count"),
    (SHADOW_REJECT_BOTH, "Count"),
    (SHADOW_REJECT_SERVED_ONLY, "Count"),
    (SHADOW_REJECT_SHADOW_ONLY, "Count"),
)
SERVED_SHADOW_METRICS: tuple[tuple[str, str], ...] = (
    (SHADOW_FRAMES, "Count"),
    (SHADOW_AGREED, "Count"),
)

LABEL_METRICS: tuple[tuple[str, str], ...] = (
    (REVIEWED_REJECTS, "Count"),
    (DEFECTIVE_REJECTS, "Count"),
    (REVIEWED_MANUAL, "Count"),
    (DEFECTIVE_MANUAL, "Count"),
)


def rollout_namespace(plant: str) -> str:
    """CloudWatch namespace of a plant's rollout health metrics."""
    return f"LineGuard/{plant}/rollout"

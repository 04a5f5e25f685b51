"""Aggregate inspector health messages (``inspector.health`` v1) into a ring's health figures.

The fleet simulator builds its figures through this function from messages of the same shape the
real inspector publishes, so the gates see the same quantities in simulation as in the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rollout.fleet import RingHealth

DECISIONS = ("pass", "reject", "manual")
LABEL_COUNTS = ("reviewed_rejects", "defective_rejects", "reviewed_manual", "defective_manual")


def model_version(message: dict[str, Any]) -> str | None:
    """The version part of the message's ``model`` (``name@version``), or None."""
    model = message.get("model")
    if not isinstance(model, str) or "@" not in model:
        return None
    return model.rsplit("@", 1)[1]


def _nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def aggregate(
    messages: Iterable[dict[str, Any]],
    *,
    devices: int,
    healthy: int,
    version: str | None = None,
) -> RingHealth:
    """Sum counts, take the 99th percentile of the messages' p99 and the frame-weighted shadow
    agreement of the v1 health messages of ``version`` (all versions when None)."""
    decisions = dict.fromkeys(DECISIONS, 0)
    p99s: list[float] = []
    agree_num = agree_den = 0.0
    reporting: set[str] = set()
    labels = dict.fromkeys(LABEL_COUNTS, 0)
    for message in messages:
        if message.get("v") != 1:
            continue
        _add_labels(labels, message.get("labels"), version)
        if version is not None and model_version(message) != version:
            continue
        reporting.add(str(message.get("device")))
        counts = message.get("counts") or {}
        for decision in DECISIONS:
            decisions[decision] += int(counts.get(decision) or 0)
        p99 = (message.get("latency_ms") or {}).get("p99")
        if isinstance(p99, int | float):
            p99s.append(float(p99))
        shadow = message.get("shadow") or {}
        agreement, frames = shadow.get("agreement"), shadow.get("frames")
        if isinstance(agreement, int | float) and isinstance(frames, int) and frames > 0:
            agree_num += agreement * frames
            agree_den += frames
    return RingHealth(
        devices=devices,
        healthy=healthy,
        reporting=len(reporting),
        decisions=decisions,
        latency_p99_ms=_nearest_rank(p99s, 99),
        shadow_agreement=agree_num / agree_den if agree_den else None,
        labels=labels,
    )


def _add_labels(acc: dict[str, int], entry: Any, version: str | None) -> None:
    """Add a message's verdict counts (``labels``, inspector.quality) when the model that
    judged the reviewed parts is ``version`` (any when None): not the served model's version,
    which may be newer than a review queue's parts."""
    if not isinstance(entry, dict):
        return
    if version is not None and model_version(entry) != version:
        return
    for decision, prefix in (("reject", "rejects"), ("manual", "manual")):
        counts = entry.get(decision) or {}
        good, defect = int(counts.get("good") or 0), int(counts.get("defect") or 0)
        acc[f"reviewed_{prefix}"] += good + defect
        acc[f"defective_{prefix}"] += defect

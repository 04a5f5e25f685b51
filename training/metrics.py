"""Evaluation figures with their uncertainty: image AUROC, bootstrap intervals, pixel AUROC.

Pure functions on arrays; ``training.evaluate`` feeds them the scores, anomaly maps and masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy.stats import rankdata

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95

Statistic = Callable[[np.ndarray, np.ndarray], "float | None"]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None unless both labels are present."""
    labels = np.asarray(labels).astype(bool).ravel()
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64).ravel())
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def bootstrap_interval(
    labels: np.ndarray,
    values: np.ndarray,
    statistic: Statistic,
    groups: Sequence[str] | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """``statistic(labels, values)`` with a percentile bootstrap interval.

    Resamples whole groups (an image without a group is its own) with replacement, stratified:
    groups of good images only, of defect images only, and mixed ones are drawn separately, each
    as many times as there are, so every resample keeps the class balance.

    Returns:
        ``{"value", "ci95": [lo, hi], "resamples", "groups"}``; ``value`` and ``ci95`` are None
        when the statistic is undefined on the data. ``resamples`` counts the resamples on which
        it was defined.
    """
    labels = np.asarray(labels)
    values = np.asarray(values)
    keys = list(groups) if groups is not None else [str(i) for i in range(len(labels))]
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    units = [np.array(idx) for idx in members.values()]
    strata: dict[tuple[bool, bool], list[int]] = {}
    for u, idx in enumerate(units):
        present = labels[idx]
        strata.setdefault((bool((present == 0).any()), bool((present == 1).any())), []).append(u)
    value = statistic(labels, values) if len(labels) else None
    record: dict[str, Any] = {"value": value, "ci95": None, "resamples": 0, "groups": len(units)}
    if value is None:
        return record
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        chosen = [
            units[u]
            for key in sorted(strata)
            for u in rng.choice(strata[key], size=len(strata[key]), replace=True)
        ]
        idx = np.concatenate(chosen)
        drawn = statistic(labels[idx], values[idx])
        if drawn is not None:
            draws.append(drawn)
    if draws:
        tail = (1 - confidence) / 2 * 100
        lo, hi = np.percentile(draws, [tail, 100 - tail])
        record["ci95"] = [float(lo), float(hi)]
    record["resamples"] = len(draws)
    return record


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float | None:
    """Share of images whose prediction equals the label."""
    return float((labels == predicted).mean()) if len(labels) else None


def recall(labels: np.ndarray, predicted: np.ndarray) -> float | None:
    """Share of defect images predicted defect; None without defect images."""
    defects = labels == 1
    return float(predicted[defects].mean()) if defects.any() else None


def resize_map(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """An anomaly map brought to ``height`` × ``width`` by bilinear interpolation."""
    image = Image.fromarray(np.asarray(anomaly_map, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


def pixel_auroc(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray | tuple[int, int]]
) -> float | None:
    """Pixel-level AUROC over images pooled, as MVTec AD reports it.

    Args:
        maps: one anomaly map per image, any resolution.
        masks: per image its boolean defect mask, or ``(height, width)`` for an image known to
            be defect-free (every pixel negative); each map is resized to it.
    """
    labels, scores = [], []
    for anomaly_map, mask in zip(maps, masks, strict=True):
        if isinstance(mask, tuple):
            truth = np.zeros(mask, dtype=bool)
        else:
            truth = np.asarray(mask).astype(bool)
        labels.append(truth.ravel())
        scores.append(resize_map(anomaly_map, *truth.shape).ravel())
    if not labels:
        return None
    return auroc(np.concatenate(labels), np.concatenate(scores))

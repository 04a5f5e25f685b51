"""The retraining sampler: keeps rejects and near-threshold frames under a byte budget.

A frame is worth keeping when it was rejected, fell in the model's manual band, or when its
score lies within ``band`` (a fraction of the reject threshold) of the threshold — the frames a retrained model most needs.
Unreadable frames (no score) are not kept. Kept frames go to the journal's sample area, which
the journal's cap policy evicts first. Two budgets bound it: ``bytes_per_hour`` (what an uploader
may send per hour) and ``disk_cap_bytes`` (the sample area on disk; the oldest go first).
Each sample keeps its result message, so the uploader (:mod:`inspector.uploader`) names and
labels the object it becomes from the result itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inspector.anomaly_map import encode_map
from inspector.journal import Journal


@dataclass
class SamplerStats:
    """What the sampler did: kept, skipped for the hourly budget, evicted for its disk cap,
    refused by the journal (no room without dropping results)."""

    kept: int = 0
    kept_bytes: int = 0
    over_budget: int = 0
    evicted: int = 0
    no_room: int = 0


class Sampler:
    """Chooses frames for retraining and stores them in the journal.

    Args:
        journal: the store (its ``add_sample`` / ``trim_samples``).
        band: keep frames with ``|score - threshold| <= band * threshold`` (and every reject).
        bytes_per_hour: image bytes kept per clock hour at most.
        disk_cap_bytes: image bytes stored at most (oldest samples evicted first).
        clock: epoch seconds.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        band: float = 0.1,
        bytes_per_hour: int = 20 * 1024 * 1024,
        disk_cap_bytes: int = 200 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= band <= 1:
            raise ValueError(f"sampler band must be in [0, 1], got {band}")
        if bytes_per_hour < 0 or disk_cap_bytes < 0:
            raise ValueError("sampler budgets must be >= 0")
        self.journal = journal
        self.band = band
        self.bytes_per_hour = bytes_per_hour
        self.disk_cap_bytes = disk_cap_bytes
        self.stats = SamplerStats()
        self._clock = clock
        self._hour = -1
        self._hour_bytes = 0

    def wanted(self, result: dict[str, Any]) -> bool:
        """Whether a result's frame is worth keeping (reject, or near the threshold)."""
        score, threshold = result.get("score"), result.get("threshold")
        if not isinstance(score, int | float) or not isinstance(threshold, int | float):
            return False
        if result.get("decision") in ("reject", "manual"):
            return True  # a scored manual frame lies in the model's manual band
        return abs(score - threshold) <= self.band * abs(threshold)

    def offer(
        self, result: dict[str, Any], data: bytes | None, anomaly_map: np.ndarray | None = None
    ) -> bool:
        """Keep the frame's image if wanted and within budget; True if stored.

        ``anomaly_map``: the frame's reduced map (the engine's), stored with the image as a
        small grey PNG scaled to the result's threshold (:mod:`inspector.anomaly_map`).
        """
        if not data or not self.wanted(result):
            return False
        size = len(data)
        hour = int(self._clock() // 3600)
        if hour != self._hour:
            self._hour, self._hour_bytes = hour, 0
        if self._hour_bytes + size > self.bytes_per_hour or size > self.disk_cap_bytes:
            self.stats.over_budget += 1
            return False
        self.stats.evicted += self.journal.trim_samples(self.disk_cap_bytes - size)
        heat = None
        threshold = result.get("threshold")
        if anomaly_map is not None and isinstance(threshold, int | float) and threshold > 0:
            heat = encode_map(anomaly_map, float(threshold))
        stored = self.journal.add_sample(
            part_id=str(result.get("part_id", "")),
            reason=str(result.get("decision")),
            data=data,
            score=float(result["score"]),
            seq=result["seq"] if isinstance(result.get("seq"), int) else None,
            result=result,
            anomaly_map=heat,
        )
        if not stored:  # the journal is full of results: they come first
            self.stats.no_room += 1
            return False
        self._hour_bytes += size
        self.stats.kept += 1
        self.stats.kept_bytes += size
        return True

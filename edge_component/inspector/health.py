"""Health messages every N seconds: decisions, latency, score histogram, backlog, model, errors.

:class:`HealthReporter` is fed every result (:meth:`record`) and asked on each loop turn whether
a report is due (:meth:`tick`). Counters cover the interval since the previous report, the
shadow model's too (the engine counts since the shadow was set; the reporter sends each
interval's share); the score histogram is in units of the reject threshold, so it compares
across models (drift). The message is documented in docs/inspector.md ("Health message v1").
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from inspector.engine import ShadowStats
from inspector.messages import Identity, encode, rfc3339_ms
from inspector.quality import VerdictTally

LOG = logging.getLogger(__name__)

# Histogram edges in units of the reject threshold (score / threshold); the last bin is open.
HIST_EDGES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
MAX_LATENCIES = 100_000


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, nearest-rank) of ``values``, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class HealthReporter:
    """Aggregates results and builds the health message every ``interval_s``.

    Args:
        identity: plant, line, station, device.
        ring: the rollout ring the device's deployment targets (None outside one); the cloud
            keeps the rollout's figures per ring, line, station and model version by it.
        interval_s: seconds between reports.
        status: returns the engine's state: ``healthy``, ``model``, ``last_error`` and
            ``shadow``, the shadow model's :class:`ShadowStats` since it was set, or None
            (``Inspector`` gives it via :func:`engine_status`).
        backlog: returns the journal's unsent results (None if unknown).
        verdicts: the review station's label counts (``labels``: one model's per message,
            :mod:`inspector.quality`); None: the message's ``labels`` is null.
        publish: called with (topic, payload) when a report is due (optional).
        uploads: returns the sample uploader's figures (cumulative counters and what waits now,
            :meth:`inspector.uploader.Uploader.figures`), or None when it is off; the message's
            ``uploads`` gives the counters for the interval.
        clock, wall_clock: monotonic and epoch seconds.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        interval_s: float,
        ring: str | None = None,
        status: Callable[[], dict[str, Any]],
        backlog: Callable[[], int | None] = lambda: None,
        verdicts: VerdictTally | None = None,
        publish: Callable[[str, bytes], None] | None = None,
        uploads: Callable[[], dict[str, Any] | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"health interval_s must be > 0, got {interval_s}")
        self.identity = identity
        self.ring = ring or None
        self.interval_s = interval_s
        self.topic = identity.topic("health")
        self._status = status
        self._backlog = backlog
        self._verdicts = verdicts
        self._publish = publish
        self._clock = clock
        self._wall = wall_clock
        self._next = clock() + interval_s
        self._seq = 0
        self._shadow_base: ShadowStats | None = None  # the shadow's counts at the last report
        self._uploads = uploads
        self._uploads_base: dict[str, Any] = {}  # the uploader's counters at the last report
        self.last_publish_error: str | None = None
        self._reset()

    def _reset(self) -> None:
        self._counts: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._hist = [0] * len(HIST_EDGES)
        self._frames = 0

    def record(self, result: dict[str, Any]) -> None:
        """Count one result message."""
        self._frames += 1
        self._counts[str(result.get("decision"))] += 1
        reason = result.get("reason")
        if reason:
            self._reasons[str(reason).split(":", 1)[0]] += 1
        latency = result.get("latency_ms")
        if isinstance(latency, int | float) and len(self._latencies) < MAX_LATENCIES:
            self._latencies.append(float(latency))
        score, threshold = result.get("score"), result.get("threshold")
        if isinstance(score, int | float) and isinstance(threshold, int | float) and threshold > 0:
            ratio = score / threshold
            index = 0
            for i, edge in enumerate(HIST_EDGES):
                if ratio >= edge:
                    index = i
            self._hist[index] += 1

    def message(self) -> dict[str, Any]:
        """The health message for the interval so far (does not reset it)."""
        return self._message(self._status(), self._upload_figures())

    def _upload_figures(self) -> dict[str, Any] | None:
        return None if self._uploads is None else self._uploads()

    def _message(
        self,
        status: dict[str, Any],
        uploads: dict[str, Any] | None = None,
        *,
        take: bool = False,
    ) -> dict[str, Any]:
        stats = status.get("shadow")
        shadow = None
        if isinstance(stats, ShadowStats) and stats.model is not None:
            shadow = shadow_figures(stats.since(self._shadow_base))
        return {
            "v": 1,
            "plant": self.identity.plant,
            "line": self.identity.line,
            "station": self.identity.station,
            "device": self.identity.device,
            "ring": self.ring,
            "ts": rfc3339_ms(self._wall()),
            "seq": self._seq,
            "interval_s": self.interval_s,
            "healthy": bool(status.get("healthy")),
            "model": status.get("model"),
            "frames": self._frames,
            "counts": {k: self._counts.get(k, 0) for k in ("pass", "reject", "manual")},
            "reasons": dict(self._reasons.most_common(8)),
            "latency_ms": {
                "p50": _round(percentile(self._latencies, 50)),
                "p99": _round(percentile(self._latencies, 99)),
                "max": _round(max(self._latencies) if self._latencies else None),
            },
            "score_hist": {"edges": list(HIST_EDGES), "counts": list(self._hist)},
            "backlog": self._backlog(),
            "last_error": status.get("last_error"),
            "shadow": shadow,
            "labels": self._labels(take),
            "uploads": None if uploads is None else upload_figures(uploads, self._uploads_base),
        }

    def _labels(self, take: bool) -> dict[str, Any] | None:
        if self._verdicts is None:
            return None
        return self._verdicts.take() if take else self._verdicts.peek()

    def tick(self) -> dict[str, Any] | None:
        """If a report is due: build it, publish it (if a publisher is set), reset; else None."""
        now = self._clock()
        if now < self._next:
            return None
        self._next += self.interval_s
        if self._next <= now:  # fell behind (e.g. a long pause): the next report is one interval on
            self._next = now + self.interval_s
        status = self._status()
        uploads = self._upload_figures()
        message = self._message(status, uploads, take=True)
        self._uploads_base = dict(uploads or {})
        stats = status.get("shadow")
        # the next interval's shadow figures start from the counts this one reported
        self._shadow_base = stats if isinstance(stats, ShadowStats) else None
        self._seq += 1
        self._reset()
        if self._publish is not None:
            try:
                self._publish(self.topic, encode(message))
                self.last_publish_error = None
            except Exception as exc:  # health is best effort; results are journaled elsewhere
                self.last_publish_error = f"{type(exc).__name__}: {exc}"
                LOG.warning("health publish failed: %s", self.last_publish_error)
        return message


def shadow_figures(stats: ShadowStats) -> dict[str, Any]:
    """The health message's ``shadow`` object for one interval's counts."""
    agreement = stats.agreement
    return {
        "model": stats.model,
        "frames": stats.frames,
        "agreement": None if agreement is None else round(agreement, 4),
        "errors": stats.errors,
        "reject": {
            "both": stats.both,
            "served_only": stats.served_only,
            "shadow_only": stats.shadow_only,
        },
    }


UPLOAD_COUNTERS = ("uploaded", "uploaded_bytes", "failures")


def upload_figures(now: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The health message's ``uploads`` object: the counters since the last report, and what
    waits now (``waiting`` samples, ``held`` for a verdict, ``state``, ``last_error``)."""
    out: dict[str, Any] = {
        key: int(now.get(key, 0)) - int(base.get(key, 0)) for key in UPLOAD_COUNTERS
    }
    out.update(
        waiting=now.get("waiting"),
        held=now.get("held"),
        state=now.get("state"),
        last_error=now.get("last_error"),
    )
    return out


def engine_status(engine: Any) -> dict[str, Any]:
    """The ``status`` dict :class:`HealthReporter` needs, from an ``Inspector``."""
    stats = engine.shadow_stats()
    return {
        "healthy": engine.healthy,
        "model": engine.model_ref,
        "last_error": (engine.last_error or "")[:300] or None,
        "shadow": stats if stats.model is not None else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

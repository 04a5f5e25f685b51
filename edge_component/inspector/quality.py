"""Operators' verdicts counted for the health message: the interval's label counts per model.

The review station journals each verdict (:meth:`inspector.journal.Journal.record_label`); the
journal knows the verdict a part carried before, so the device is where a correction is exact.
:class:`VerdictTally` counts, per model version of the judged result and per decision
(``reject`` / ``manual``), how many verdicts said ``good`` and ``defect``: a first verdict adds
one to its label, a replaced one moves one from the old label to the new (-1 / +1), so the sum
over any span of intervals is the standing verdicts given in it — the highest revision per part,
as the cloud's ``labels_current`` view keeps them. Nothing is counted twice: a verdict that
writes nothing (the same again, a conflict) is never counted, and the counts leave the device
in health messages, which are never resent from the journal.

One health message carries one model's counts (``labels``, docs/inspector.md), the one that
has waited longest; verdicts on parts of another model (a review queue that outlived a model
update) wait for the next message, so none is dropped and the cloud's rules need one fixed
shape. A restart loses the counts of the interval in progress (the labels themselves are
journaled and go upstream as always).
"""

from __future__ import annotations

import threading
from typing import Any

REVIEWED_DECISIONS = ("reject", "manual")
"""The decisions the review queue holds (docs/review-station.md)."""
VERDICTS = ("good", "defect")


def _empty() -> dict[str, dict[str, int]]:
    return {decision: dict.fromkeys(VERDICTS, 0) for decision in REVIEWED_DECISIONS}


class VerdictTally:
    """Label counts per (model, decision, label) since they were last reported; thread-safe
    (the station's threads record, the frame loop's health report takes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # model -> decision -> label -> count; insertion order: the model waiting longest first
        self._pending: dict[str | None, dict[str, dict[str, int]]] = {}

    def record(self, *, decision: str, model: str | None, label: str, previous: str | None) -> None:
        """Count one journaled verdict: ``label`` now stands, ``previous`` (None: the part's
        first verdict) no longer does."""
        if decision not in REVIEWED_DECISIONS or label not in VERDICTS or label == previous:
            return
        with self._lock:
            counts = self._pending.setdefault(model, _empty())[decision]
            counts[label] += 1
            if previous in VERDICTS:
                counts[previous] -= 1

    def peek(self) -> dict[str, Any] | None:
        """The entry the next report will carry (nothing taken), or None."""
        with self._lock:
            return self._first(take=False)

    def take(self) -> dict[str, Any] | None:
        """The oldest waiting model's counts, removed: ``{"model", "reject": {"good",
        "defect"}, "manual": {...}}``, or None when no verdict is waiting."""
        with self._lock:
            return self._first(take=True)

    def _first(self, *, take: bool) -> dict[str, Any] | None:
        for model in list(self._pending):
            counts = self._pending[model]
            if not any(n for by_label in counts.values() for n in by_label.values()):
                del self._pending[model]  # corrections that cancelled out: nothing to say
                continue
            if take:
                del self._pending[model]
            return {"model": model, **{d: dict(counts[d]) for d in REVIEWED_DECISIONS}}
        return None

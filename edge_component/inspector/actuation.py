"""Local actuation: a reject message per rejected or manual part, and a heartbeat.

The local contract with the line bridge (fixed): ``lineguard/local/<station>/reject`` carries
the result message v1 of a part whose decision is ``reject`` or ``manual`` (duplicates of a
part may occur: at-least-once); ``lineguard/local/<station>/heartbeat`` carries
``{"v":1,"station","device","ts","seq","healthy","model","interval_s"}`` every interval.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from inspector.messages import encode, rfc3339_ms

LOG = logging.getLogger(__name__)

ACTUATED = ("reject", "manual")
MAX_PENDING_REJECTS = 10_000


def reject_topic(station: str) -> str:
    """``lineguard/local/<station>/reject``."""
    return f"lineguard/local/{station}/reject"


def verdict_topic(station: str) -> str:
    """``lineguard/local/<station>/verdict``: every part's result, for positive-verdict lines."""
    return f"lineguard/local/{station}/verdict"


def heartbeat_topic(station: str) -> str:
    """``lineguard/local/<station>/heartbeat``."""
    return f"lineguard/local/{station}/heartbeat"


class SignalStore(Protocol):
    """Durable keeping of reject messages the local bus refused (the journal is one)."""

    def hold_signal(self, payload: bytes) -> int:
        """Store a message; return its id."""

    def release_signal(self, signal_id: int) -> None:
        """Forget a message that reached the bus."""

    def held_signals(self) -> list[tuple[int, bytes]]:
        """The stored messages, oldest first."""


class Actuator:
    """Publishes reject messages and heartbeats on the local bus.

    A reject message that cannot be published (the local bus is not up yet, or is down) is kept
    and sent again, in order, before anything else: a part the inspector rejected must reach
    the line controller even when the bus comes up late. While rejects wait, no heartbeat is
    sent, so the line bridge does not report the station healthy with a reject outstanding.
    At most ``max_pending`` rejects wait; beyond that the oldest is dropped and counted.

    With a ``store`` (the journal), a refused reject is written to it before ``on_result``
    returns, so before the frame's journal commit acknowledges it: a ``kill -9`` after the commit
    no longer loses the reject, and the next start signals it first.

    Args:
        station, device: who is speaking.
        publish_local: ``(topic, payload bytes)``; may raise (the failure is counted and logged).
        heartbeat_interval_s: seconds between heartbeats.
        status: returns ``(healthy, model ref or None)`` for the heartbeat.
        clock, wall_clock: monotonic and epoch seconds.
        store: keeps refused rejects across restarts (none: they wait in memory only).
        verdicts: also publish every part's result on the verdict topic (best effort: a lost
            verdict makes a positive-verdict line divert the part).
    """

    def __init__(
        self,
        station: str,
        device: str,
        publish_local: Callable[[str, bytes], None],
        *,
        heartbeat_interval_s: float = 1.0,
        status: Callable[[], tuple[bool, str | None]] = lambda: (False, None),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING_REJECTS,
        store: SignalStore | None = None,
        verdicts: bool = False,
    ) -> None:
        if not heartbeat_interval_s > 0:
            raise ValueError(f"heartbeat_interval_s must be > 0, got {heartbeat_interval_s}")
        self.station = station
        self.device = device
        self.heartbeat_interval_s = heartbeat_interval_s
        self._publish = publish_local
        self._status = status
        self._clock = clock
        self._wall = wall_clock
        self._next_heartbeat = float("-inf")
        self.heartbeat_seq = 0
        self.published = 0
        self.failures = 0
        self.dropped = 0
        self.last_error: str | None = None
        # each waiting reject with its id in the store (None: not stored yet / no store)
        self._pending: deque[tuple[bytes, int | None]] = deque()
        self._max_pending = max_pending
        self._failing = False
        self._store = store
        self._verdicts = verdicts
        self.verdict_failures = 0
        if store is not None:
            self._pending.extend((payload, sid) for sid, payload in store.held_signals())
            if self._pending:
                LOG.warning(
                    "%d reject messages from before the restart wait for the local bus",
                    len(self._pending),
                )

    def _send(self, topic: str, payload: bytes) -> bool:
        try:
            self._publish(topic, payload)
        except Exception as exc:  # the line must still get the next message: log and count
            self.failures += 1
            self.last_error = f"local publish to {topic} failed: {type(exc).__name__}: {exc}"
            if not self._failing:  # once per outage, not once per retry
                LOG.error("%s", self.last_error)
            self._failing = True
            return False
        if self._failing:
            LOG.info("local publish to %s works again", topic)
        self._failing = False
        self.published += 1
        return True

    @property
    def pending(self) -> int:
        """Reject messages waiting for the local bus."""
        return len(self._pending)

    def flush(self) -> bool:
        """Send the waiting reject messages in order; True when none is left."""
        while self._pending:
            payload, stored = self._pending[0]
            if not self._send(reject_topic(self.station), payload):
                self._hold_waiting()
                return False
            self._pending.popleft()
            if stored is not None and self._store is not None:
                self._store.release_signal(stored)
        return True

    def _hold_waiting(self) -> None:
        if self._store is None:
            return
        for index, (payload, stored) in enumerate(self._pending):
            if stored is None:
                self._pending[index] = (payload, self._store.hold_signal(payload))

    def on_result(self, result: dict[str, Any]) -> bool:
        """Publish the reject message if the part is ``reject`` or ``manual``; True if sent."""
        if self._verdicts:
            try:
                self._publish(verdict_topic(self.station), encode(result))
            except Exception as exc:  # never retried: the line diverts a part with no verdict
                self.verdict_failures += 1
                LOG.warning("verdict of part %s not published: %s", result.get("part_id"), exc)
        if result.get("decision") not in ACTUATED:
            return False
        if len(self._pending) >= self._max_pending:
            _, stored = self._pending.popleft()
            if stored is not None and self._store is not None:
                self._store.release_signal(stored)
            self.dropped += 1
            LOG.error(
                "%d reject messages waiting for the local bus: dropped the oldest",
                self._max_pending,
            )
        self._pending.append((encode(result), None))
        return self.flush()

    def heartbeat_message(self) -> dict[str, Any]:
        """The next heartbeat message (does not send it)."""
        healthy, model = self._status()
        return {
            "v": 1,
            "station": self.station,
            "device": self.device,
            "ts": rfc3339_ms(self._wall()),
            "seq": self.heartbeat_seq,
            "healthy": bool(healthy),
            "model": model,
            "interval_s": float(self.heartbeat_interval_s),
        }

    def tick(self) -> bool:
        """Resend waiting rejects, then send a heartbeat if one is due; True if one was sent."""
        if not self.flush():
            return False
        now = self._clock()
        if now < self._next_heartbeat:
            return False
        self._next_heartbeat = now + self.heartbeat_interval_s
        message = self.heartbeat_message()
        self.heartbeat_seq += 1
        return self._send(heartbeat_topic(self.station), encode(message))

    def next_wakeup(self) -> float:
        """Monotonic time of the next heartbeat."""
        return self._next_heartbeat

"""The uplink: journaled results → batched upstream messages, in order, resuming after outages.

One publish carries a batch ``{"v": 1, "device": ..., "results": [...]}`` of consecutive
results: at most :data:`~inspector.messages.MAX_RESULTS_PER_BATCH` of them (what the cloud's IoT
rule can hand to Firehose in one go) and under :data:`MAX_PUBLISH_BYTES` (IoT Core's 128 KB
limit with room for the topic and MQTT framing). Publishes are paced to at most
``max_publishes_per_s`` and ``max_bytes_per_s`` in any one second (IoT Core allows 100
publishes/s and 512 KiB/s per connection and drops the excess), so a large backlog drains at
about 1,800 results/s.

What "acknowledged" means depends on the transport. Over plain MQTT the broker's PUBACK is the
endpoint's receipt, and a batch leaves the journal once it comes. Through Greengrass it is not:
a PublishToIoTCore response only says the nucleus put the message in its spooler (in memory by
default, 2.5 MB, dropped after its retries and on every nucleus restart — nucleus
``mqttclient/MqttClient.java`` ``publish``, ``mqttclient/spool/Spool.java``). There the uplink
runs in **cloud-acknowledged** mode (``ack_topic`` set): each batch stays in the journal until
the cloud's results rule republishes ``{"v":1,"device","first_seq","last_seq"}`` for exactly
that batch on ``lineguard/<plant>/<device>/ack`` (docs/results-ack.md). Acknowledged ranges
leave the journal as a contiguous prefix; a batch whose acknowledgement does not come within
``ack_timeout_s`` is sent again (same ``seq``s: the cloud drops the duplicates) — first as one
small probe batch, the timeout doubling up to an hour, until the cloud answers, because while
offline the originals still sit in the spooler; at most ``max_unacked_bytes`` (512 KiB) wait for
acknowledgements at once, so an outage fills at most a fraction of the 2.5 MB spool that the
nucleus shares with its own messages. After a failure or a crash the same batch (same ``seq``s)
is sent again.

Labels (docs/review-station.md) need a cloud whose rules store them: a cloud stack from before
labels acknowledges every batch but stores its results only. So in cloud-acknowledged mode the
uplink sends labels only once an acknowledgement has said the cloud stores them (``"labels": 1``,
the AckRule's capability). Until then it holds them aside in the journal
(:meth:`Journal.hold_labels`) and sends the results; the first acknowledgement carrying the
capability puts them back with new ``seq`` numbers (:meth:`Journal.release_held_labels`). Labels
wait; none is acknowledged unstored.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from inspector.journal import Journal, Pending
from inspector.messages import MAX_RESULTS_PER_BATCH
from inspector.transports.base import Transport, TransportError

LOG = logging.getLogger(__name__)
MAX_PUBLISH_BYTES = 126 * 1024
SUBSCRIBE_RETRY_S = 10.0
MAX_ACK_TIMEOUT_S = 3600.0  # the unacknowledged-batch timeout backs off up to an hour
PROBE_RESULTS = 16  # results in a probe batch after a timeout
_HEAD = b'{"v":1,"device":'


@dataclass
class UplinkStats:
    """What the uplink has done: publishes, results sent, failures and the last error."""

    publishes: int = 0
    results_sent: int = 0
    bytes_sent: int = 0
    failures: int = 0
    last_error: str | None = None
    connected: bool = True
    acks: int = 0
    resends: int = 0
    bad_acks: int = 0


def ack_stores_labels(payload: bytes) -> bool:
    """Whether an acknowledgement says the cloud stores labels (``"labels": 1``)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("labels") == 1 and doc.get("labels") is not True


def parse_ack(device: str, payload: bytes) -> tuple[int, int]:
    """``(first_seq, last_seq)`` of a cloud acknowledgement for ``device``; ValueError if bad."""
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise ValueError(f"acknowledgement is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("acknowledgement is not a JSON object")
    if doc.get("device") != device:
        raise ValueError(f"acknowledgement for device {doc.get('device')!r}, not {device!r}")
    first, last = doc.get("first_seq"), doc.get("last_seq")
    for name, value in (("first_seq", first), ("last_seq", last)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"acknowledgement {name} {value!r} is not a positive integer")
    assert isinstance(first, int) and isinstance(last, int)
    if first > last:
        raise ValueError(f"acknowledgement range {first}..{last} is empty")
    return first, last


def encode_batch(device: str, entries: list[Pending]) -> bytes:
    """The batch payload for consecutive journaled entries (their JSON embedded verbatim).

    Results go into ``results``; labels (docs/review-station.md), when the range holds any,
    into ``labels`` — a batch without labels is byte for byte what it was before labels.
    ``first_seq``..``last_seq`` spans both, and the cloud acknowledges that range.
    """
    labels = [e.payload for e in entries if e.kind == "label"]
    tail = b"]}" if not labels else b'],"labels":[' + b",".join(labels) + b"]}"
    return (
        _HEAD
        + json.dumps(device).encode()
        + b',"first_seq":'
        + str(entries[0].seq).encode()
        + b',"last_seq":'
        + str(entries[-1].seq).encode()
        + b',"results":['
        + b",".join(e.payload for e in entries if e.kind != "label")
        + tail
    )


class Uplink:
    """Sends the journal's backlog through a transport, batched, paced and in ``seq`` order.

    Args:
        journal: where results wait until acknowledged.
        transport: publishes with QoS 1 (returns when acknowledged, raises on failure).
        topic: the results topic, ``lineguard/<plant>/<line>/<station>/<device>/results``.
        clock: monotonic seconds (injected so tests can accelerate time).
        sleep: waits for the given seconds (injected alongside ``clock``).
        max_publishes_per_s: pacing limit per connection.
        max_bytes_per_s: payload bytes per second per connection (IoT Core: 512 KiB/s).
        max_batch_bytes: upper bound of one payload.
        max_batch_results: upper bound of the results in one payload (at most
            :data:`~inspector.messages.MAX_RESULTS_PER_BATCH`).
        linger_s: how long a partial batch may wait for more results.
        backoff_s: first retry delay after a failure; doubles up to ``max_backoff_s``.
        ack_topic: where the cloud acknowledges batches; set it when the transport's own
            acknowledgement does not mean delivery (Greengrass). None: the transport's counts.
        ack_timeout_s: how long a published batch may wait for the cloud's acknowledgement.
        max_unacked_bytes: payload bytes published and not yet acknowledged, at most (kept
            well under the nucleus spooler's 2.5 MB default so it never evicts or refuses).
    """

    def __init__(
        self,
        journal: Journal,
        transport: Transport,
        topic: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_publishes_per_s: float = 100.0,
        max_bytes_per_s: float = 480 * 1024,
        max_batch_bytes: int = MAX_PUBLISH_BYTES,
        max_batch_results: int = MAX_RESULTS_PER_BATCH,
        linger_s: float = 0.5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        ack_topic: str | None = None,
        ack_timeout_s: float = 60.0,
        max_unacked_bytes: int = 512 * 1024,
    ) -> None:
        if not 0 < max_publishes_per_s <= 100:
            raise ValueError("max_publishes_per_s must be in (0, 100]")
        if not 1024 <= max_bytes_per_s <= 512 * 1024:
            raise ValueError("max_bytes_per_s must be in [1024, 524288]")
        if not 1024 <= max_batch_bytes <= MAX_PUBLISH_BYTES:
            raise ValueError(f"max_batch_bytes must be in [1024, {MAX_PUBLISH_BYTES}]")
        if isinstance(max_batch_results, bool) or not isinstance(max_batch_results, int):
            raise ValueError(f"max_batch_results: {max_batch_results!r} is not an integer")
        if not 1 <= max_batch_results <= MAX_RESULTS_PER_BATCH:
            raise ValueError(
                f"max_batch_results: {max_batch_results} is outside 1..{MAX_RESULTS_PER_BATCH}"
                " (the most results the cloud's IoT rule passes to Firehose per message)"
            )
        self.journal = journal
        self.transport = transport
        self.topic = topic
        self.stats = UplinkStats()
        self._clock = clock
        self._sleep = sleep
        self._interval = 1.0 / max_publishes_per_s
        self._byte_rate = max_bytes_per_s
        # A second's byte budget holds a whole number of full batches (480 KiB: four of
        # 120 KiB, where 126 KiB ones would leave a quarter of it unused).
        self._max_bytes = min(
            max_batch_bytes, int(max_bytes_per_s // math.ceil(max_bytes_per_s / max_batch_bytes))
        )
        self._max_results = max_batch_results
        self._linger = linger_s
        self._backoff0 = backoff_s
        self._max_backoff = max_backoff_s
        self._backoff = backoff_s
        self._next_publish = float("-inf")
        self._window: deque[tuple[float, int]] = deque()  # (clock, bytes) of the last second
        self._retry_at = float("-inf")
        self._oldest_seen: float | None = None
        self.ack_topic = ack_topic
        self._ack_timeout0 = ack_timeout_s
        self._ack_timeout = ack_timeout_s
        self._probing = False  # after a timeout: one small batch at a time until an ack comes
        self._max_unacked = max(max_unacked_bytes, self._max_bytes)
        # cloud-acknowledged mode: batches published and waiting, (first, last, clock, bytes)
        self._unacked: deque[tuple[int, int, float, int]] = deque()
        self._acked: list[tuple[int, int]] = []  # ranges acknowledged, not yet a prefix
        self._ack_lock = threading.Lock()
        self._incoming: list[tuple[int, int]] = []
        # whether the cloud stores labels: known only from its acknowledgements (None: none yet);
        # without cloud acknowledgements the transport's receipt is all there is
        self.cloud_stores_labels: bool | None = None if ack_topic is not None else True
        self._incoming_labels: bool | None = None
        self._maybe_held = ack_topic is not None  # labels held back (a previous run's too)
        self._subscribed = False
        self._subscribe_at = float("-inf")
        if ack_topic is not None:
            self._subscribe()

    def _subscribe(self) -> None:
        """Subscribe to the ack topic; on failure try again later (results wait meanwhile)."""
        assert self.ack_topic is not None
        try:
            self.transport.subscribe_upstream(self.ack_topic, self._on_ack)
        except TransportError as exc:
            self.stats.last_error = str(exc)
            LOG.warning(
                "uplink: cannot subscribe to %s yet (results stay in the journal until the "
                "cloud acknowledges them): %s",
                self.ack_topic,
                exc,
            )
            self._subscribe_at = self._clock() + SUBSCRIBE_RETRY_S
            return
        self._subscribed = True

    # -- cloud acknowledgements (transport thread: never raises) --------------------------

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = parse_ack(self.journal.device, payload)
        except ValueError as exc:
            self.stats.bad_acks += 1
            LOG.warning("uplink: ignored acknowledgement on %s: %s", self.ack_topic, exc)
            return
        stores_labels = ack_stores_labels(payload)
        with self._ack_lock:
            self._incoming.append(ack)
            self._incoming_labels = stores_labels

    def _settle_acks(self, now: float) -> None:
        """Forget acknowledged results (a contiguous prefix); resend what waited too long."""
        with self._ack_lock:
            incoming, self._incoming = self._incoming, []
            stores_labels, self._incoming_labels = self._incoming_labels, None
        if stores_labels is not None and stores_labels != self.cloud_stores_labels:
            LOG.warning(
                "uplink: the cloud %s labels",
                "stores" if stores_labels else "does not store (yet); holding back",
            )
            self.cloud_stores_labels = stores_labels
        if self.cloud_stores_labels and self._maybe_held:
            self._maybe_held = False
            released = self.journal.release_held_labels()
            if released:
                LOG.warning("uplink: sending %d held label(s)", released)
        if incoming:
            self.stats.acks += len(incoming)
            self._ack_timeout = self._ack_timeout0  # the cloud answers again
            self._probing = False
            self._acked.extend(incoming)
            self._acked.sort()
            low = self.journal.oldest_seq()
            forget = None
            while low is not None and self._acked:
                first, last = self._acked[0]
                if last < low:
                    self._acked.pop(0)  # a late duplicate of something already forgotten
                    continue
                if first > low:
                    break  # a gap: an earlier batch is still unacknowledged
                forget = last
                # the next one waiting: labels held back leave holes in the seq range
                low = self.journal.oldest_seq(after=last)
                self._acked.pop(0)
            if forget is not None:
                self.journal.mark_sent(forget)
                while self._unacked and self._unacked[0][1] <= forget:
                    self._unacked.popleft()
        if self._unacked and now - self._unacked[0][2] >= self._ack_timeout:
            first = self._unacked[0][0]
            LOG.warning(
                "uplink: no acknowledgement for seq %d.. within %.0fs; sending it again",
                first,
                self._ack_timeout,
            )
            self.stats.resends += 1
            self._unacked.clear()  # resend from the oldest unacknowledged result on
            # The batches most likely still sit in the nucleus' spooler (offline); resending all
            # of them would fill it. Probe with one small batch, backing the timeout off, until
            # the cloud answers (the spool loses messages only on a nucleus restart, which
            # restarts this process and its resend from the journal anyway).
            self._probing = True
            self._ack_timeout = min(self._ack_timeout * 2, MAX_ACK_TIMEOUT_S)

    @property
    def awaiting_ack(self) -> int:
        """Results published and waiting for the cloud's acknowledgement."""
        return sum(last - first + 1 for first, last, _, _ in self._unacked)

    def _batch(self) -> list[Pending]:
        overhead = len(_HEAD) + len(self.journal.device) + 64
        after = self._unacked[-1][1] if self._unacked else None
        if not self.cloud_stores_labels and self.journal.hold_labels(after):
            self._maybe_held = True  # nothing in flight holds a label then
        limit = min(self._max_results, PROBE_RESULTS) if self._probing else self._max_results
        entries = self.journal.pending(limit, self._max_bytes - overhead, after=after)
        total = overhead
        out: list[Pending] = []
        for entry in entries:
            total += len(entry.payload) + 1
            if total > self._max_bytes:
                break
            out.append(entry)
        if not out and entries:
            # a single result can never exceed 128 KB (they are ≤ 512 bytes), but never stall
            out = entries[:1]
        return out

    def step(self, *, flush: bool = False) -> int:
        """Publish at most one batch if pacing, backoff and lingering allow; return results sent.

        Raises nothing: a transport failure is recorded, and retried after a backoff.
        """
        now = self._clock()
        if self.ack_topic is not None:
            if not self._subscribed and now >= self._subscribe_at:
                self._subscribe()
            self._settle_acks(now)
            if sum(size for _, _, _, size in self._unacked) >= self._max_unacked:
                return 0
            if self._probing and self._unacked:
                return 0
        if now < self._retry_at or now < self._next_publish:
            return 0
        entries = self._batch()
        if not entries:
            self._oldest_seen = None
            return 0
        full = (
            self._probing
            or len(entries) >= self._max_results
            or (sum(len(e.payload) + 1 for e in entries) > self._max_bytes // 2)
        )
        if self._oldest_seen is None:
            self._oldest_seen = now
        if not (flush or full or now - self._oldest_seen >= self._linger):
            return 0
        payload = encode_batch(self.journal.device, entries)
        # Spacing publishes by size keeps the average under the byte rate, but a one-second
        # window can still hold one payload more than that; IoT Core's cap is per second, so
        # also wait until the last second's bytes plus this payload fit.
        while self._window and self._window[0][0] + 1.0 <= now:
            self._window.popleft()
        in_window = sum(size for _, size in self._window)
        if self._window and in_window + len(payload) > self._byte_rate:
            self._next_publish = self._window[0][0] + 1.0
            return 0
        self._window.append((now, len(payload)))
        self._next_publish = now + max(self._interval, len(payload) / self._byte_rate)
        try:
            self.transport.publish_upstream(self.topic, payload)
        except TransportError as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            if self.stats.connected:  # log the start of an outage once, not every retry
                LOG.warning("uplink: publish failed; results wait in the journal: %s", exc)
            self.stats.connected = False
            self._retry_at = self._clock() + self._backoff
            LOG.debug("uplink: retry in %.1fs", self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)
            return 0
        if self.ack_topic is None:
            self.journal.mark_sent(entries[-1].seq)
        else:
            self._unacked.append((entries[0].seq, entries[-1].seq, self._clock(), len(payload)))
        self._backoff = self._backoff0
        self._oldest_seen = None
        if not self.stats.connected:
            LOG.warning("uplink: publishing again after %d failed attempts", self.stats.failures)
        self.stats.connected = True
        self.stats.publishes += 1
        self.stats.results_sent += len(entries)
        self.stats.bytes_sent += len(payload)
        return len(entries)

    def next_wakeup(self) -> float:
        """Clock time at which :meth:`step` may next do something useful."""
        base = max(self._retry_at, self._next_publish)
        if self._unacked:
            base = min(base, self._unacked[0][2] + self._ack_timeout)
        if self._oldest_seen is not None:
            base = max(base, min(self._oldest_seen + self._linger, self._clock()))
        return base

    def run(
        self, stop: threading.Event, *, poll_s: float = 0.05, final_flush_s: float = 5.0
    ) -> None:
        """Loop until ``stop`` is set, then flush the backlog for up to ``final_flush_s``.

        The final flush gives up at once if the transport is failing: the results stay in the
        journal for the next start.
        """
        while not stop.is_set():
            sent = self.step()
            if sent == 0:
                wait = max(poll_s, self.next_wakeup() - self._clock())
                stop.wait(min(wait, 1.0))
        deadline = self._clock() + final_flush_s
        try:
            while self.journal.backlog() and self._clock() < deadline:
                if self.step(flush=True) == 0:
                    if not self.stats.connected:
                        break
                    self._sleep(min(0.05, max(0.001, self.next_wakeup() - self._clock())))
        except Exception as exc:  # shutdown is best effort: the journal keeps the rest
            LOG.warning("uplink: final flush failed: %s", exc)

    def drain(self, *, timeout_s: float) -> bool:
        """Publish until the backlog is empty or ``timeout_s`` of clock time passed; True if empty."""
        deadline = self._clock() + timeout_s
        while self.journal.backlog():
            if self._clock() >= deadline:
                return False
            if self.step(flush=True) == 0:
                wait = max(0.0, self.next_wakeup() - self._clock())
                self._sleep(min(max(wait, 0.001), max(0.0, deadline - self._clock())))
        return True

"""The bridge's logic: messages in, PLC writes out, and the fail-safe contract.

Fail-safe contract (docs/line-bridge.md):

* A station is written "inspection healthy" true only while its heartbeat is younger than the
  window, the inspector says it is healthy, and the PLC accepts writes. Otherwise false.
* If a write fails the bridge tries to write false, reconnects, and on success re-writes every
  station's state before anything else; rejects received meanwhile are written if still younger
  than ``reject_max_age_s`` (older ones are counted as expired: the line was told "unhealthy").
* Healthy is re-written every ``refresh_interval_s``; that write doubles as the PLC liveness check.
* A part id acts once per station (the last ``dedup_size`` ids are remembered).
* On shutdown every station is written false.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from line_bridge import COMPONENT_NAME
from line_bridge.config import BridgeConfig
from line_bridge.controller import LineController
from line_bridge.errors import ControllerError, MessageError
from line_bridge.messages import (
    RejectMessage,
    format_ts,
    parse_heartbeat,
    parse_reject,
    parse_verdict,
    split_topic,
)

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]
MAX_PENDING = 10_000
# caps the lateness read from the wall clock, so a decided_at from a wildly wrong clock cannot
# overflow the monotonic arithmetic; anything this late has long expired anyway
MAX_LATENESS_S = 86_400.0
LATENCY_WINDOW = 1024


@dataclass
class StationState:
    """What the bridge knows and has written about one station."""

    name: str
    dedup_size: int
    heartbeat_at: float | None = None
    inspector_healthy: bool = False
    model: str | None = None
    written: bool | None = None
    written_at: float = float("-inf")
    reason: str | None = "no heartbeat from the inspector yet"
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    rejects_written: int = 0
    duplicates_dropped: int = 0
    rejects_expired: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def first_time(self, part_id: str) -> bool:
        """True the first time a part id is seen; remembers the last ``dedup_size`` ids."""
        if part_id in self.recent:
            self.recent.move_to_end(part_id)
            self.duplicates_dropped += 1
            return False
        self.recent[part_id] = None
        while len(self.recent) > self.dedup_size:
            self.recent.popitem(last=False)
        return True


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class Bridge:
    """Turns local reject/heartbeat messages into PLC writes under the fail-safe contract."""

    def __init__(
        self,
        config: BridgeConfig,
        controller: LineController,
        *,
        publish: Publish | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.controller = controller
        self.publish = publish
        self.clock, self.wall = clock, wall
        self.stations = {
            name: StationState(name, config.dedup_size) for name in config.controller.stations
        }
        self.plc_ok = False
        self.plc_error: str | None = "not connected yet"
        self.reconnects = 0
        self._connected_once = False
        self._stopped = False
        self.invalid_messages = 0
        # each reject with the monotonic instant of its decision (receipt minus lateness)
        self._pending: deque[tuple[RejectMessage, float]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._alive = 0
        self._alive_at = float("-inf")
        self._health_at = float("-inf")
        self.tick_s = min(0.05, config.heartbeat_window_s / 10)

    # -- input: called from any thread ----------------------------------------------------------

    def handle_message(self, topic: str, payload: bytes | str | dict[str, Any]) -> None:
        """Hand a message from a subscriber thread to the bridge; never raises."""
        loop = self._loop
        received = self.clock()
        if loop is None or loop.is_closed():
            log.warning("bridge not running; dropped a message on %s", topic)
            return
        try:
            loop.call_soon_threadsafe(self.on_message, topic, payload, received)
        except RuntimeError:  # loop closed between the check and the call (shutdown)
            log.warning("bridge stopping; dropped a message on %s", topic)

    def on_message(
        self, topic: str, payload: bytes | str | dict[str, Any], received: float
    ) -> None:
        """Process one message inside the event loop (parse, dedup, queue); never raises."""
        try:
            station, kind = split_topic(topic)
            state = self.stations.get(station)
            if state is None:
                raise MessageError(f"topic {topic!r}: station {station!r} is not configured")
            if kind == "heartbeat":
                beat = parse_heartbeat(station, payload)
                stale = self.wall() - beat.ts
                if stale > self.config.heartbeat_window_s:
                    # a replayed backlog (broker reconnect) must not make a dead inspector look alive
                    raise MessageError(
                        f"heartbeat for station {station} is {stale:.1f} s old (window "
                        f"{self.config.heartbeat_window_s:g} s); ignored"
                    )
                state.heartbeat_at = received
                state.inspector_healthy = beat.healthy
                state.model = beat.model
            else:
                if (kind == "verdict") != (self.config.verdicts == "positive"):
                    raise MessageError(
                        f"topic {topic!r}: a {kind} message in {self.config.verdicts} mode"
                    )
                # positive mode: every part's verdict (pass too) goes to the PLC the same way
                parse = parse_verdict if kind == "verdict" else parse_reject
                reject = parse(station, payload)
                if state.first_time(reject.part_id):
                    if len(self._pending) >= MAX_PENDING:
                        dropped, _ = self._pending.popleft()
                        self.stations[dropped.station].rejects_expired += 1
                    # The wall clock is read once, here: how late the reject arrived (a replayed
                    # backlog). From then on its age is monotonic, so an NTP step while it waits
                    # for the PLC neither expires it nor keeps it alive. A decision stamped in
                    # the future (the clock stepped back in transit) counts as on time.
                    late = min(max(0.0, self.wall() - reject.decided_at), MAX_LATENESS_S)
                    self._pending.append((reject, received - late))
                    if self._wake is not None:
                        self._wake.set()
        except MessageError as exc:
            self.invalid_messages += 1
            log.warning("ignored message: %s", exc)
        except Exception:  # noqa: BLE001 - a subscriber callback must never take the bridge down
            self.invalid_messages += 1
            log.exception("unexpected error handling a message on %s", topic)

    # -- the writer loop ------------------------------------------------------------------------

    def attach(self) -> None:
        """Bind to the running event loop so :meth:`handle_message` works before :meth:`run`."""
        self._loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; on the way out write every station unhealthy."""
        self.attach()
        try:
            while not stop.is_set():
                if not self.plc_ok:
                    await self._reconnect()
                    if not self.plc_ok:
                        self._maybe_publish_health()
                        # rejects do not cut this short: no reconnect storm while the PLC is down
                        await self._sleep(
                            stop, min(1.0, self.config.refresh_interval_s), wake=False
                        )
                        continue
                await self._write_pending()
                if self.plc_ok:
                    await self._sync_health()
                self._maybe_publish_health()
                await self._sleep(stop, self.tick_s)
        finally:
            await self._shutdown()
            self._loop = None

    async def _sleep(self, stop: asyncio.Event, seconds: float, wake: bool = True) -> None:
        assert self._wake is not None
        if wake and self._pending and self.plc_ok:
            return
        self._wake.clear()
        waiters = [asyncio.ensure_future(stop.wait())]
        if wake:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _reconnect(self) -> None:
        try:
            await self.controller.connect()
        except ControllerError as exc:
            if self.plc_error != str(exc):
                log.error("PLC unreachable: %s", exc)
            self.plc_error = str(exc)
            return
        first = not self._connected_once
        self._connected_once = True
        self.plc_ok, self.plc_error = True, None
        self.reconnects += 0 if first else 1
        for state in self.stations.values():
            state.written = None  # unknown after a (re)connect: re-write everything now
        log.info("PLC %s; re-writing station state", "connected" if first else "back")
        await self._sync_health()
        self._publish_health()

    async def _write_pending(self) -> None:
        while self._pending and self.plc_ok:
            reject, decided = self._pending[0]
            state = self.stations[reject.station]
            age = self.clock() - decided
            if age > self.config.reject_max_age_s:
                self._pending.popleft()
                state.rejects_expired += 1
                log.error(
                    "reject of part %s (station %s) expired after %.1f s without a PLC",
                    reject.part_id,
                    reject.station,
                    age,
                )
                continue
            try:
                counter = await self.controller.write_reject(
                    reject.station, reject.part_id, reject.code
                )
            except ControllerError as exc:
                await self._plc_failed(exc)
                return
            self._pending.popleft()
            state.rejects_written += 1
            state.latencies_ms.append((self.clock() - decided) * 1000.0)
            log.info(
                "station %s: %s part %s written to PLC (counter %d)",
                reject.station,
                reject.decision,
                reject.part_id,
                counter,
            )

    def desired(self, state: StationState, now: float) -> tuple[bool, str | None]:
        """The healthy value a station should have now, and why not when false."""
        if state.heartbeat_at is None:
            return False, "no heartbeat from the inspector yet"
        age = now - state.heartbeat_at
        if age > self.config.heartbeat_window_s:
            return False, (
                f"inspector heartbeat missing for {age:.1f} s "
                f"(window {self.config.heartbeat_window_s:g} s)"
            )
        if not state.inspector_healthy:
            return False, "inspector reports itself unhealthy"
        return True, None

    async def _sync_health(self) -> None:
        now = self.clock()
        refresh = self.config.refresh_interval_s
        changed = False
        for state in self.stations.values():
            value, reason = self.desired(state, now)
            if value == state.written and now - state.written_at < refresh:
                continue
            try:
                await self.controller.write_healthy(state.name, value)
            except ControllerError as exc:
                await self._plc_failed(exc)
                return
            if value != state.written:
                changed = True
                log.log(
                    logging.INFO if value else logging.WARNING,
                    "station %s: inspection healthy = %s%s",
                    state.name,
                    value,
                    f" ({reason})" if reason else "",
                )
            state.written, state.written_at, state.reason = value, now, reason
        if now - self._alive_at >= refresh:
            self._alive += 1
            try:
                for name in self.stations:
                    await self.controller.write_alive(name, self._alive)
            except ControllerError as exc:
                await self._plc_failed(exc)
                return
            self._alive_at = now
        if changed:
            self._publish_health()

    async def _plc_failed(self, exc: ControllerError) -> None:
        log.error("PLC write failed, driving inspection healthy false: %s", exc)
        self.plc_ok, self.plc_error = False, str(exc)
        for state in self.stations.values():
            state.written = None
            state.reason = f"PLC write failed: {exc}"
        # best effort: the session may still carry a write that tells the line to divert
        for name in self.stations:
            try:
                await self.controller.write_healthy(name, False)
            except ControllerError:
                break
        await self.controller.close()
        self._publish_health()

    async def _shutdown(self) -> None:
        if self.plc_ok:
            for name in self.stations:
                try:
                    await self.controller.write_healthy(name, False)
                    self.stations[name].written = False
                    self.stations[name].reason = "line bridge stopped"
                except ControllerError as exc:
                    log.error("could not write healthy false on shutdown: %s", exc)
                    break
        self.plc_ok = False
        self._stopped = True
        for state in self.stations.values():
            state.reason = "line bridge stopped"
        await self.controller.close()
        self._publish_health()

    # -- health -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The bridge's health message: PLC link and, per station, what was written and why."""
        now = self.clock()
        stations = {}
        for state in self.stations.values():
            latencies = list(state.latencies_ms)
            healthy = bool(self.plc_ok and state.written)
            if self.plc_ok or self._stopped:
                reason = state.reason
            else:
                reason = f"PLC unreachable: {self.plc_error}"
            stations[state.name] = {
                "healthy": healthy,
                "reason": None if healthy else reason,
                "heartbeat_age_s": None
                if state.heartbeat_at is None
                else round(now - state.heartbeat_at, 3),
                "model": state.model,
                "rejects_written": state.rejects_written,
                "rejects_pending": sum(1 for r, _ in self._pending if r.station == state.name),
                "rejects_expired": state.rejects_expired,
                "duplicates_dropped": state.duplicates_dropped,
                "decision_to_plc_ms_p50": _percentile(latencies, 0.50),
                "decision_to_plc_ms_p99": _percentile(latencies, 0.99),
            }
        return {
            "v": 1,
            "component": COMPONENT_NAME,
            "device": self.config.device,
            "ts": format_ts(self.wall()),
            "plc": {
                "protocol": self.config.controller.protocol,
                "endpoint": self.config.controller.endpoint,
                "connected": self.plc_ok,
                "last_error": self.plc_error,
                "reconnects": self.reconnects,
            },
            "stations": stations,
            "invalid_messages": self.invalid_messages,
        }

    def _maybe_publish_health(self) -> None:
        if self.clock() - self._health_at >= self.config.health_interval_s:
            self._publish_health()

    def _publish_health(self) -> None:
        self._health_at = self.clock()
        doc = self.health()
        if self.publish is None:
            return
        try:
            self.publish(self.config.health_topic, json.dumps(doc, separators=(",", ":")).encode())
        except Exception as exc:  # noqa: BLE001 - health is best effort; the PLC signal is the contract
            log.warning("could not publish bridge health: %s", exc)

"""The local message contract with the inspector: topics, reject and heartbeat payloads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from line_bridge.errors import MessageError

TOPIC_PREFIX = "lineguard/local/"
DECISION_CODES = {"reject": 1, "manual": 2}
# positive verdicts: pass is 3, never 0, so a PLC that reads "no write yet" (0) as pass cannot
# let a part through that nobody judged
VERDICT_CODES = {**DECISION_CODES, "pass": 3}
KINDS = ("reject", "heartbeat", "verdict")


def reject_topic(station: str) -> str:
    """The local topic the inspector publishes reject/manual results of ``station`` on."""
    return f"{TOPIC_PREFIX}{station}/reject"


def heartbeat_topic(station: str) -> str:
    """The local topic of the inspector's heartbeat for ``station``."""
    return f"{TOPIC_PREFIX}{station}/heartbeat"


def verdict_topic(station: str) -> str:
    """The local topic the inspector publishes every part's result of ``station`` on."""
    return f"{TOPIC_PREFIX}{station}/verdict"


def split_topic(topic: str) -> tuple[str, str]:
    """``lineguard/local/<station>/<kind>`` → ``(station, kind)``; raise on anything else."""
    parts = topic.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}/" != TOPIC_PREFIX or not parts[2]:
        raise MessageError(f"topic {topic!r} is not lineguard/local/<station>/<kind>")
    if parts[3] not in KINDS:
        raise MessageError(
            f"topic {topic!r}: kind {parts[3]!r} is not reject or heartbeat (or verdict)"
        )
    return parts[2], parts[3]


def parse_ts(value: Any, what: str) -> float:
    """An RFC 3339 UTC timestamp → POSIX seconds."""
    if not isinstance(value, str):
        raise MessageError(f"{what}: ts must be an RFC 3339 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MessageError(f"{what}: ts {value!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_ts(posix: float) -> str:
    """POSIX seconds → RFC 3339 UTC with milliseconds, as every LineGuard message carries."""
    return datetime.fromtimestamp(posix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _load(payload: bytes | str | dict[str, Any], what: str) -> dict[str, Any]:
    if isinstance(payload, dict):
        doc = payload
    else:
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MessageError(f"{what}: payload is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MessageError(f"{what}: payload must be a JSON object")
    if doc.get("v") != 1:
        raise MessageError(f"{what}: unsupported message version v={doc.get('v')!r} (expected 1)")
    return doc


@dataclass(frozen=True)
class RejectMessage:
    """A reject/manual result the PLC must act on."""

    station: str
    part_id: str
    decision: str
    seq: int
    ts: float
    device: str = ""
    reason: str | None = None
    latency_ms: float = 0.0

    @property
    def decided_at(self) -> float:
        """POSIX seconds of the decision: the frame's ``ts`` plus the inspector's latency."""
        return self.ts + self.latency_ms / 1000.0

    @property
    def code(self) -> int:
        """Decision code written to the PLC: 1 reject, 2 manual, 3 pass (verdicts only)."""
        return VERDICT_CODES[self.decision]


@dataclass(frozen=True)
class Heartbeat:
    """The inspector's periodic heartbeat for one station."""

    station: str
    device: str
    seq: int
    ts: float
    healthy: bool
    model: str | None
    interval_s: float


def parse_verdict(station: str, payload: bytes | str | dict[str, Any]) -> RejectMessage:
    """Validate a result message (any decision) published on a station's verdict topic."""
    return parse_reject(station, payload, verdict=True)


def parse_reject(
    station: str, payload: bytes | str | dict[str, Any], *, verdict: bool = False
) -> RejectMessage:
    """Validate a result message published on a station's reject topic."""
    what = f"{'verdict' if verdict else 'reject'} message for station {station}"
    doc = _load(payload, what)
    if doc.get("station") != station:
        raise MessageError(f"{what}: station field {doc.get('station')!r} does not match topic")
    part_id = doc.get("part_id")
    if not isinstance(part_id, str) or not part_id:
        raise MessageError(f"{what}: part_id must be a non-empty string")
    decision = doc.get("decision")
    if decision not in (VERDICT_CODES if verdict else DECISION_CODES):
        expected = "pass, reject or manual" if verdict else "reject or manual"
        raise MessageError(f"{what}: decision {decision!r} is not {expected}")
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise MessageError(f"{what}: seq must be an integer")
    reason = doc.get("reason")
    latency = doc.get("latency_ms")
    if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
        latency = 0.0
    return RejectMessage(
        station=station,
        part_id=part_id,
        decision=decision,
        seq=seq,
        ts=parse_ts(doc.get("ts"), what),
        device=str(doc.get("device", "")),
        reason=reason if isinstance(reason, str) else None,
        latency_ms=float(latency),
    )


def parse_heartbeat(station: str, payload: bytes | str | dict[str, Any]) -> Heartbeat:
    """Validate a heartbeat published on a station's heartbeat topic."""
    what = f"heartbeat for station {station}"
    doc = _load(payload, what)
    if doc.get("station") != station:
        raise MessageError(f"{what}: station field {doc.get('station')!r} does not match topic")
    healthy = doc.get("healthy")
    if not isinstance(healthy, bool):
        raise MessageError(f"{what}: healthy must be true or false")
    interval = doc.get("interval_s")
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
        raise MessageError(f"{what}: interval_s must be a positive number")
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise MessageError(f"{what}: seq must be an integer")
    model = doc.get("model")
    return Heartbeat(
        station=station,
        device=str(doc.get("device", "")),
        seq=seq,
        ts=parse_ts(doc.get("ts"), what),
        healthy=healthy,
        model=model if isinstance(model, str) else None,
        interval_s=float(interval),
    )

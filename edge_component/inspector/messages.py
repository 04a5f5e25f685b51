"""Result message v1 (DESIGN.md §4) and label message v1: building, encoding, size checks.

``{v, plant, line, station, device, camera, part_id, seq, ts, decision, score, threshold,
model, latency_ms, reason?}`` — compact JSON, at most :data:`MAX_RESULT_BYTES` bytes. The
cloud side validates against :data:`RESULT_FIELDS`; nothing else defines the message.
Results travel upstream in batches of at most :data:`MAX_RESULTS_PER_BATCH`.

A **label** is a person's verdict on a part, given at the review station
(docs/review-station.md): ``{v, plant, line, station, device, camera, part_id, seq, ts, label,
operator, revision, result_seq, decision, model, defect_type?}``. ``seq`` comes from the same
counter as the results' (the cloud drops duplicates by ``(device, seq)`` alike), ``ts`` is when
the verdict was given, ``result_seq`` / ``decision`` / ``model`` name the result it confirms or
corrects, ``revision`` counts the verdicts given on that part (the highest one stands).
Labels ride in the results' batches, in their own ``labels`` array (:mod:`inspector.uplink`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

VERSION = 1
MAX_RESULT_BYTES = 512
MAX_ID_CHARS = 64
MAX_REASON_CHARS = 120
SHORT_ID_CHARS = 24  # ids shrink to this when a message would exceed MAX_RESULT_BYTES
DECISIONS = ("pass", "reject", "manual")
# The results of one upstream message. The cloud's IoT rule hands a batch to Firehose as one
# PutRecordBatch, one record per result, and in batch mode "the resulting array can't have more
# than 500 records" (AWS IoT developer guide, kinesis-firehose-rule-action.html, batchMode).
# The uplink never sends more; the results pipeline (stacks/) checks its rule against it.
MAX_RESULTS_PER_BATCH = 500
RESULT_FIELDS = (
    "v",
    "plant",
    "line",
    "station",
    "device",
    "camera",
    "part_id",
    "seq",
    "ts",
    "decision",
    "score",
    "threshold",
    "model",
    "latency_ms",
)
OPTIONAL_FIELDS = ("reason",)
LABELS = ("good", "defect")
LABEL_FIELDS = (
    "v",
    "plant",
    "line",
    "station",
    "device",
    "camera",
    "part_id",
    "seq",
    "ts",
    "label",
    "operator",
    "revision",
    "result_seq",
    "decision",
    "model",
)
LABEL_OPTIONAL_FIELDS = ("defect_type",)
# operator names and defect types: short, plain, safe in a file name, a URL and a log line
OPERATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
DEFECT_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class MessageError(ValueError):
    """A message that breaks the v1 contract (missing field, bad value, too large)."""


@dataclass(frozen=True)
class Identity:
    """Where results come from: plant, line, station and device (the thing name)."""

    plant: str
    line: str
    station: str
    device: str

    def __post_init__(self) -> None:
        for name in ("plant", "line", "station", "device"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
                raise MessageError(f"identity.{name}: must be 1..{MAX_ID_CHARS} chars")
            if any(ch in value for ch in "/+#"):
                raise MessageError(f"identity.{name}: {value!r} must not contain / + #")

    def topic(self, kind: str) -> str:
        """Upstream topic ``lineguard/<plant>/<line>/<station>/<device>/<kind>``."""
        return f"lineguard/{self.plant}/{self.line}/{self.station}/{self.device}/{kind}"

    def ack_topic(self) -> str:
        """Where the cloud acknowledges this device's result batches (docs/results-ack.md)."""
        return f"lineguard/{self.plant}/{self.device}/ack"


def rfc3339_ms(epoch_s: float) -> str:
    """RFC 3339 UTC timestamp with milliseconds, e.g. ``2026-11-28T04:30:00.123Z``."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


ID_HASH_CHARS = 8


def fit_id(text: str, limit: int) -> str:
    """An id of at most ``limit`` chars: as it is, or a readable prefix + ``~`` + a short hash.

    The hash is of the whole id, so two long ids that share their first ``limit`` characters
    still arrive as two ids (the line bridge acts once per part id).
    """
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_HASH_CHARS]
    return f"{text[: limit - ID_HASH_CHARS - 1]}~{digest}"


def _number(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def build_result(
    identity: Identity,
    *,
    camera: str,
    part_id: str,
    seq: int,
    ts: float,
    decision: str,
    score: float | None,
    threshold: float | None,
    model: str | None,
    latency_ms: float,
    reason: str | None = None,
) -> dict[str, Any]:
    """Build a result message v1 dict; long ids and reasons are clipped to keep it small."""
    if decision not in DECISIONS:
        raise MessageError(f"decision: {decision!r} not one of {DECISIONS}")
    message: dict[str, Any] = {
        **_header(identity, camera, part_id, seq, ts),
        "decision": decision,
        "score": _number(score, 6),
        "threshold": _number(threshold, 6),
        "model": model,
        "latency_ms": _number(latency_ms, 3) or 0.0,
    }
    if reason:
        message["reason"] = _clip(reason, MAX_REASON_CHARS)
    return _fit(message, part_id=part_id, camera=camera)


def _fit(message: dict[str, Any], *, part_id: str, camera: str) -> dict[str, Any]:
    # Long ids and reasons are rare; when they meet, the reason gives way first, then the ids.
    over = len(encode(message)) - MAX_RESULT_BYTES
    if over > 0 and "reason" in message:
        message["reason"] = _clip(message["reason"], max(16, len(message["reason"]) - over - 4))
    full = {"part_id": part_id, "camera": camera}
    for name in ("part_id", "camera"):
        if len(encode(message)) > MAX_RESULT_BYTES:
            message[name] = fit_id(full[name], SHORT_ID_CHARS)
    return message


def encode(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a message (no spaces), as published and journaled."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _check_fields(
    kind: str, message: Any, required: Sequence[str], optional: Sequence[str]
) -> None:
    """A ``kind`` message is a JSON object with every ``required`` field, no field beyond
    ``required`` and ``optional``, and this contract's version; raise :class:`MessageError`."""
    if not isinstance(message, dict):
        raise MessageError(f"{kind}: must be a JSON object")
    missing = [name for name in required if name not in message]
    if missing:
        raise MessageError(f"{kind}: missing field {missing[0]!r}")
    extra = sorted(set(message) - set(required) - set(optional))
    if extra:
        raise MessageError(f"{kind}: unknown field {extra[0]!r}")
    if message["v"] != VERSION:
        raise MessageError(f"{kind}.v: {message['v']!r} is not {VERSION}")


def validate_result(message: Any) -> dict[str, Any]:
    """Check a decoded result message against the v1 contract; raise :class:`MessageError`."""
    _check_fields("result", message, RESULT_FIELDS, OPTIONAL_FIELDS)
    if message["decision"] not in DECISIONS:
        raise MessageError(f"result.decision: {message['decision']!r} not one of {DECISIONS}")
    if not isinstance(message["seq"], int) or message["seq"] < 0:
        raise MessageError(f"result.seq: {message['seq']!r} is not a non-negative integer")
    if message["decision"] == "manual" and not message.get("reason"):
        # manual from the thresholds carries reason "manual_band"; fail-safe ones say why
        raise MessageError("result.reason: a manual decision must carry a reason")
    size = len(encode(message))
    if size > MAX_RESULT_BYTES:
        raise MessageError(f"result: {size} bytes > {MAX_RESULT_BYTES}")
    return message


def _header(identity: Identity, camera: str, part_id: str, seq: int, ts: float) -> dict[str, Any]:
    """The fields every message v1 starts with: version, where, which part, ``seq`` and time."""
    return {
        "v": VERSION,
        "plant": identity.plant,
        "line": identity.line,
        "station": identity.station,
        "device": identity.device,
        "camera": fit_id(camera, MAX_ID_CHARS),
        "part_id": fit_id(part_id, MAX_ID_CHARS),
        "seq": int(seq),
        "ts": rfc3339_ms(ts),
    }


def build_label(
    identity: Identity,
    *,
    camera: str,
    part_id: str,
    seq: int,
    ts: float,
    label: str,
    operator: str,
    revision: int,
    result_seq: int,
    decision: str,
    model: str | None,
    defect_type: str | None = None,
) -> dict[str, Any]:
    """Build a label message v1 dict (a person's verdict on one part); raise MessageError."""
    message: dict[str, Any] = {
        **_header(identity, camera, part_id, seq, ts),
        "label": label,
        "operator": operator,
        "revision": int(revision),
        "result_seq": int(result_seq),
        "decision": decision,
        "model": model,
    }
    if defect_type is not None:
        message["defect_type"] = defect_type
    return validate_label(message)


def validate_label(message: Any) -> dict[str, Any]:
    """Check a decoded label message against the v1 contract; raise :class:`MessageError`."""
    _check_fields("label", message, LABEL_FIELDS, LABEL_OPTIONAL_FIELDS)
    if message["label"] not in LABELS:
        raise MessageError(f"label.label: {message['label']!r} not one of {LABELS}")
    if message["decision"] not in DECISIONS:
        raise MessageError(f"label.decision: {message['decision']!r} not one of {DECISIONS}")
    operator = message["operator"]
    if not isinstance(operator, str) or not OPERATOR_NAME.match(operator):
        raise MessageError(
            f"label.operator: {operator!r} is not an operator name (letters, digits, '.', '_',"
            " '-', at most 32)"
        )
    defect_type = message.get("defect_type")
    if defect_type is not None and (
        message["label"] != "defect"
        or not isinstance(defect_type, str)
        or not DEFECT_TYPE.match(defect_type)
    ):
        raise MessageError(
            f"label.defect_type: {defect_type!r} must be a defect type (lower-case letters,"
            " digits, '_', '-', at most 32) on a 'defect' label"
        )
    for name in ("seq", "result_seq"):
        value = message[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MessageError(f"label.{name}: {value!r} is not a non-negative integer")
    revision = message["revision"]
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise MessageError(f"label.revision: {revision!r} is not a positive integer")
    size = len(encode(message))
    if size > MAX_RESULT_BYTES:
        raise MessageError(f"label: {size} bytes > {MAX_RESULT_BYTES}")
    return message

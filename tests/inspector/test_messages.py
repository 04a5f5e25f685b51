"""Result message v1: fields, timestamp format, size bound, validation."""

from __future__ import annotations

import json

import pytest

from inspector.messages import (
    MAX_RESULT_BYTES,
    MAX_RESULTS_PER_BATCH,
    Identity,
    MessageError,
    build_result,
    encode,
    rfc3339_ms,
    validate_result,
)

IDENTITY = Identity("plant-a", "line-1", "st-1", "dev-1")


def _result(**kw: object) -> dict:
    base: dict = dict(
        camera="cam",
        part_id="p1",
        seq=5,
        ts=0.0,
        decision="pass",
        score=0.01,
        threshold=0.2,
        model="m@1.0.0",
        latency_ms=3.14159,
    )
    base.update(kw)
    return build_result(IDENTITY, **base)


def test_rfc3339_utc_milliseconds() -> None:
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339_ms(1_764_304_200.1239) == "2025-11-28T04:30:00.123Z"


def test_result_has_exactly_the_v1_fields() -> None:
    result = validate_result(_result())
    assert list(result) == [
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
    ]
    assert result["latency_ms"] == 3.142
    assert json.loads(encode(result)) == result
    assert validate_result(_result(decision="manual", reason="image_empty"))["reason"]


def test_non_finite_scores_become_null() -> None:
    assert _result(score=float("nan"), decision="manual", reason="x")["score"] is None


def test_long_ids_and_reasons_are_clipped_to_512_bytes() -> None:
    # identity fields up to 32 chars and a 48-char model ref always fit: the frame's camera,
    # part id and reason give way
    ident = Identity("p" * 32, "l" * 32, "s" * 32, "d" * 32)
    result = build_result(
        ident,
        camera="c" * 500,
        part_id="ü" * 500,
        seq=2**62,
        ts=0,
        decision="manual",
        score=-1.234567e-300,
        threshold=-1e300,
        model="m" * 40 + "@10.20.3",
        latency_ms=1e9,
        reason="r" * 1000,
    )
    assert len(encode(result)) <= MAX_RESULT_BYTES
    validate_result(result)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decision": "maybe"}, "decision"),
        ({"seq": -1}, "seq"),
        ({"extra": 1}, "unknown"),
        ({"v": 2}, "result.v"),
        ({"decision": "manual"}, "reason"),
    ],
)
def test_validation_names_the_problem(change: dict, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        validate_result({**_result(), **change})


def test_identity_is_checked() -> None:
    with pytest.raises(MessageError, match="identity.station"):
        Identity("p", "l", "a/b", "d")
    assert IDENTITY.topic("results") == "lineguard/plant-a/line-1/st-1/dev-1/results"


def test_a_batch_fits_one_iot_rule_firehose_batch() -> None:
    # AWS IoT developer guide, kinesis-firehose-rule-action.html, batchMode: "The resulting
    # array can't have more than 500 records."
    assert 1 <= MAX_RESULTS_PER_BATCH <= 500


def test_long_part_ids_are_never_clipped_into_each_other() -> None:
    ident = Identity("p" * 32, "l" * 32, "s" * 32, "d" * 32)
    common = "lot-2026-11-28-line-1-station-1-camera-top-" + "x" * 40
    ids = [f"{common}-part-{n}" for n in range(50)]
    for reason in (None, "r" * 1000):  # roomy (64 chars) and tight (24 chars) messages
        got = [
            build_result(
                ident,
                camera="c" * 80,
                part_id=part,
                seq=1,
                ts=0,
                decision="manual",
                score=None,
                threshold=None,
                model="m" * 40 + "@10.20.3",
                latency_ms=1.0,
                reason=reason or "image_empty",
            )["part_id"]
            for part in ids
        ]
        assert len(set(got)) == len(ids), "distinct parts share one id"
        assert all(p.startswith("lot-2026") for p in got)  # still readable
        limit = 64 if reason is None else 24
        assert all(len(p) <= limit for p in got)
    short = _result(part_id="p-1")["part_id"]
    assert short == "p-1"  # an id within the limit is sent as it is

"""The local cloud models the plant stack's own rules, checked against the construct's SQL."""

from __future__ import annotations

import json

import pytest

from core_device.cloud import ack_for, identity_shadow_document
from inspector.identity import parse_identity
from inspector.uplink import ack_stores_labels, parse_ack

TOPIC = "lineguard/demo/line-1/press-out/dev-1/results"


def batch(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "v": 1,
        "device": "dev-1",
        "first_seq": 10,
        "last_seq": 12,
        "results": [{"seq": 10}, {"seq": 11}, {"seq": 12}],
    }
    doc.update(fields)
    return json.dumps(doc).encode()


def test_the_model_is_the_constructs_rule() -> None:
    from stacks.constructs.results_pipeline import ACK_SQL, ACK_TOPIC

    # the filter, selection and target the model implements, as the stack deploys them
    assert ACK_SQL.format(plant="demo") == (
        "SELECT v, device, first_seq, last_seq, 1 AS labels FROM 'lineguard/demo/+/+/+/results'"
        " WHERE v = 1 AND device = topic(5)"
    )
    assert ACK_TOPIC.format(plant="demo") == "lineguard/demo/${topic(5)}/ack"


def test_the_model_gives_every_field_the_rules_select_names() -> None:
    from stacks.constructs.results_pipeline import ACK_SQL

    selected = ACK_SQL.split("SELECT ", 1)[1].split(" FROM ", 1)[0]
    names = {part.strip().split(" AS ")[-1] for part in selected.split(",")}
    out = ack_for("demo", TOPIC, batch())
    assert out is not None and set(json.loads(out[1])) == names


def test_a_stored_batch_is_acknowledged_to_its_device_in_the_inspectors_format() -> None:
    out = ack_for("demo", TOPIC, batch())
    assert out is not None
    topic, payload = out
    assert topic == "lineguard/demo/dev-1/ack"
    assert json.loads(payload) == {
        "v": 1,
        "device": "dev-1",
        "first_seq": 10,
        "last_seq": 12,
        "labels": 1,
    }
    assert parse_ack("dev-1", payload) == (10, 12)
    assert ack_stores_labels(payload)  # the capability: this cloud stores labels


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (TOPIC, batch(device="dev-2")),  # device != topic(5): not stored, not acknowledged
        (TOPIC, batch(v=2)),
        (TOPIC, b"not json"),
        ("lineguard/other/line-1/press-out/dev-1/results", batch()),
        ("lineguard/demo/line-1/press-out/dev-1/health", batch()),
        ("lineguard/demo/line-1/dev-1/results", batch()),
    ],
)
def test_what_the_rule_does_not_store_is_not_acknowledged(topic: str, payload: bytes) -> None:
    assert ack_for("demo", topic, payload) is None


def test_a_batch_without_its_range_gets_an_ack_the_device_refuses() -> None:
    out = ack_for("demo", TOPIC, json.dumps({"v": 1, "device": "dev-1"}).encode())
    assert out is not None  # IoT SQL omits absent fields; the rule still fires
    with pytest.raises(ValueError, match="first_seq"):
        parse_ack("dev-1", out[1])


def test_identity_document_is_what_the_inspector_reads() -> None:
    doc = identity_shadow_document(
        "dev-1", plant="demo", line="line-1", station="press-out", cameras=2
    )
    got = parse_identity(json.dumps(doc).encode(), "dev-1")
    assert (got.plant, got.line, got.station, got.cameras) == ("demo", "line-1", "press-out", 2)


def test_identity_document_is_what_the_identity_sync_function_writes() -> None:
    from stacks.constructs.identity.runtime.identity_sync import identity_document

    attributes = {"line": "line-1", "station": "press-out", "cameras": "2"}
    doc = identity_shadow_document(
        "lineguard-demo-D1", plant="demo", line="line-1", station="press-out", cameras=2
    )
    assert doc["state"]["desired"] == identity_document("demo", "lineguard-demo-D1", attributes)

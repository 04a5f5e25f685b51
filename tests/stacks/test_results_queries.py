"""The results pipeline's rules and queries run over real batches, as the services would run them.

From the synthesised template: each storage rule's SQL runs in a model of the IoT rules engine
(:func:`rule_records`, only for the SQL form the stack deploys, each step after the IoT
developer guide), its records are checked against Firehose's own PutRecordBatch model
(botocore), the Firehose jq query runs in jq 1.6 (the stream's ``JsonParsingEngine`` is
JQ-1.6), and the views' SQL runs in DuckDB. DuckDB lacks Trino's
``from_iso8601_timestamp`` (``timestamp(3) with time zone``, trino.io functions/datetime), so a
macro stands in for it: a ``TIMESTAMPTZ`` cast, read back in a UTC session, which is what
Trino's cast to ``timestamp(3)`` keeps for a ``...Z`` value. Everything else is the view's SQL
text as deployed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import botocore.session
import botocore.validate
import duckdb
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from core_device.cloud import ack_for
from inspector.journal import Pending
from inspector.messages import Identity, build_label, build_result, encode
from inspector.uplink import ack_stores_labels, encode_batch, parse_ack
from stacks.config import PlantConfig
from stacks.constructs.log_encryption import PlantLogKey
from stacks.constructs.results_pipeline import ACK_SQL, ResultsPipeline
from stacks.constructs.rule_errors import RuleErrorLog

# Glue (Hive) column types as DuckDB types, and Trino view types as DuckDB reports them.
DUCKDB_TYPES = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "double": "DOUBLE"}
VIEW_TYPES = {
    "varchar": "VARCHAR",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "timestamp(3)": "TIMESTAMP_MS",
}


@dataclass
class Delivery:
    """What the template says about the path of one array of a batch, rule to table."""

    sql: str
    rule_separator: str
    firehose_delimiter: str
    jq_query: str
    prefix: str  # the stream's S3 prefix, with !{partitionKeyFromQuery:<key>}
    location: str  # the table's storage.location.template, the bucket as BUCKET
    table_columns: list[tuple[str, str]]
    partition_keys: list[str]
    line_values: list[str]


@dataclass
class Pipeline:
    """Results and labels deliveries, the acknowledgement rule's SQL, and the views."""

    results: Delivery
    labels: Delivery
    ack_sql: str
    views: dict[str, tuple[str, list[tuple[str, str]]]]  # name: (SQL, columns)


def _unescape(parameter: str) -> str:
    # Firehose's Delimiter parameter is written with escapes ("\\n" is a newline)
    return parameter.encode().decode("unicode_escape")


def _text(value: Any, bucket_id: str) -> str:
    """A template string value, Fn::Join resolved, the bucket's Ref as BUCKET."""
    if isinstance(value, str):
        return value
    if value == {"Ref": bucket_id}:
        return "BUCKET"
    separator, parts = value["Fn::Join"]
    return str(separator).join(_text(part, bucket_id) for part in parts)


@pytest.fixture(scope="module")
def pipeline(demo: PlantConfig) -> Pipeline:
    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Test", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    log_key = PlantLogKey(stack, "LogKey", plant_name=demo.name).key
    errors = RuleErrorLog(stack, "Errors", plant_name=demo.name, log_key=log_key)
    logs = s3.Bucket.from_bucket_name(stack, "Logs", "lineguard-logs-x")
    ResultsPipeline(
        stack,
        "Results",
        plant=demo,
        access_log_bucket=logs,
        error_action=errors.error_action,
        log_key=log_key,
    )
    template = Template.from_stack(stack)
    (bucket_id,) = template.find_resources("AWS::S3::Bucket")
    streams = template.find_resources("AWS::KinesisFirehose::DeliveryStream")
    tables = {
        t["Properties"]["TableInput"]["Name"]: t["Properties"]["TableInput"]
        for t in template.find_resources("AWS::Glue::Table").values()
    }
    payloads = [
        r["Properties"]["TopicRulePayload"]
        for r in template.find_resources("AWS::IoT::TopicRule").values()
    ]
    deliveries: dict[str, Delivery] = {}
    for payload in payloads:
        action = payload["Actions"][0].get("Firehose")
        if action is None:
            continue
        destination = streams[action["DeliveryStreamName"]["Ref"]]["Properties"][
            "ExtendedS3DestinationConfiguration"
        ]
        kind = destination["Prefix"].split("/")[0]  # the rule's stream, by where it writes
        params = {
            p["ParameterName"]: p["ParameterValue"]
            for proc in destination["ProcessingConfiguration"]["Processors"]
            for p in proc["Parameters"]
        }
        table = tables[kind]
        deliveries[kind] = Delivery(
            sql=payload["Sql"],
            rule_separator=action.get("Separator", ""),
            firehose_delimiter=_unescape(params.get("Delimiter", "")),
            jq_query=params["MetadataExtractionQuery"],
            prefix=destination["Prefix"],
            location=_text(table["Parameters"]["storage.location.template"], bucket_id),
            table_columns=[(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]],
            partition_keys=[k["Name"] for k in table["PartitionKeys"]],
            line_values=table["Parameters"]["projection.line.values"].split(","),
        )
    views = {}
    for name, view in tables.items():
        if view["TableType"] != "VIRTUAL_VIEW":
            continue
        text = view["ViewOriginalText"]
        definition = json.loads(base64.b64decode(text[len("/* Presto View: ") : -len(" */")]))
        views[name] = (
            definition["originalSql"],
            [(c["name"], c["type"]) for c in definition["columns"]],
        )
    (ack_sql,) = [p["Sql"] for p in payloads if "Republish" in p["Actions"][0]]
    assert sorted(deliveries) == ["labels", "results"]
    return Pipeline(
        results=deliveries["results"], labels=deliveries["labels"], ack_sql=ack_sql, views=views
    )


def _result(device: str, seq: int, ts: str, decision: str = "pass") -> bytes:
    moment = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    message = build_result(
        Identity("demo", "line-1", "final-check", device),
        camera="cam0",
        part_id=f"part-{seq}",
        seq=seq,
        ts=moment,
        decision=decision,
        score=0.9 if decision == "reject" else 0.1,
        threshold=0.5,
        model="padim@1.2.0",
        latency_ms=12.5,
        reason=None,
    )
    return encode(message)


TOPIC = "lineguard/demo/line-1/final-check/{device}/results"
# The one SQL form of the storage rules, as stacks/constructs/results_pipeline.py writes it.
STORE_SQL = re.compile(
    r"SELECT VALUE (?P<array>\w+) FROM '(?P<filter>[^']+)'"
    r" WHERE v = 1 AND device = topic\(5\) AND NOT isUndefined\(get\((?P<tested>\w+), 0\)\)"
)
UNDEFINED = object()
FIREHOSE = botocore.session.get_session().get_service_model("firehose")


def _matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic-filter matching, ``+`` one level (the filters here have no ``#``)."""
    levels, wanted = topic.split("/"), topic_filter.split("/")
    return len(levels) == len(wanted) and all(
        w in ("+", t) for w, t in zip(wanted, levels, strict=True)
    )


def _get_first(value: Any) -> Any:
    """IoT SQL ``get(value, 0)`` (iot-sql-functions.html, get): an Array's or a String's
    element at index 0, Undefined outside its bounds; an Object takes String keys only, and any
    other value (Undefined included: an absent field) gives Undefined."""
    if isinstance(value, list | str):
        return value[0] if value else UNDEFINED
    return UNDEFINED


def rule_records(sql: str, topic: str, payload: bytes) -> list[str] | None:
    """The Firehose records a storage rule's action puts for one message; None: no action.

    WHERE false: the actions are not performed (iot-sql-where.html). ``topic(5)`` is the fifth
    level (iot-sql-functions.html, topic). In batch mode an Array is one PutRecordBatch, "each
    Array element forms one record" (API_FirehoseAction.html, batchMode); any other value is
    one record.
    """
    form = STORE_SQL.fullmatch(sql)
    assert form and form["array"] == form["tested"], f"no model of this rule: {sql}"
    if not _matches(form["filter"], topic):
        return None
    doc = json.loads(payload)
    if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("device") != topic.split("/")[4]:
        return None
    value = doc.get(form["array"], UNDEFINED)
    if _get_first(value) is UNDEFINED:  # NOT isUndefined(...) is false
        return None
    elements = value if isinstance(value, list) else [value]
    return [json.dumps(e, separators=(",", ":")) for e in elements]


def put_record_batch_errors(records: list[str]) -> str:
    """What Firehose's PutRecordBatch model (botocore) says of these records ('' = valid).

    botocore checks the list's ``min`` itself; its ``max`` (500) is the service's to enforce,
    so it is read from the same model.
    """
    request = {"DeliveryStreamName": "s", "Records": [{"Data": r.encode()} for r in records]}
    shape = FIREHOSE.operation_model("PutRecordBatch").input_shape
    report = botocore.validate.ParamValidator().validate(request, shape)
    if report.has_errors():
        return str(report.generate_report())
    most = shape.members["Records"].metadata["max"]
    return f"Records: {len(records)} > {most}" if len(records) > most else ""


def stored(delivery: Delivery, device: str, payload: bytes) -> list[str]:
    """The records one storage rule hands to Firehose for a batch (none: the rule did not act)."""
    records = rule_records(delivery.sql, TOPIC.format(device=device), payload)
    if records is None:
        return []
    assert put_record_batch_errors(records) == ""
    return records


def _label(
    device: str,
    seq: int,
    ts: str,
    *,
    result_seq: int,
    revision: int = 1,
    label: str = "defect",
    defect_type: str | None = "scratch",
) -> bytes:
    moment = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    message = build_label(
        Identity("demo", "line-1", "final-check", device),
        camera="cam0",
        part_id=f"part-{result_seq}",
        seq=seq,
        ts=moment,
        label=label,
        operator="alice",
        revision=revision,
        result_seq=result_seq,
        decision="manual",
        model="padim@1.2.0",
        defect_type=defect_type if label == "defect" else None,
    )
    return encode(message)


def batch(
    device: str,
    results: list[tuple[int, str]],
    labels: Sequence[tuple[int, str, int, int]] = (),
) -> bytes:
    """A batch as the uplink encodes it; labels as (seq, ts, result_seq, revision)."""
    entries = [Pending(seq, _result(device, seq, ts)) for seq, ts in results] + [
        Pending(seq, _label(device, seq, ts, result_seq=rs, revision=rev), "label")
        for seq, ts, rs, rev in labels
    ]
    return encode_batch(device, sorted(entries, key=lambda e: e.seq))


def jq(query: str, records: list[str]) -> list[dict[str, Any]]:
    binary = shutil.which("jq")
    assert binary, "jq is missing (scripts/install-debs.sh installs it)"
    proc = subprocess.run(
        [binary, "-c", query], input="".join(records), capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _value_of(key: dict[str, str]) -> Any:
    return lambda match: key[match[1]]


def delivered(delivery: Delivery, records: list[str]) -> list[dict[str, Any]]:
    """Rows the table reads from the objects Firehose writes for these records.

    IoT appends the rule's separator to each record; Firehose appends its delimiter and writes
    the record under its prefix with the jq query's keys; the table reads its partitions from
    its location template; the JSON SerDe reads one row per line, and a line that is not a JSON
    object is a row of nulls (trinodb/trino openxjson README, "Line Format").
    """
    keys = jq(delivery.jq_query, records)
    rows = []
    for record, key in zip(records, keys, strict=True):
        written = re.sub(r"!\{partitionKeyFromQuery:(\w+)\}", _value_of(key), delivery.prefix)
        read = re.sub(r"\$\{(\w+)\}", _value_of(key), delivery.location)
        assert read == f"s3://BUCKET/{written}", (read, written)  # the table reads it there
        text = record + delivery.rule_separator + delivery.firehose_delimiter
        for line in text.splitlines():
            row = json.loads(line) if line.lstrip().startswith("{") else {}
            rows.append({**row, **{k: key.get(k) for k in delivery.partition_keys}})
    return rows


def delivered_batch(delivery: Delivery, device: str, payload: bytes) -> list[dict[str, Any]]:
    records = stored(delivery, device, payload)
    return delivered(delivery, records) if records else []


@pytest.fixture
def db(pipeline: Pipeline) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE MACRO from_iso8601_timestamp(s) AS CAST(s AS TIMESTAMPTZ)")
    for name, delivery in (("results", pipeline.results), ("labels", pipeline.labels)):
        columns = [*delivery.table_columns, *((k, "string") for k in delivery.partition_keys)]
        con.execute(
            f"CREATE TABLE {name} ("
            + ", ".join(f"{n} {DUCKDB_TYPES[type_]}" for n, type_ in columns)
            + ")"
        )
    return con


def load(
    con: duckdb.DuckDBPyConnection,
    delivery: Delivery,
    rows: list[dict[str, Any]],
    table: str = "results",
) -> None:
    names = [n for n, _ in delivery.table_columns] + delivery.partition_keys
    if rows:
        con.executemany(
            f"INSERT INTO {table} VALUES ({', '.join('?' for _ in names)})",
            [[row.get(n) for n in names] for row in rows],
        )


def test_jq_query_gives_each_result_its_line_and_date(pipeline: Pipeline) -> None:
    payload = batch("dev-a", [(1, "2026-11-01T23:59:59.999Z"), (2, "2026-11-02T00:00:00.000Z")])
    keys = jq(pipeline.results.jq_query, stored(pipeline.results, "dev-a", payload))
    assert keys == [
        {"line": "line-1", "dt": "2026-11-01"},
        {"line": "line-1", "dt": "2026-11-02"},
    ]
    # values the table's partition projection can find (projection.line.values, yyyy-MM-dd)
    assert all(k["line"] in pipeline.results.line_values for k in keys)
    assert all(dt.date.fromisoformat(k["dt"]) for k in keys)


def test_every_delivered_line_is_one_result(pipeline: Pipeline) -> None:
    payload = batch("dev-a", [(s, "2026-11-01T12:00:00.000Z") for s in range(5)])
    rows = delivered_batch(pipeline.results, "dev-a", payload)
    assert [r.get("seq") for r in rows] == list(range(5))  # no rows of nulls between them


def test_view_keeps_one_row_per_device_and_seq(pipeline: Pipeline, db: Any) -> None:
    first = batch("dev-a", [(10, "2026-11-01T12:00:00.100Z"), (11, "2026-11-01T12:00:01.200Z")])
    again = batch("dev-a", [(11, "2026-11-01T12:00:01.200Z"), (12, "2026-11-01T12:00:02.300Z")])
    other = batch("dev-b", [(11, "2026-11-01T12:00:01.500Z")])  # same seq, another device
    rows = [
        row
        for device, payload in (
            ("dev-a", first),
            ("dev-a", first),
            ("dev-a", again),
            ("dev-b", other),
        )
        for row in delivered_batch(pipeline.results, device, payload)  # `first` resent
    ]
    load(db, pipeline.results, rows)
    assert db.execute("SELECT count(*) FROM results").fetchone() == (7,)
    view_sql, _ = pipeline.views["results_dedup"]
    got = db.execute(
        f"SELECT device, seq, count(*) FROM ({view_sql}) GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert got == [("dev-a", 10, 1), ("dev-a", 11, 1), ("dev-a", 12, 1), ("dev-b", 11, 1)]


def test_view_ts_is_the_results_utc_time(pipeline: Pipeline, db: Any) -> None:
    payload = batch("dev-a", [(1, "2026-11-01T12:00:00.123Z")])
    load(db, pipeline.results, delivered_batch(pipeline.results, "dev-a", payload))
    view_sql, _ = pipeline.views["results_dedup"]
    got = db.execute(f"SELECT ts, dt, line FROM ({view_sql})").fetchall()
    assert got == [(dt.datetime(2026, 11, 1, 12, 0, 0, 123000), "2026-11-01", "line-1")]


@pytest.mark.parametrize("view", ["results_dedup", "labels_dedup", "labels_current"])
def test_view_declares_the_columns_its_sql_returns(pipeline: Pipeline, db: Any, view: str) -> None:
    view_sql, columns = pipeline.views[view]
    described = db.execute(f"DESCRIBE {view_sql}").fetchall()
    assert [(name, type_) for name, type_, *_ in described] == [
        (name, VIEW_TYPES[type_]) for name, type_ in columns
    ]


# ------------------------------------------------------------------ labels


def test_a_batch_with_labels_stores_its_results_and_its_labels(pipeline: Pipeline, db: Any) -> None:
    payload = batch(
        "dev-a",
        [(10, "2026-11-01T12:00:00.100Z"), (12, "2026-11-01T12:00:02.000Z")],
        [(11, "2026-11-01T12:00:01.500Z", 10, 1)],
    )
    assert json.loads(payload)["first_seq"] == 10 and json.loads(payload)["last_seq"] == 12
    results = delivered_batch(pipeline.results, "dev-a", payload)
    labels = delivered_batch(pipeline.labels, "dev-a", payload)
    load(db, pipeline.results, results)
    load(db, pipeline.labels, labels, "labels")
    assert db.execute("SELECT seq FROM results ORDER BY seq").fetchall() == [(10,), (12,)]
    got = db.execute(
        "SELECT device, seq, label, defect_type, operator, revision, result_seq, decision,"
        " model, line, dt FROM labels"
    ).fetchall()
    assert got == [
        (
            "dev-a",
            11,
            "defect",
            "scratch",
            "alice",
            1,
            10,
            "manual",
            "padim@1.2.0",
            "line-1",
            "2026-11-01",
        )
    ]
    # every field of the message is a column: nothing of a label is lost on the way
    (row,) = labels
    message = json.loads(payload)["labels"][0]
    assert {k: row[k] for k in message} == message


def test_a_labels_only_batch_stores_its_labels_and_is_acknowledged(
    pipeline: Pipeline, db: Any
) -> None:
    payload = batch("dev-a", [], [(20, "2026-11-02T08:00:00.000Z", 15, 2)])
    assert json.loads(payload)["results"] == []
    # the results rule does not act: no empty PutRecordBatch, nothing in its error action
    assert rule_records(pipeline.results.sql, TOPIC.format(device="dev-a"), payload) is None
    labels = delivered_batch(pipeline.labels, "dev-a", payload)
    load(db, pipeline.labels, labels, "labels")
    assert db.execute("SELECT seq, result_seq, revision, dt FROM labels").fetchall() == [
        (20, 15, 2, "2026-11-02")
    ]
    # ...and the batch is acknowledged like any other (the AckRule's model, core_device.cloud)
    assert pipeline.ack_sql == ACK_SQL.format(plant="demo")
    ack = ack_for("demo", TOPIC.format(device="dev-a"), payload)
    assert ack is not None and ack[0] == "lineguard/demo/dev-a/ack"
    assert parse_ack("dev-a", ack[1]) == (20, 20)
    # ...saying this stack stores labels: a device holds its labels back until it hears so
    assert " 1 AS labels FROM " in pipeline.ack_sql and ack_stores_labels(ack[1])


def test_a_batch_without_labels_is_stored_as_before(pipeline: Pipeline) -> None:
    payload = batch("dev-a", [(1, "2026-11-01T12:00:00.000Z")])
    assert "labels" not in json.loads(payload)
    assert rule_records(pipeline.labels.sql, TOPIC.format(device="dev-a"), payload) is None
    assert len(stored(pipeline.results, "dev-a", payload)) == 1


@pytest.mark.parametrize("kind", ["results", "labels"])
def test_a_batch_from_another_device_is_not_stored(pipeline: Pipeline, kind: str) -> None:
    payload = batch(
        "dev-b", [(1, "2026-11-01T12:00:00.000Z")], [(2, "2026-11-01T12:00:01.000Z", 1, 1)]
    )
    delivery = getattr(pipeline, kind)
    assert rule_records(delivery.sql, TOPIC.format(device="dev-a"), payload) is None


def test_an_empty_array_would_be_no_valid_put_record_batch() -> None:
    # why the storage rules test get(<array>, 0): Firehose takes 1 to 500 records per call
    assert "Records" in put_record_batch_errors([])
    assert put_record_batch_errors(["{}"] * 500) == ""
    assert "Records" in put_record_batch_errors(["{}"] * 501)


def test_labels_current_keeps_the_highest_revision_per_result(pipeline: Pipeline, db: Any) -> None:
    first = batch(
        "dev-a", [(30, "2026-11-01T12:00:00.000Z")], [(31, "2026-11-01T12:01:00.000Z", 30, 1)]
    )
    # the verdict corrected the next day, in a labels-only batch; and the first batch resent
    corrected = batch("dev-a", [], [(40, "2026-11-02T09:00:00.000Z", 30, 2)])
    other = batch("dev-b", [], [(31, "2026-11-01T12:02:00.000Z", 30, 1)])  # another device
    rows = [
        row
        for device, payload in (
            ("dev-a", first),
            ("dev-a", corrected),
            ("dev-a", first),
            ("dev-b", other),
        )
        for row in delivered_batch(pipeline.labels, device, payload)
    ]
    load(db, pipeline.labels, rows, "labels")
    assert db.execute("SELECT count(*) FROM labels").fetchone() == (4,)
    dedup_sql, _ = pipeline.views["labels_dedup"]
    assert db.execute(
        f"SELECT device, seq, count(*) FROM ({dedup_sql}) GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall() == [("dev-a", 31, 1), ("dev-a", 40, 1), ("dev-b", 31, 1)]
    current_sql, _ = pipeline.views["labels_current"]
    assert db.execute(
        f"SELECT device, result_seq, seq, revision, ts, dt FROM ({current_sql}) ORDER BY 1"
    ).fetchall() == [
        ("dev-a", 30, 40, 2, dt.datetime(2026, 11, 2, 9, 0), "2026-11-02"),
        ("dev-b", 30, 31, 1, dt.datetime(2026, 11, 1, 12, 2), "2026-11-01"),
    ]

"""The results pipeline's queries run over real result batches, as the services would run them.

From the synthesised template: the Firehose jq query runs in jq 1.6 (the stream's
``JsonParsingEngine`` is JQ-1.6), and the dedup view's SQL runs in DuckDB. DuckDB lacks Trino's
``from_iso8601_timestamp`` (``timestamp(3) with time zone``, trino.io functions/datetime), so a
macro stands in for it: a ``TIMESTAMPTZ`` cast, read back in a UTC session, which is what
Trino's cast to ``timestamp(3)`` keeps for a ``...Z`` value. Everything else is the view's SQL
text as deployed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import duckdb
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from inspector.journal import Pending
from inspector.messages import Identity, build_result, encode
from inspector.uplink import encode_batch
from stacks.config import PlantConfig
from stacks.constructs.log_encryption import PlantLogKey
from stacks.constructs.results_pipeline import ResultsPipeline
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
class Pipeline:
    """What the template says about the path of a result from the rule to the view."""

    rule_separator: str
    firehose_delimiter: str
    jq_query: str
    table_columns: list[tuple[str, str]]
    partition_keys: list[str]
    line_values: list[str]
    view_sql: str
    view_columns: list[tuple[str, str]]


def _unescape(parameter: str) -> str:
    # Firehose's Delimiter parameter is written with escapes ("\\n" is a newline)
    return parameter.encode().decode("unicode_escape")


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
    (rule,) = [
        r
        for r in template.find_resources("AWS::IoT::TopicRule").values()
        if "Firehose" in r["Properties"]["TopicRulePayload"]["Actions"][0]
    ]
    action = rule["Properties"]["TopicRulePayload"]["Actions"][0]["Firehose"]
    (stream,) = template.find_resources("AWS::KinesisFirehose::DeliveryStream").values()
    processors = stream["Properties"]["ExtendedS3DestinationConfiguration"][
        "ProcessingConfiguration"
    ]["Processors"]
    params = {
        p["ParameterName"]: p["ParameterValue"] for proc in processors for p in proc["Parameters"]
    }
    tables = {
        t["Properties"]["TableInput"]["Name"]: t["Properties"]["TableInput"]
        for t in template.find_resources("AWS::Glue::Table").values()
    }
    table, view = tables["results"], tables["results_dedup"]
    text = view["ViewOriginalText"]
    definition = json.loads(base64.b64decode(text[len("/* Presto View: ") : -len(" */")]))
    return Pipeline(
        rule_separator=action.get("Separator", ""),
        firehose_delimiter=_unescape(params.get("Delimiter", "")),
        jq_query=params["MetadataExtractionQuery"],
        table_columns=[(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]],
        partition_keys=[k["Name"] for k in table["PartitionKeys"]],
        line_values=table["Parameters"]["projection.line.values"].split(","),
        view_sql=definition["originalSql"],
        view_columns=[(c["name"], c["type"]) for c in definition["columns"]],
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


def firehose_records(batch: bytes) -> list[str]:
    """The records the rule's SELECT VALUE results hands to Firehose: one per array element."""
    # kinesis-firehose-rule-action.html: "each Array element forms one record"
    return [json.dumps(r, separators=(",", ":")) for r in json.loads(batch)["results"]]


def batch(device: str, results: list[tuple[int, str]]) -> bytes:
    return encode_batch(device, [Pending(seq, _result(device, seq, ts)) for seq, ts in results])


def jq(query: str, records: list[str]) -> list[dict[str, Any]]:
    binary = shutil.which("jq")
    assert binary, "jq is missing (scripts/install-debs.sh installs it)"
    proc = subprocess.run(
        [binary, "-c", query], input="".join(records), capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def delivered(pipeline: Pipeline, records: list[str]) -> list[dict[str, Any]]:
    """Rows the table reads from the objects Firehose writes for these records.

    IoT appends the rule's separator to each record; Firehose appends its delimiter; the JSON
    SerDe reads one row per line, and a line that is not a JSON object is a row of nulls
    (trinodb/trino openxjson README, "Line Format").
    """
    keys = jq(pipeline.jq_query, records)
    rows = []
    for record, key in zip(records, keys, strict=True):
        text = record + pipeline.rule_separator + pipeline.firehose_delimiter
        for line in text.splitlines():
            row = json.loads(line) if line.lstrip().startswith("{") else {}
            rows.append({**row, **{k: key.get(k) for k in pipeline.partition_keys}})
    return rows


@pytest.fixture
def db(pipeline: Pipeline) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE MACRO from_iso8601_timestamp(s) AS CAST(s AS TIMESTAMPTZ)")
    columns = [*pipeline.table_columns, *((k, "string") for k in pipeline.partition_keys)]
    con.execute(
        "CREATE TABLE results ("
        + ", ".join(f"{name} {DUCKDB_TYPES[type_]}" for name, type_ in columns)
        + ")"
    )
    return con


def load(con: duckdb.DuckDBPyConnection, pipeline: Pipeline, rows: list[dict[str, Any]]) -> None:
    names = [n for n, _ in pipeline.table_columns] + pipeline.partition_keys
    con.executemany(
        f"INSERT INTO results VALUES ({', '.join('?' for _ in names)})",
        [[row.get(n) for n in names] for row in rows],
    )


def test_jq_query_gives_each_result_its_line_and_date(pipeline: Pipeline) -> None:
    records = firehose_records(
        batch("dev-a", [(1, "2026-11-01T23:59:59.999Z"), (2, "2026-11-02T00:00:00.000Z")])
    )
    keys = jq(pipeline.jq_query, records)
    assert keys == [
        {"line": "line-1", "dt": "2026-11-01"},
        {"line": "line-1", "dt": "2026-11-02"},
    ]
    # values the table's partition projection can find (projection.line.values, yyyy-MM-dd)
    assert all(k["line"] in pipeline.line_values for k in keys)
    assert all(dt.date.fromisoformat(k["dt"]) for k in keys)


def test_every_delivered_line_is_one_result(pipeline: Pipeline) -> None:
    records = firehose_records(batch("dev-a", [(s, "2026-11-01T12:00:00.000Z") for s in range(5)]))
    rows = delivered(pipeline, records)
    assert [r.get("seq") for r in rows] == list(range(5))  # no rows of nulls between them


def test_view_keeps_one_row_per_device_and_seq(pipeline: Pipeline, db: Any) -> None:
    first = batch("dev-a", [(10, "2026-11-01T12:00:00.100Z"), (11, "2026-11-01T12:00:01.200Z")])
    again = batch("dev-a", [(11, "2026-11-01T12:00:01.200Z"), (12, "2026-11-01T12:00:02.300Z")])
    other = batch("dev-b", [(11, "2026-11-01T12:00:01.500Z")])  # same seq, another device
    rows = [
        row
        for payload in (first, first, again, other)  # `first` resent after a lost PUBACK
        for row in delivered(pipeline, firehose_records(payload))
    ]
    load(db, pipeline, rows)
    assert db.execute("SELECT count(*) FROM results").fetchone() == (7,)
    got = db.execute(
        f"SELECT device, seq, count(*) FROM ({pipeline.view_sql}) GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert got == [("dev-a", 10, 1), ("dev-a", 11, 1), ("dev-a", 12, 1), ("dev-b", 11, 1)]


def test_view_ts_is_the_results_utc_time(pipeline: Pipeline, db: Any) -> None:
    rows = delivered(pipeline, firehose_records(batch("dev-a", [(1, "2026-11-01T12:00:00.123Z")])))
    load(db, pipeline, rows)
    got = db.execute(f"SELECT ts, dt, line FROM ({pipeline.view_sql})").fetchall()
    assert got == [(dt.datetime(2026, 11, 1, 12, 0, 0, 123000), "2026-11-01", "line-1")]


def test_view_declares_the_columns_its_sql_returns(pipeline: Pipeline, db: Any) -> None:
    described = db.execute(f"DESCRIBE {pipeline.view_sql}").fetchall()
    assert [(name, type_) for name, type_, *_ in described] == [
        (name, VIEW_TYPES[type_]) for name, type_ in pipeline.view_columns
    ]

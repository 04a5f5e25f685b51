"""Production quality figures from operators' verdicts, end to end.

Verdicts journaled on a device (first verdicts, corrections, a double tap) → the inspector's
health messages → the deployed rules' SQL in a stand-in of the IoT rules engine → EMF metric
extraction (``tests/support/iot_emf.py``, each rule cited there) → CloudWatch (moto) → the
rollout's reader; and the plant dashboard's Logs Insights query over the same events. Each
figure is checked against the exact one: the labels path's ``labels_current`` view (run in
DuckDB) over the label messages as the cloud stores them, a resent batch included.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import duckdb
import pytest
from aws_cdk.assertions import Template
from moto import mock_aws

from inspector.health import HealthReporter
from inspector.journal import Journal
from inspector.messages import Identity, build_label, encode
from inspector.quality import VerdictTally
from rollout.aws import AwsFleet
from stacks import rollout_metrics as rm
from stacks.config import PlantConfig
from stacks.constructs import quality_metrics as qm
from stacks.constructs import rollout_health
from stacks.constructs.line_health import health_topic
from stacks.constructs.log_encryption import PlantLogKey
from stacks.constructs.monitoring import PlantMonitoring, plant_namespace
from stacks.constructs.results_pipeline import LABEL_COLUMNS, current_labels_sql
from stacks.constructs.rule_errors import RuleErrorLog
from tests.support.iot_emf import Datapoint, NotModelled, emf_metrics, rule_document

IDENTITY = Identity("demo", "line-1", "final-check", "dev-1")
TOPIC = "lineguard/demo/line-1/final-check/dev-1/health"
MODEL = "tiny@1.1.0"
REGION = "eu-west-1"


@dataclass
class Deployed:
    """The quality rules' SQL, and the dashboard, from a synthesised Plant monitoring."""

    sql: dict[str, str]  # rule → its SQL as deployed
    template: Template
    stack: cdk.Stack


@pytest.fixture(scope="module")
def deployed(demo: PlantConfig) -> Deployed:
    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Test", env=cdk.Environment(account="123456789012", region=REGION))
    log_key = PlantLogKey(stack, "LogKey", plant_name=demo.name).key
    errors = RuleErrorLog(stack, "Errors", plant_name=demo.name, log_key=log_key)
    PlantMonitoring(
        stack, "Monitoring", plant=demo, error_action=errors.error_action, log_key=log_key
    )
    template = Template.from_stack(stack)
    sqls = {
        r["Properties"]["TopicRulePayload"]["Sql"]
        for r in template.find_resources("AWS::IoT::TopicRule").values()
    }
    ns = plant_namespace("demo")
    wanted = {
        "labels": qm.labels_sql("demo", ns),
        "manual": qm.manual_sql("demo", ns),
        "rollout": rollout_health.labels_sql("demo"),
    }
    assert set(wanted.values()) <= sqls, "the quality rules are deployed as written"
    return Deployed(wanted, template, stack)


def documents(kind: str, message: dict[str, Any], topic: str = TOPIC) -> dict[str, Any] | None:
    """The EMF document a deployed rule writes for one health message (None: it does not act)."""
    ns = plant_namespace("demo")
    rules = {
        "labels": (qm.labels_document(ns), qm.HAS_LABELS),
        "manual": (qm.manual_document(ns), qm.manual_sql("demo", ns).split(" WHERE ", 1)[1]),
        "rollout": (
            rollout_health.labels_document(rm.rollout_namespace("demo")),
            rollout_health.labels_sql("demo").split(" WHERE ", 1)[1],
        ),
    }
    document, where = rules[kind]
    return rule_document(document, health_topic("demo"), where, topic, message)


def test_the_deployed_sql_is_the_modelled_document(deployed: Deployed) -> None:
    # the stand-in evaluates the documents and WHERE clauses these SQL texts are made of
    from stacks.constructs.emf import emf_sql

    ns = plant_namespace("demo")
    assert deployed.sql["labels"] == emf_sql(
        qm.labels_document(ns), health_topic("demo"), qm.HAS_LABELS
    )
    for kind in ("manual", "rollout"):
        document, where = {
            "manual": (qm.manual_document(ns), deployed.sql["manual"].split(" WHERE ", 1)[1]),
            "rollout": (
                rollout_health.labels_document(rm.rollout_namespace("demo")),
                deployed.sql["rollout"].split(" WHERE ", 1)[1],
            ),
        }[kind]
        assert deployed.sql[kind] == emf_sql(document, health_topic("demo"), where)


# ---------------------------------------------------------------- a device's verdicts


@dataclass
class Device:
    journal: Journal
    tally: VerdictTally
    reporter: HealthReporter
    now: list[float]

    def give(self, part: str, label: str) -> str:
        """A verdict as the review station gives it (journal, then the health tally)."""
        review = self.journal.review(part)
        assert review is not None
        at = 1_800_000_000.0 + self.now[0]

        def message(r: Any, seq: int) -> dict[str, Any]:
            return build_label(
                IDENTITY, camera=r.camera, part_id=r.part_id, seq=seq, ts=at, label=label,
                operator="alice", revision=r.revision, result_seq=r.result_seq,
                decision=r.decision, model=r.model,
            )  # fmt: skip

        outcome = self.journal.record_label(
            part, result_seq=review.result_seq, revision=review.revision, label=label,
            defect_type=None, operator="alice", at="2027-01-15T08:00:00.000Z", message=message,
        )  # fmt: skip
        if outcome.status == "recorded" and outcome.review is not None:
            self.tally.record(
                decision=outcome.review.decision,
                model=outcome.review.model,
                label=label,
                previous=outcome.previous,
            )
        return outcome.status

    def tick(self) -> dict[str, Any]:
        self.now[0] += 60.0
        message = self.reporter.tick()
        assert message is not None
        return json.loads(encode(message))  # as it travels


def _result(part: str, decision: str) -> dict[str, Any]:
    return {
        "v": 1, "plant": "demo", "line": "line-1", "station": "final-check", "device": "dev-1",
        "camera": "cam0", "part_id": part, "seq": 0, "ts": "2027-01-15T08:00:00.000Z",
        "decision": decision, "score": 0.3 if decision == "reject" else 0.15,
        "threshold": 0.2, "model": MODEL, "latency_ms": 3.0,
    }  # fmt: skip


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=8 << 20, synchronous="NORMAL")
    parts = [("r1", "reject"), ("r2", "reject"), ("r3", "reject"), ("m1", "manual"),
             ("m2", "manual")]  # fmt: skip
    journal.append_many([_result(p, d) for p, d in parts], review=("manual", "reject"))
    tally, now = VerdictTally(), [0.0]
    reporter = HealthReporter(
        IDENTITY,
        interval_s=60,
        ring="canary",
        status=lambda: {"healthy": True, "model": MODEL},
        verdicts=tally,
        clock=lambda: now[0],
        wall_clock=lambda: 1_800_000_000.0 + now[0],
    )
    yield Device(journal, tally, reporter, now)
    journal.close()


def exact_figures(label_messages: list[dict[str, Any]]) -> dict[str, int]:
    """The standing verdicts from the labels path: ``labels_current`` over every copy the cloud
    stored (a resent batch included), run in DuckDB (tests/stacks/test_results_queries.py)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE MACRO from_iso8601_timestamp(s) AS CAST(s AS TIMESTAMPTZ)")
    types = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT"}
    columns = [*LABEL_COLUMNS, ("line", "string"), ("dt", "string")]
    con.execute("CREATE TABLE labels (" + ", ".join(f"{n} {types[t]}" for n, t in columns) + ")")
    rows = [[m.get(n) if n != "dt" else m["ts"][:10] for n, _ in columns] for m in label_messages]
    con.executemany(f"INSERT INTO labels VALUES ({', '.join('?' for _ in columns)})", rows)
    counts = con.execute(
        "SELECT decision, count(*), count_if(label = 'defect') "
        f"FROM ({current_labels_sql('labels')}) GROUP BY decision"
    ).fetchall()
    by = {decision: (n, defect) for decision, n, defect in counts}
    return {
        "reviewed_rejects": by.get("reject", (0, 0))[0],
        "defective_rejects": by.get("reject", (0, 0))[1],
        "reviewed_manual": by.get("manual", (0, 0))[0],
        "defective_manual": by.get("manual", (0, 0))[1],
    }


def test_figures_from_health_equal_the_standing_verdicts_despite_corrections_and_resends(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    # interval 1: first verdicts
    for part, label in (("r1", "defect"), ("r2", "good"), ("m1", "defect"), ("m2", "good")):
        assert device.give(part, label) == "recorded"
    first = device.tick()
    # interval 2: two corrections, a double tap, one more reject reviewed
    assert device.give("r2", "defect") == "recorded"  # revision 2
    assert device.give("m1", "good") == "recorded"  # revision 2
    assert device.give("r1", "defect") == "unchanged"
    assert device.give("r3", "good") == "recorded"
    second = device.tick()
    messages = [first, second]

    # the labels as the cloud stores them: every label batch, and the first one again (its
    # acknowledgement was lost, so the device sent it again with the same seqs)
    pending = [p for p in device.journal.pending() if p.kind == "label"]
    stored = [json.loads(p.payload) for p in pending]
    resent = [json.loads(p.payload) for p in pending[:4]]
    exact = exact_figures(stored + resent)
    assert exact == {
        "reviewed_rejects": 3,
        "defective_rejects": 2,
        "reviewed_manual": 2,
        "defective_manual": 0,
    }
    # counting label messages as they arrive would be wrong twice over
    naive_defective_manual = sum(
        1 for m in stored + resent if m["decision"] == "manual" and m["label"] == "defect"
    )
    assert naive_defective_manual == 2 != exact["defective_manual"]

    # plant metrics per line, from the deployed labels rule's EMF documents
    points: list[Datapoint] = []
    for message in messages:
        doc = documents("labels", message)
        assert doc is not None and doc["Version"] == "1.1.0" and doc["Line"] == "line-1"
        points += emf_metrics(doc)
    per_line: dict[str, float] = defaultdict(float)
    for point in points:
        assert point.namespace == "LineGuard/demo" and point.dimensions == (("Line", "line-1"),)
        per_line[point.name] += point.value
    assert dict(per_line) == {
        "ReviewedRejects": 3,
        "DefectiveRejects": 2,
        "ReviewedManual": 2,
        "DefectiveManual": 0,
    }

    # the rollout's metrics per ring and version → CloudWatch → what the gate reads
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name=REGION)
        now = datetime.now(UTC).timestamp()
        for i, message in enumerate(messages):
            doc = documents("rollout", message)
            assert doc is not None
            data = [
                {
                    "MetricName": p.name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in p.dimensions],
                    "Value": p.value,
                    "Unit": p.unit,
                    "Timestamp": datetime.fromtimestamp(now - 240 + 60 * i, UTC),
                }
                for p in emf_metrics(doc)
            ]
            assert {p.namespace for p in emf_metrics(doc)} == {"LineGuard/demo/rollout"}
            cw.put_metric_data(Namespace="LineGuard/demo/rollout", MetricData=data)
        iot = boto3.client("iot", region_name=REGION)
        group = iot.create_thing_group(thingGroupName="lineguard-demo-canary")
        gg = _no_core_devices()
        fleet = AwsFleet(region=REGION, artifact_bucket="x", clients={"greengrassv2": gg[0]})
        with gg[1]:
            health = fleet.ring_health(
                "demo", "canary", group["thingGroupArn"], now - 300, now, "1.1.0"
            )
    assert health.labels == exact


def _no_core_devices() -> tuple[Any, Any]:
    from botocore.stub import Stubber

    client = boto3.client(
        "greengrassv2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    stubber.add_response("list_core_devices", {"coreDevices": []})
    return client, stubber


def _health(**change: Any) -> dict[str, Any]:
    message = {
        "v": 1, "plant": "demo", "line": "line-1", "station": "final-check", "device": "dev-1",
        "ring": "canary", "model": MODEL, "counts": {"pass": 50, "reject": 2, "manual": 1},
        "labels": {"model": "tiny@1.0.0", "reject": {"good": 1, "defect": 1},
                   "manual": {"good": 0, "defect": 1}},
    }  # fmt: skip
    message.update(change)
    return message


def test_verdicts_go_under_the_version_that_judged_the_parts() -> None:
    doc = documents("labels", _health())
    assert doc is not None and doc["Version"] == "1.0.0"  # not the served 1.1.0
    rollout = documents("rollout", _health())
    assert rollout is not None
    (point, *_) = emf_metrics(rollout)
    assert dict(point.dimensions) == {"Ring": "canary", "Version": "1.0.0"}


@pytest.mark.parametrize(
    ("change", "topic", "kinds"),
    [
        ({}, TOPIC, {"labels", "manual", "rollout"}),
        ({"labels": None}, TOPIC, {"manual"}),  # no verdicts in the interval
        ({"ring": None}, TOPIC, {"labels", "manual"}),  # outside a ring: no rollout figures
        ({"ring": ""}, TOPIC, {"labels", "manual"}),
        ({"device": "dev-2"}, TOPIC, set()),  # a report about another thing is not counted
        ({"v": 2}, TOPIC, set()),
        ({"model": None}, TOPIC, {"labels", "rollout"}),  # no served model: no coverage base
        ({"counts": {"pass": 5, "reject": 0, "manual": 0}}, TOPIC, {"labels", "rollout"}),
        (
            {
                "labels": {
                    "model": None,
                    "reject": {"good": 1, "defect": 0},
                    "manual": {"good": 0, "defect": 0},
                }
            },
            TOPIC,
            {"manual"},
        ),  # fmt: skip
        (
            {"labels": {"model": "m@1", "reject": {"good": 1}, "manual": {"good": 0, "defect": 0}}},
            TOPIC,
            {"manual"},
        ),  # fmt: skip
        ({}, "lineguard/other/line-1/final-check/dev-1/health", set()),  # another plant
    ],
)
def test_which_health_messages_give_quality_documents(
    change: dict[str, Any], topic: str, kinds: set[str]
) -> None:
    message = _health(**change)
    got = {k for k in ("labels", "manual", "rollout") if documents(k, message, topic) is not None}
    assert got == kinds
    for kind in got:  # every document the rules write yields its metrics
        doc = documents(kind, message, topic)
        assert doc is not None and emf_metrics(doc)


def test_a_document_whose_counts_are_not_numbers_yields_no_metrics() -> None:
    # a numeric string passes the WHERE's number test (">=" converts it): "+" of strings is a
    # form the rules must not rely on, and the stand-in refuses to guess it
    labels = {"model": "m@1.0.0", "reject": {"good": "1", "defect": "0"},
              "manual": {"good": 0, "defect": 0}}  # fmt: skip
    with pytest.raises(NotModelled):
        documents("labels", _health(labels=labels))
    # EMF takes a metric only as a number, a dimension only as a string: else no metric at all
    doc = documents("labels", _health())
    assert doc is not None and len(emf_metrics(doc)) == 4
    assert emf_metrics({**doc, "DefectiveRejects": "2"}) == []
    assert emf_metrics({**doc, "Line": 7}) == []
    assert emf_metrics({k: v for k, v in doc.items() if k != "Line"}) == []


# ---------------------------------------------------------------- the dashboard's figures

QUERY = re.compile(
    r"filter ispresent\((?P<a>\w+)\) or ispresent\((?P<b>\w+)\)\n"
    r"\| stats (?P<stats>.+) by (?P<by>[\w, ]+)\n\| sort (?P<sort>[\w, ]+)"
)


def logs_insights(query: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stand-in of CloudWatch Logs Insights for the quality query's one form.

    JSON log events' fields are discovered by name (CloudWatch Logs user guide,
    CWL_AnalyzeLogData-discoverable-fields); ``filter`` keeps events for which it is true and
    ``ispresent(f)`` is true when the field exists; ``stats sum(f) as a ... by g`` sums the
    field per distinct value of the ``by`` fields; later expressions in the same ``stats`` may
    compute with earlier aliases (CWL_QuerySyntax: aggregation functions "as arguments for
    other functions"; its sample query ``provisonedMemoryMB - maxMemoryUsedMB``); ``sort f
    asc`` orders the rows. A ratio whose denominator sums to 0 is not modelled.
    """
    form = QUERY.fullmatch(query)
    assert form, f"no model of this query: {query}"
    kept = [e for e in events if form["a"] in e or form["b"] in e]
    by = [f.strip() for f in form["by"].split(",")]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for event in kept:
        groups[tuple(event.get(f) for f in by)].append(event)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        for item in (s.strip() for s in form["stats"].split(",")):
            summed = re.fullmatch(r"sum\((\w+)\) as (\w+)", item)
            ratio = re.fullmatch(r"(\w+) / (\w+) as (\w+)", item)
            if summed:
                row[summed[2]] = sum(e[summed[1]] for e in members if summed[1] in e)
            elif ratio:
                if not row[ratio[2]]:
                    raise NotModelled(f"{ratio[3]}: a ratio over 0 in {key}")
                row[ratio[3]] = row[ratio[1]] / row[ratio[2]]
            else:
                raise NotModelled(item)
        rows.append(row)
    return sorted(rows, key=lambda r: tuple(r[f] for f in by))


def test_the_dashboard_table_gives_ratios_of_sums_per_line_and_version() -> None:
    # two devices on one line, two lines; one device's messages carry a small and a large count
    messages = [
        (_health(labels={"model": "m@1.0.0", "reject": {"good": 1, "defect": 0},
                         "manual": {"good": 1, "defect": 0}},
                 counts={"pass": 50, "reject": 1, "manual": 4}), "line-1", "dev-1"),
        (_health(labels={"model": "m@1.0.0", "reject": {"good": 1, "defect": 9},
                         "manual": {"good": 2, "defect": 1}},
                 counts={"pass": 50, "reject": 10, "manual": 4}), "line-1", "dev-1"),
        (_health(labels={"model": "m@1.0.0", "reject": {"good": 0, "defect": 5},
                         "manual": {"good": 0, "defect": 2}}, device="dev-2",
                 counts={"pass": 50, "reject": 5, "manual": 2}), "line-1", "dev-2"),
        (_health(labels={"model": "m@1.0.0", "reject": {"good": 3, "defect": 1},
                         "manual": {"good": 1, "defect": 1}}, device="dev-3", model="m@1.0.0",
                 counts={"pass": 50, "reject": 4, "manual": 8}), "line-2", "dev-3"),
    ]  # fmt: skip
    events = []
    for message, line, dev in messages:
        message = {**message, "model": "m@1.0.0", "line": line}
        topic = f"lineguard/demo/{line}/final-check/{dev}/health"
        for kind in ("labels", "manual"):
            doc = documents(kind, message, topic)
            assert doc is not None
            events.append(doc)
    rows = logs_insights(qm.quality_query(), events)
    line1, line2 = rows
    assert (line1["Line"], line1["Version"]) == ("line-1", "1.0.0")
    # a ratio of sums: 14 of 16 reviewed rejects defective, not the mean of 0, 0.9 and 1
    assert (line1["defective_rejects"], line1["reviewed_rejects"]) == (14, 16)
    assert line1["reject_precision"] == pytest.approx(14 / 16)
    assert line1["manual_defective_share"] == pytest.approx(3 / 6)
    assert line1["review_coverage"] == pytest.approx(6 / 10)
    assert line2["reject_precision"] == pytest.approx(1 / 4)
    assert line2["review_coverage"] == pytest.approx(2 / 8)
    assert set(qm.QUALITY_COLUMNS) <= set(line1)
    per_line = logs_insights(qm.quality_query(("Line",)), events)
    assert [r["Line"] for r in per_line] == ["line-1", "line-2"]


def _resolve(value: Any) -> str:
    """A template string with its Fn::Join resolved; Refs as REF(<logical id>)."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"REF({value['Ref']})"
    if "Fn::GetAtt" in value:
        return f"GETATT({'.'.join(value['Fn::GetAtt'])})"
    separator, parts = value["Fn::Join"]
    return str(separator).join(_resolve(p) for p in parts)


def test_the_plant_dashboard_shows_the_quality_tables(deployed: Deployed) -> None:
    (dashboard,) = deployed.template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.loads(_resolve(dashboard["Properties"]["DashboardBody"]))
    logs = [w for w in body["widgets"] if w["type"] == "log"]
    (quality_logs,) = [
        logical_id
        for logical_id, group in deployed.template.find_resources("AWS::Logs::LogGroup").items()
        if group["Properties"].get("LogGroupName") == "/lineguard/demo/quality"
    ]
    queries = {w["properties"]["title"]: w["properties"]["query"] for w in logs}
    assert len(queries) == 2
    for title, query in queries.items():
        assert "reject precision" in title.lower() or "quality" in title.lower()
        source, _, text = query.partition("|")
        assert f"SOURCE 'REF({quality_logs})'" in source
        assert "defective_rejects / reviewed_rejects as reject_precision" in text
        assert "defective_manual / reviewed_manual as manual_defective_share" in text
    assert {w["properties"]["view"] for w in logs} == {"table"}
    by = sorted(re.findall(r" by ([\w, ]+)\n", "\n".join(queries.values())))
    assert by == ["Line", "Line, Version"]
    # the events the tables read are kept long enough for a quarter's figures
    deployed.template.has_resource_properties(
        "AWS::Logs::LogGroup", {"LogGroupName": "/lineguard/demo/quality", "RetentionInDays": 90}
    )

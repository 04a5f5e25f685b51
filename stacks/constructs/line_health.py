"""Per-line health metrics with a ``Line`` dimension, so one alarm and one widget cover all lines.

IoT's CloudWatch metric action cannot set dimensions (its parameters are name, namespace, unit,
value, timestamp and role: developer guide ``cloudwatch-metrics-rule-action.html``). So a rule
writes each health message as a CloudWatch Logs event in the embedded metric format (EMF), and
CloudWatch Logs extracts the metrics from it: EMF needs no special header on ``PutLogEvents``
(``CloudWatch_Embedded_Metric_Format_Specification.html``), which is what the rule's
``cloudwatchLogs`` action calls. One Metrics Insights query then groups them by line
(``SELECT ... FROM SCHEMA("<ns>", Line) GROUP BY Line``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs._own_log_group import IOT, RULE_LOG_ACTIONS, own_log_group

LINE_DIMENSION = "Line"
# Health message v1 (edge_component/inspector/health.py): counts of the interval's decisions.
TOTAL = "(counts.pass + counts.reject + counts.manual)"
# (metric name, EMF unit); a CloudWatch custom metric per line each, so only these two.
LINE_METRICS: tuple[tuple[str, str], ...] = (("RejectRate", "None"), ("Inspections", "Count"))
# A Metrics Insights query returns at most 500 time series; with ORDER BY it returns the 500
# highest (cloudwatch-metrics-insights-limits.html), so the worst lines are always among them.
MAX_SERIES = 500


@dataclass(frozen=True)
class Expr:
    """An IoT SQL expression inside a literal (rendered as is, not quoted)."""

    sql: str


def line_health_document(namespace: str) -> dict[str, Any]:
    """The EMF document the rule builds from one health message (``Expr`` = IoT SQL)."""
    return {
        # EMF: "_aws" holds the Timestamp (ms since the epoch) and the metric directives; every
        # dimension and metric they name is a member of the root (EMF specification).
        "_aws": {
            "Timestamp": Expr("timestamp()"),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [[LINE_DIMENSION]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit in LINE_METRICS],
                }
            ],
        },
        LINE_DIMENSION: Expr("topic(3)"),  # lineguard/<plant>/<line>/<station>/<device>/health
        "Inspections": Expr(TOTAL),
        # Int / Int is an Int in IoT SQL (iot-sql-operators.html, "/ operator"): make it decimal.
        "RejectRate": Expr(f"counts.reject * 1.0 / {TOTAL}"),
    }


def iot_literal(value: Any) -> str:
    """Render a JSON-like value as an IoT SQL literal (SQL 2016-03-23, ``iot-sql-literals.html``)."""
    if isinstance(value, Expr):
        return value.sql
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{iot_literal(k)}: {iot_literal(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(iot_literal(v) for v in value) + "]"
    if isinstance(value, str):
        if "'" in value or "\\" in value:
            raise ValueError(f"cannot quote {value!r} in an IoT SQL literal")
        return f"'{value}'"
    if isinstance(value, bool | int | float):
        return "true" if value is True else "false" if value is False else repr(value)
    raise TypeError(f"no IoT SQL literal for {type(value).__name__}")


def line_health_sql(plant: str, namespace: str) -> str:
    """The rule's SQL: one EMF document per health message that judged at least one part."""
    return (
        f"SELECT VALUE {iot_literal(line_health_document(namespace))} "
        f"FROM 'lineguard/{plant}/+/+/+/health' WHERE v = 1 AND device = topic(5) AND {TOTAL} > 0"
    )


def line_query(namespace: str, metric: str, statistic: str, limit: int = MAX_SERIES) -> str:
    """Metrics Insights query: one series per line, highest first (at most ``limit``)."""
    return (
        f'SELECT {statistic}({metric}) FROM SCHEMA("{namespace}", {LINE_DIMENSION}) '
        f"GROUP BY {LINE_DIMENSION} ORDER BY {statistic}() DESC LIMIT {limit}"
    )


class LineHealth(Construct):
    """Topic rule writing EMF health documents to a log group (metrics by ``Line``).

    Attributes:
        log_group: where the EMF documents land (metrics are extracted from them).
        rule: the IoT rule.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        namespace: str,
        error_action: iot.CfnTopicRule.ActionProperty,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        name = f"/lineguard/{plant.name}/line-health"
        # The events only carry the metrics, which CloudWatch keeps on its own: keep them short.
        made = own_log_group(
            self,
            log_group_name=name,
            log_key=log_key,
            role_description=f"IoT line health rule of plant {plant.name}: write its EMF log group",
            reason="IoT creates the log streams of this one line-health log group at run time.",
            service=IOT,
            actions=RULE_LOG_ACTIONS,
            retention=logs.RetentionDays.ONE_WEEK,
            role_id="RuleRole",
        )
        self.log_group, role = made.log_group, made.role
        self.rule = iot.CfnTopicRule(
            self,
            "Rule",
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                description=f"LineGuard {plant.name}: health per line (EMF, dimension Line)",
                sql=line_health_sql(plant.name, namespace),
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        cloudwatch_logs=iot.CfnTopicRule.CloudwatchLogsActionProperty(
                            log_group_name=self.log_group.log_group_name, role_arn=role.role_arn
                        )
                    )
                ],
                error_action=error_action,
            ),
        )

"""Metrics with dimensions from IoT messages: a rule writes EMF documents to a log group.

IoT's CloudWatch metric action cannot set dimensions (its parameters are name, namespace, unit,
value, timestamp and role: developer guide ``cloudwatch-metrics-rule-action.html``). So a rule
writes each message as a CloudWatch Logs event in the embedded metric format (EMF), and
CloudWatch Logs extracts the metrics from it: EMF needs no special header on ``PutLogEvents``
(``CloudWatch_Embedded_Metric_Format_Specification.html``), which is what the rule's
``cloudwatchLogs`` action calls (its role needs ``logs:CreateLogStream``,
``logs:DescribeLogStreams`` and ``logs:PutLogEvents``: ``cloudwatch-logs-rule-action.html``).

The EMF specification's rules this module relies on:

- the root holds ``_aws`` with ``Timestamp`` (ms since the epoch) and ``CloudWatchMetrics``, an
  array of metric directives (``Namespace``, ``Dimensions``, ``Metrics``);
- ``Dimensions`` is an array of dimension sets, and "every DimensionSet used creates a new
  metric in CloudWatch" (so one document can publish a metric at several granularities);
- every dimension and metric a directive names MUST be a member of the root, a dimension's
  value a string and a metric's a number — a document that breaks this yields no metrics, so
  the rules' ``WHERE`` admits only messages that give each member its type.

The document is built in the rule's ``SELECT VALUE`` as an IoT SQL object literal
(``iot-sql-literals.html``, SQL version 2016-03-23).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs._own_log_group import IOT, RULE_LOG_ACTIONS, own_log_group

SQL_VERSION = "2016-03-23"


@dataclass(frozen=True)
class Expr:
    """An IoT SQL expression inside a literal (rendered as is, not quoted)."""

    sql: str


@dataclass(frozen=True)
class MetricDirective:
    """One EMF metric directive: a namespace, its dimension sets and (metric, unit) pairs."""

    namespace: str
    dimensions: tuple[tuple[str, ...], ...]
    metrics: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        """The directive as EMF spells it."""
        return {
            "Namespace": self.namespace,
            "Dimensions": [list(d) for d in self.dimensions],
            "Metrics": [{"Name": name, "Unit": unit} for name, unit in self.metrics],
        }


def emf_document(
    directives: Sequence[MetricDirective], members: Mapping[str, Any]
) -> dict[str, Any]:
    """The EMF document a rule builds: ``_aws`` (the rule's time, the directives) + ``members``.

    Raises:
        ValueError: a directive names a dimension or metric that is not among ``members``.
    """
    for directive in directives:
        named = {d for dims in directive.dimensions for d in dims} | {
            m for m, _ in directive.metrics
        }
        missing = sorted(named - set(members))
        if missing:
            raise ValueError(f"EMF directive {directive.namespace}: no member for {missing}")
    return {
        "_aws": {
            "Timestamp": Expr("timestamp()"),  # ms since the epoch, as the rules engine sees it
            "CloudWatchMetrics": [d.to_json() for d in directives],
        },
        **members,
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


def emf_sql(document: Mapping[str, Any], topic_filter: str, where: str) -> str:
    """``SELECT VALUE <document> FROM '<topic filter>' WHERE <where>``."""
    return f"SELECT VALUE {iot_literal(document)} FROM '{topic_filter}' WHERE {where}"


def is_string(field: str) -> str:
    """IoT SQL that is true only when ``field`` is a string.

    IoT SQL has no type test for strings (``iot-sql-functions.html`` lists ``isNull`` and
    ``isUndefined`` only). ``substring(x, 0)`` is ``x`` for a string and converts anything else
    ("the standard conversions are applied"): a number or boolean to its text, an array or
    object to its JSON, Null and Undefined to Undefined (``iot-sql-data-types.html``,
    Conversions, "To string"). ``=`` of mismatched types is false, and with Undefined it is
    Undefined, which a ``WHERE`` does not take as true (``iot-sql-operators.html``, ``=``;
    ``iot-sql-where.html``).
    """
    return f"{field} = substring({field}, 0)"


def is_number(field: str) -> str:
    """IoT SQL that is true only when ``field`` converts to a number (negative ones too).

    ``>`` / ``<`` convert both operands to a Decimal and compare; a value that does not convert
    (an object, an array, Null, Undefined) gives Undefined, and so does an ``OR`` of two
    Undefined (``iot-sql-operators.html``, ``>``, ``<``, ``OR``); a ``WHERE`` takes only true
    (``iot-sql-where.html``). A numeric string converts too: the devices send numbers, and a
    document with a string where EMF wants a number yields no metrics, nothing worse.
    """
    return f"({field} >= 0 OR {field} < 0)"


def or_zero(field: str) -> str:
    """IoT SQL for ``field``, or 0 when it is null or missing (``iot-sql-case.html``)."""
    return f"CASE isNull({field}) OR isUndefined({field}) WHEN true THEN 0 ELSE {field} END"


@dataclass(frozen=True)
class EmfRule:
    """One IoT rule of an :class:`EmfRules`: its construct id, description and SQL."""

    rule_id: str
    description: str
    sql: str


class EmfRules(Construct):
    """A log group for EMF documents and the IoT rules that write them there (one role).

    Attributes:
        log_group: where the EMF documents land (CloudWatch extracts the metrics from them).
        role: the rules' role: write that log group's streams, nothing else.
        rules: rule id → the IoT rule.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        log_group_name: str,
        log_key: kms.IKey,
        role_description: str,
        rules: Sequence[EmfRule],
        error_action: iot.CfnTopicRule.ActionProperty,
        retention: logs.RetentionDays = logs.RetentionDays.ONE_WEEK,
    ) -> None:
        super().__init__(scope, construct_id)
        # The events only carry the metrics, which CloudWatch keeps on its own: keep them short
        # (unless the events are queried themselves, as the quality figures are).
        made = own_log_group(
            self,
            log_group_name=log_group_name,
            log_key=log_key,
            role_description=role_description,
            reason=f"IoT creates the log streams of this one log group ({log_group_name}) at "
            "run time.",
            service=IOT,
            actions=RULE_LOG_ACTIONS,
            retention=retention,
            role_id="RuleRole",
        )
        self.log_group, self.role = made.log_group, made.role
        self.rules = {
            rule.rule_id: iot.CfnTopicRule(
                self,
                rule.rule_id,
                topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                    description=rule.description,
                    sql=rule.sql,
                    aws_iot_sql_version=SQL_VERSION,
                    rule_disabled=False,
                    actions=[
                        iot.CfnTopicRule.ActionProperty(
                            cloudwatch_logs=iot.CfnTopicRule.CloudwatchLogsActionProperty(
                                log_group_name=self.log_group.log_group_name,
                                role_arn=self.role.role_arn,
                            )
                        )
                    ],
                    error_action=error_action,
                ),
            )
            for rule in rules
        }

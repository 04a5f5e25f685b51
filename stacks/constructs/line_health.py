"""Per-line health metrics with a ``Line`` dimension, so one alarm and one widget cover all lines.

A rule writes each health message as an EMF document to the log group
``/lineguard/<plant>/line-health`` and CloudWatch Logs extracts the metrics
(``stacks/constructs/emf.py``). One Metrics Insights query then groups them by line
(``SELECT ... FROM SCHEMA("<ns>", Line) GROUP BY Line``).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs.emf import EmfRule, EmfRules, Expr, MetricDirective, emf_document, emf_sql

LINE_DIMENSION = "Line"
# Health message v1 (edge_component/inspector/health.py): counts of the interval's decisions.
TOTAL = "(counts.pass + counts.reject + counts.manual)"
# (metric name, EMF unit); a CloudWatch custom metric per line each, so only these two.
LINE_METRICS: tuple[tuple[str, str], ...] = (("RejectRate", "None"), ("Inspections", "Count"))
# A Metrics Insights query returns at most 500 time series; with ORDER BY it returns the 500
# highest (cloudwatch-metrics-insights-limits.html), so the worst lines are always among them.
MAX_SERIES = 500


def health_topic(plant: str) -> str:
    """The topic filter of every health message of a plant."""
    return f"lineguard/{plant}/+/+/+/health"


# a report counts only from the thing it names: the device's IoT policy pins topic level 5 to
# its own thing name (stacks/policies.py)
FROM_ITS_DEVICE = "v = 1 AND device = topic(5)"


def line_health_document(namespace: str) -> dict[str, Any]:
    """The EMF document the rule builds from one health message (``Expr`` = IoT SQL)."""
    return emf_document(
        [MetricDirective(namespace, ((LINE_DIMENSION,),), LINE_METRICS)],
        {
            LINE_DIMENSION: Expr("topic(3)"),  # lineguard/<plant>/<line>/<station>/<device>/health
            "Inspections": Expr(TOTAL),
            # Int / Int is an Int in IoT SQL (iot-sql-operators.html, "/ operator"): make it decimal.
            "RejectRate": Expr(f"counts.reject * 1.0 / {TOTAL}"),
        },
    )


def line_health_sql(plant: str, namespace: str) -> str:
    """The rule's SQL: one EMF document per health message that judged at least one part."""
    return emf_sql(
        line_health_document(namespace), health_topic(plant), f"{FROM_ITS_DEVICE} AND {TOTAL} > 0"
    )


def line_query(namespace: str, metric: str, statistic: str, limit: int = MAX_SERIES) -> str:
    """Metrics Insights query: one series per line, highest first (at most ``limit``)."""
    return (
        f'SELECT {statistic}({metric}) FROM SCHEMA("{namespace}", {LINE_DIMENSION}) '
        f"GROUP BY {LINE_DIMENSION} ORDER BY {statistic}() DESC LIMIT {limit}"
    )


class LineHealth(EmfRules):
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
        super().__init__(
            scope,
            construct_id,
            log_group_name=f"/lineguard/{plant.name}/line-health",
            log_key=log_key,
            role_description=f"IoT line health rule of plant {plant.name}: write its EMF log group",
            rules=[
                EmfRule(
                    "Rule",
                    f"LineGuard {plant.name}: health per line (EMF, dimension Line)",
                    line_health_sql(plant.name, namespace),
                )
            ],
            error_action=error_action,
        )
        self.rule = self.rules["Rule"]

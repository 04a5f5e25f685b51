"""Production quality from operators' verdicts: metrics per line, figures per line and version.

The inspector's health message carries the interval's review-station verdicts of one model
(``labels``: ``{"model", "reject": {"good", "defect"}, "manual": {"good", "defect"}}``,
``inspector.quality``), counted on the device with their corrections: a replaced verdict moves
one from its old label to the new (-1 / +1), so the sums over any window are the standing
verdicts given in it (docs/decisions.md says why the device counts them, not the cloud).

Two rules write EMF documents (``stacks/constructs/emf.py``) to ``/lineguard/<plant>/quality``:

- **labels**: every health message with verdicts: ``ReviewedRejects``, ``DefectiveRejects``,
  ``ReviewedManual``, ``DefectiveManual`` per ``Line`` in the plant's namespace, with the
  version of the model that judged the reviewed parts (``Version``) and the station as fields
  of the event;
- **manual**: every health message that sent parts to manual: ``Manual`` per ``Line``, with the
  served model's ``Version``: the denominator of the review coverage.

The rollout's gate reads the same counts per ring and version (``stacks/rollout_metrics.py``,
``stacks/constructs/rollout_health.py``). Ratios of sums per line and version are read from the
events with CloudWatch Logs Insights (:func:`quality_query`), which the plant dashboard shows:
metric math cannot divide one grouped query by another, and a mean of per-message ratios is
not the ratio of the sums.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks import rollout_metrics as rm
from stacks.config import PlantConfig
from stacks.constructs.emf import (
    EmfRule,
    EmfRules,
    Expr,
    MetricDirective,
    emf_document,
    emf_sql,
    is_number,
    is_string,
)
from stacks.constructs.line_health import FROM_ITS_DEVICE, LINE_DIMENSION, health_topic

VERSION_FIELD = "Version"
STATION_FIELD = "Station"
MANUAL = "Manual"
# The health message's label counts (inspector.quality.VerdictTally.take)
LABEL_COUNTS = tuple(f"labels.{d}.{v}" for d in ("reject", "manual") for v in ("good", "defect"))
HAS_LABELS = f"{FROM_ITS_DEVICE} AND {is_string('labels.model')} AND " + " AND ".join(
    is_number(field) for field in LABEL_COUNTS
)
MANUAL_METRICS: tuple[tuple[str, str], ...] = ((MANUAL, "Count"),)
# what the dashboard's quality tables aggregate; the quality log group keeps its events this long
RETENTION = logs.RetentionDays.THREE_MONTHS


def version_of(model: str) -> Expr:
    """The version part of a ``name@version`` field (``iot-sql-functions.html``: substring,
    indexof)."""
    return Expr(f"substring({model}, indexof({model}, '@') + 1)")


def label_members() -> dict[str, Any]:
    """The four verdict counts of one health message, as EMF members (IoT SQL)."""
    return {
        rm.REVIEWED_REJECTS: Expr("labels.reject.good + labels.reject.defect"),
        rm.DEFECTIVE_REJECTS: Expr("labels.reject.defect"),
        rm.REVIEWED_MANUAL: Expr("labels.manual.good + labels.manual.defect"),
        rm.DEFECTIVE_MANUAL: Expr("labels.manual.defect"),
    }


def labels_document(namespace: str) -> dict[str, Any]:
    """The EMF document of one health message's verdicts (``Expr`` = IoT SQL)."""
    return emf_document(
        [MetricDirective(namespace, ((LINE_DIMENSION,),), rm.LABEL_METRICS)],
        {
            LINE_DIMENSION: Expr("topic(3)"),  # lineguard/<plant>/<line>/<station>/<device>/health
            STATION_FIELD: Expr("topic(4)"),
            VERSION_FIELD: version_of("labels.model"),
            **label_members(),
        },
    )


def manual_document(namespace: str) -> dict[str, Any]:
    """The EMF document of one health message's manual parts, under the served version."""
    return emf_document(
        [MetricDirective(namespace, ((LINE_DIMENSION,),), MANUAL_METRICS)],
        {
            LINE_DIMENSION: Expr("topic(3)"),
            STATION_FIELD: Expr("topic(4)"),
            VERSION_FIELD: version_of("model"),
            MANUAL: Expr("counts.manual"),
        },
    )


def labels_sql(plant: str, namespace: str) -> str:
    """The labels rule's SQL: health messages with a model's verdict counts."""
    return emf_sql(labels_document(namespace), health_topic(plant), HAS_LABELS)


def manual_sql(plant: str, namespace: str) -> str:
    """The manual rule's SQL: health messages that sent parts to manual with a served model."""
    where = f"{FROM_ITS_DEVICE} AND {is_string('model')} AND counts.manual > 0"
    return emf_sql(manual_document(namespace), health_topic(plant), where)


QUALITY_COLUMNS = (
    "reject_precision",
    "reviewed_rejects",
    "defective_rejects",
    "manual_defective_share",
    "reviewed_manual",
    "defective_manual",
    "review_coverage",
    "manual",
)


def quality_query(by: tuple[str, ...] = (LINE_DIMENSION, VERSION_FIELD)) -> str:
    """CloudWatch Logs Insights query of the quality figures over the quality log group.

    ``stats`` aggregates with ``sum`` and may compute with the aliases of its own aggregates
    (CloudWatch Logs user guide, CWL_QuerySyntax: aggregation functions "in the stats command
    and as arguments for other functions"; the sample queries' ``provisonedMemoryMB -
    maxMemoryUsedMB``): reject precision = defective ÷ reviewed rejects, the share of manual
    parts found defective = defective ÷ reviewed manual parts, review coverage = reviewed ÷
    all manual parts.
    """
    sums = (
        f"sum({rm.REVIEWED_REJECTS}) as reviewed_rejects",
        f"sum({rm.DEFECTIVE_REJECTS}) as defective_rejects",
        f"sum({rm.REVIEWED_MANUAL}) as reviewed_manual",
        f"sum({rm.DEFECTIVE_MANUAL}) as defective_manual",
        f"sum({MANUAL}) as manual",
    )
    ratios = (
        "defective_rejects / reviewed_rejects as reject_precision",
        "defective_manual / reviewed_manual as manual_defective_share",
        "reviewed_manual / manual as review_coverage",
    )
    return (
        f"filter ispresent({rm.REVIEWED_REJECTS}) or ispresent({MANUAL})\n"
        f"| stats {', '.join(sums + ratios)} by {', '.join(by)}\n"
        f"| sort {', '.join(f'{field} asc' for field in by)}"
    )


class QualityMetrics(EmfRules):
    """The labels and manual rules of the plant's quality figures, and their EMF log group.

    Attributes:
        log_group: where the EMF documents land: metrics per line, and the events the
            dashboard's Logs Insights tables aggregate per line and model version.
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
        name = plant.name
        super().__init__(
            scope,
            construct_id,
            log_group_name=f"/lineguard/{name}/quality",
            log_key=log_key,
            role_description=f"IoT quality rules of plant {name}: write their EMF log group",
            rules=[
                EmfRule(
                    "LabelsRule",
                    f"LineGuard {name}: operators' verdicts per line (EMF, dimension Line)",
                    labels_sql(name, namespace),
                ),
                EmfRule(
                    "ManualRule",
                    f"LineGuard {name}: manual parts per line, for review coverage (EMF)",
                    manual_sql(name, namespace),
                ),
            ],
            error_action=error_action,
            retention=RETENTION,
        )

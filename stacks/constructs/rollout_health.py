"""The rollout's health metrics per ring, line, station and model version (EMF rules).

Two rules on the plant's health messages write EMF documents (``stacks/constructs/emf.py``) to
``/lineguard/<plant>/rollout-health``; the metric contract (namespace, dimensions, names) is
``stacks/rollout_metrics.py``, which ``rollout/aws.py`` reads with the same names:

- **decisions**: every health message that names its ring, in namespace
  ``LineGuard/<plant>/rollout``, per (Ring, Version, Line, Station) and per (Ring, Version) —
  Version being the served model's, the part of ``model`` after ``@``
  (``substring(model, indexof(model, '@') + 1)``, ``iot-sql-functions.html``);
- **shadow**: messages whose shadow model judged frames, per (Ring, ShadowVersion) — the
  shadow's own version, so a gate asking about a candidate run as the shadow finds it — and
  frames and raw agreements per (Ring, Version) of the served model;
- **labels**: messages with review-station verdicts, per (Ring, Version) — Version being the
  model that judged the reviewed parts (``labels.model``), not necessarily the served one —
  the counts the ``reject_precision`` gate reads (``stacks/constructs/quality_metrics.py``).

A message without a string ``ring`` (an inspector outside a ring deployment, or older than the
``ring`` setting) gives no rollout metrics.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
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
    is_string,
    or_zero,
)
from stacks.constructs.line_health import FROM_ITS_DEVICE, TOTAL, health_topic
from stacks.constructs.quality_metrics import HAS_LABELS, label_members, version_of

# dimension targets must be strings (EMF): only messages that give each one a string
RINGED = (
    f"{FROM_ITS_DEVICE} AND {is_string('ring')} AND ring <> '' AND {is_string('model')} "
    f"AND {is_string('line')} AND {is_string('station')}"
)
REJECT_FIELDS = ("both", "served_only", "shadow_only")


def decision_document(namespace: str) -> dict[str, Any]:
    """The EMF document of one health message's decisions (``Expr`` = IoT SQL)."""
    return emf_document(
        [MetricDirective(namespace, (rm.STRATUM, rm.RING_VERSION), rm.DECISION_METRICS)],
        {
            rm.RING: Expr("ring"),
            rm.VERSION: version_of("model"),
            rm.LINE: Expr("line"),
            rm.STATION: Expr("station"),
            rm.INSPECTIONS: Expr(TOTAL),
            rm.REJECTS: Expr("counts.reject"),
            rm.MANUAL: Expr("counts.manual"),
            # an interval without frames has no p99 (null): 0, which a Maximum ignores
            rm.INFERENCE_P99: Expr(or_zero("latency_ms.p99")),
            rm.HEALTH_REPORTS: 1,
        },
    )


def shadow_document(namespace: str) -> dict[str, Any]:
    """The EMF document of one health message's shadow model figures."""
    return emf_document(
        [
            MetricDirective(namespace, (rm.SHADOW,), rm.SHADOW_METRICS),
            MetricDirective(namespace, (rm.RING_VERSION,), rm.SERVED_SHADOW_METRICS),
        ],
        {
            rm.RING: Expr("ring"),
            rm.SHADOW_VERSION: version_of("shadow.model"),
            rm.VERSION: version_of("model"),
            rm.SHADOW_FRAMES: Expr("shadow.frames"),
            rm.SHADOW_REJECT_BOTH: Expr("shadow.reject.both"),
            rm.SHADOW_REJECT_SERVED_ONLY: Expr("shadow.reject.served_only"),
            rm.SHADOW_REJECT_SHADOW_ONLY: Expr("shadow.reject.shadow_only"),
            # the device rounds agreement to 4 decimals: exact counts up to 5,000 frames
            rm.SHADOW_AGREED: Expr("round(shadow.agreement * shadow.frames)"),
        },
    )


def labels_document(namespace: str) -> dict[str, Any]:
    """The EMF document of one health message's verdicts, per ring and judging version."""
    return emf_document(
        [MetricDirective(namespace, (rm.RING_VERSION,), rm.LABEL_METRICS)],
        {rm.RING: Expr("ring"), rm.VERSION: version_of("labels.model"), **label_members()},
    )


def labels_sql(plant: str) -> str:
    """The labels rule's SQL: messages with verdict counts that name their ring."""
    where = f"{HAS_LABELS} AND {is_string('ring')} AND ring <> ''"
    return emf_sql(labels_document(rm.rollout_namespace(plant)), health_topic(plant), where)


def decision_sql(plant: str) -> str:
    """The decisions rule's SQL."""
    return emf_sql(decision_document(rm.rollout_namespace(plant)), health_topic(plant), RINGED)


def shadow_sql(plant: str) -> str:
    """The shadow rule's SQL: only messages whose shadow judged frames and has every count."""
    numbers = " AND ".join(f"shadow.reject.{f} >= 0" for f in REJECT_FIELDS)
    where = (
        f"{RINGED} AND {is_string('shadow.model')} AND shadow.frames > 0 "
        f"AND shadow.agreement >= 0 AND {numbers}"
    )
    return emf_sql(shadow_document(rm.rollout_namespace(plant)), health_topic(plant), where)


class RolloutHealth(EmfRules):
    """The decisions and shadow rules of the rollout's metrics, and their EMF log group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        error_action: iot.CfnTopicRule.ActionProperty,
        log_key: kms.IKey,
    ) -> None:
        name = plant.name
        super().__init__(
            scope,
            construct_id,
            log_group_name=f"/lineguard/{name}/rollout-health",
            log_key=log_key,
            role_description=f"IoT rollout health rules of plant {name}: write their EMF log group",
            rules=[
                EmfRule(
                    "DecisionRule",
                    f"LineGuard {name}: decisions per ring, version, line, station (EMF)",
                    decision_sql(name),
                ),
                EmfRule(
                    "ShadowRule",
                    f"LineGuard {name}: shadow model reject confusion per ring and version (EMF)",
                    shadow_sql(name),
                ),
                EmfRule(
                    "LabelsRule",
                    f"LineGuard {name}: operators' verdicts per ring and version (EMF)",
                    labels_sql(name),
                ),
            ],
            error_action=error_action,
        )

"""Health messages → CloudWatch metrics; dashboard and alarms per plant; alarms → SNS."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs.emf import or_zero
from stacks.constructs.line_health import LINE_DIMENSION, LineHealth, line_query
from stacks.constructs.quality_metrics import VERSION_FIELD, QualityMetrics, quality_query
from stacks.constructs.rollout_health import RolloutHealth

# Health message fields the rule reads (edge_component/inspector/health.py):
# {"v": 1, "counts": {"pass": n, "reject": n, "manual": n}, "latency_ms": {"p50": x|null,
#  "p99": x|null, ...}, "backlog": n|null, "healthy": bool, ...}
# The device's IoT policy pins topic level 5 to its own thing name (stacks/policies.py): a report
# whose "device" is not the publishing thing is not counted.
HEALTH_SQL = "SELECT * FROM 'lineguard/{plant}/+/+/+/health' WHERE v = 1 AND device = topic(5)"
TOTAL = "counts.pass + counts.reject + counts.manual"
# Lines shown in each per-line dashboard graph (the highest values; the alarm watches all).
LINES_SHOWN = 20
# Dynamic label "the metric's default label" (CloudWatch graph-dynamic-labels): a grouped
# query's series are named by their line; without it the CDK labels every series with the query.
SERIES_LABEL = "${LABEL}"


def _or_zero(field: str) -> str:
    # An interval without frames reports null; a metric action on null would fail the rule.
    return f"${{{or_zero(field)}}}"


def plant_namespace(plant: str) -> str:
    """CloudWatch namespace of a plant's metrics."""
    return f"LineGuard/{plant}"


# (metric name, value expression, unit) published per health message at plant level
PLANT_METRICS: tuple[tuple[str, str, str], ...] = (
    ("Inspections", f"${{{TOTAL}}}", "Count"),
    ("Rejects", "${counts.reject}", "Count"),
    ("Manual", "${counts.manual}", "Count"),
    ("InferenceP99", _or_zero("latency_ms.p99"), "Milliseconds"),
    ("JournalBacklog", _or_zero("backlog"), "Count"),
    ("HealthReports", "1", "Count"),
    ("UnhealthyReports", "${CASE healthy WHEN true THEN 0 ELSE 1 END}", "Count"),
)
# ... per line, with a Line dimension, through stacks/constructs/line_health.py; and for the
# rollout's gates per ring, line, station and model version in LineGuard/<plant>/rollout
# through stacks/constructs/rollout_health.py (both EMF: CloudWatch Logs puts those metrics,
# not this rule's role)


class PlantMonitoring(Construct):
    """Health rules, alarm topic, alarms (reject burst, line reject rate, p99, silent devices,
    journal backlog) and the plant dashboard.

    Its size does not grow with the plant's lines: one alarm watches every line's reject rate
    (a Metrics Insights query grouped by line; each line is a contributor of the alarm) and the
    dashboard graphs the worst lines. An alarm per line would hit CloudFormation's 500 resources
    per stack, and a metric math alarm takes at most 10 metrics (CloudWatch ``alarm-limits.html``).

    Attributes:
        topic: SNS topic every alarm notifies.
        rule: the IoT rule that turns health messages into plant metrics.
        line_health: the per-line metrics' rule (EMF).
        rollout_health: the rollout's metrics' rules (EMF, rollout/aws.py reads them).
        quality: the operators' verdicts' rules (EMF, metrics per line; events per version).
        alarms: name → alarm.
        dashboard: the plant's CloudWatch dashboard.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        error_action: iot.CfnTopicRule.ActionProperty,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        ns = plant_namespace(plant.name)
        mon = plant.monitoring

        role = iam.Role(
            self,
            "RuleRole",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description=f"IoT health rule of plant {plant.name}: put CloudWatch metrics",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData has no resource-level permission
                # the one namespace this rule puts; the EMF rules' metrics are CloudWatch Logs'
                conditions={"StringEquals": {"cloudwatch:namespace": ns}},
            )
        )
        cdk.Validations.of(role).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="cloudwatch:PutMetricData supports no resource ARN; the policy is limited "
                f"to the plant's namespace ({ns}) by condition.",
            )
        )
        actions = [
            self._metric_action(ns, name, value, unit, role) for name, value, unit in PLANT_METRICS
        ]
        self.rule = iot.CfnTopicRule(
            self,
            "HealthRule",
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                description=f"LineGuard {plant.name}: device health messages to CloudWatch",
                sql=HEALTH_SQL.format(plant=plant.name),
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=actions,
                error_action=error_action,
            ),
        )
        self.line_health = LineHealth(
            self,
            "LineHealth",
            plant=plant,
            namespace=ns,
            error_action=error_action,
            log_key=log_key,
        )
        self.rollout_health = RolloutHealth(
            self, "RolloutHealth", plant=plant, error_action=error_action, log_key=log_key
        )
        self.quality = QualityMetrics(
            self,
            "Quality",
            plant=plant,
            namespace=ns,
            error_action=error_action,
            log_key=log_key,
        )

        key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"LineGuard {plant.name} alarm topic encryption",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        # CloudWatch alarms publish to an encrypted topic only if the key lets them.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": plant.account}},
            )
        )
        self.topic = sns.Topic(
            self,
            "Alarms",
            # a fixed name, so people can subscribe by ARN (docs/deploy.md)
            topic_name=f"lineguard-{plant.name}-alarms",
            display_name=f"LineGuard {plant.name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        action = cw_actions.SnsAction(self.topic)
        self.alarms: dict[str, cw.Alarm] = {}
        period = cdk.Duration.minutes(5)

        def plant_metric(name: str, statistic: str, minutes: int = 5) -> cw.Metric:
            return cw.Metric(
                namespace=ns,
                metric_name=name,
                statistic=statistic,
                period=cdk.Duration.minutes(minutes),
            )

        def add(name: str, alarm: cw.Alarm) -> None:
            alarm.add_alarm_action(action)
            self.alarms[name] = alarm

        add(
            "RejectBurst",
            plant_metric("Rejects", "Sum", minutes=1).create_alarm(
                self,
                "RejectBurst",
                alarm_name=f"lineguard-{plant.name}-reject-burst",
                alarm_description=(
                    f"More than {mon.reject_burst_per_minute} rejects in one minute over the plant"
                ),
                threshold=mon.reject_burst_per_minute,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )
        add(
            "InferenceP99",
            plant_metric("InferenceP99", "Maximum").create_alarm(
                self,
                "InferenceP99",
                alarm_name=f"lineguard-{plant.name}-inference-p99",
                alarm_description=(
                    f"A device's inference p99 above {plant.gates.inference_p99_budget_ms:g} ms "
                    "for 15 minutes"
                ),
                threshold=plant.gates.inference_p99_budget_ms,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=3,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )
        add(
            "JournalBacklog",
            plant_metric("JournalBacklog", "Maximum").create_alarm(
                self,
                "JournalBacklog",
                alarm_name=f"lineguard-{plant.name}-journal-backlog",
                alarm_description=(
                    f"A device holds more than {mon.journal_backlog_alarm} unsent results"
                ),
                threshold=mon.journal_backlog_alarm,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=2,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )
        reports_per_period = plant.expected_devices * 300 / mon.health_interval_seconds
        silent_threshold = reports_per_period * (1 - mon.silent_device_share)
        add(
            "SilentDevices",
            plant_metric("HealthReports", "SampleCount").create_alarm(
                self,
                "SilentDevices",
                alarm_name=f"lineguard-{plant.name}-silent-devices",
                alarm_description=(
                    f"More than {mon.silent_device_share:.0%} of {plant.expected_devices} devices "
                    "sent no health message (fewer reports than expected in 5 minutes)"
                ),
                threshold=round(silent_threshold, 2),
                comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
                evaluation_periods=2,
                treat_missing_data=cw.TreatMissingData.BREACHING,
            ),
        )
        # One alarm for every line: a multi time series Metrics Insights alarm evaluates each
        # line's series and names the lines in ALARM (CloudWatch Create_Metrics_Insights_Alarm,
        # multi-time-series-alarm). Limits (alarm-limits.html): 200 such alarms per account and
        # Region by default (one per plant here), 500 series per query, 10,000 metrics matched.
        add(
            "LineRejectRate",
            cw.MathExpression(
                # no label: each series keeps its line's name as its label
                expression=line_query(ns, "RejectRate", "AVG"),
                period=period,
            ).create_alarm(
                self,
                "LineRejectRate",
                alarm_name=f"lineguard-{plant.name}-line-reject-rate",
                alarm_description=(
                    f"A line's reject rate above {mon.line_reject_rate_alarm:.0%} for 10 minutes "
                    "(mean over its health reports; the alarm's contributors name the lines)"
                ),
                threshold=mon.line_reject_rate_alarm,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=2,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        )

        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"lineguard-{plant.name}",
            default_interval=cdk.Duration.hours(6),
        )
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(
                title="Alarms", alarms=list(self.alarms.values()), width=24, height=4
            )
        )
        # A dashboard takes at most 500 widgets and 2,500 metrics (CloudWatch quotas,
        # cloudwatch_limits.html): two queries, however many lines.
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title=f"Reject rate, {LINES_SHOWN} worst lines",
                left=[
                    cw.MathExpression(
                        expression=line_query(ns, "RejectRate", "AVG", LINES_SHOWN),
                        label=SERIES_LABEL,
                        period=period,
                    )
                ],
                left_y_axis=cw.YAxisProps(min=0, max=1),
                left_annotations=[
                    cw.HorizontalAnnotation(value=mon.line_reject_rate_alarm, label="alarm")
                ],
                width=12,
            ),
            cw.GraphWidget(
                title=f"Inspections per 5 minutes, {LINES_SHOWN} busiest lines",
                left=[
                    cw.MathExpression(
                        expression=line_query(ns, "Inspections", "SUM", LINES_SHOWN),
                        label=SERIES_LABEL,
                        period=period,
                    )
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Inference p99 (worst device, ms)",
                left=[plant_metric("InferenceP99", "Maximum")],
                left_annotations=[
                    cw.HorizontalAnnotation(
                        value=plant.gates.inference_p99_budget_ms, label="budget"
                    )
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Health reports (silent devices)",
                left=[plant_metric("HealthReports", "SampleCount")],
                left_annotations=[cw.HorizontalAnnotation(value=silent_threshold, label="alarm")],
                width=8,
            ),
            cw.GraphWidget(
                title="Journal backlog (worst device)",
                left=[plant_metric("JournalBacklog", "Maximum")],
                width=8,
            ),
        )
        # Operators' verdicts: ratios of sums per line (and model version) over the dashboard's
        # time range, from the quality events (stacks/constructs/quality_metrics.py)
        quality_logs = [self.quality.log_group.log_group_name]
        self.dashboard.add_widgets(
            cw.LogQueryWidget(
                title="Operator-confirmed quality per line: reject precision, manual parts "
                "found defective, review coverage",
                log_group_names=quality_logs,
                query_string=quality_query((LINE_DIMENSION,)),
                view=cw.LogQueryVisualizationType.TABLE,
                width=24,
                height=6,
            ),
            cw.LogQueryWidget(
                title="Operator-confirmed quality per line and model version",
                log_group_names=quality_logs,
                query_string=quality_query((LINE_DIMENSION, VERSION_FIELD)),
                view=cw.LogQueryVisualizationType.TABLE,
                width=24,
                height=6,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Decisions per 5 minutes",
                left=[
                    plant_metric("Inspections", "Sum"),
                    plant_metric("Rejects", "Sum"),
                    plant_metric("Manual", "Sum"),
                ],
                width=24,
            )
        )

    def _metric_action(
        self, namespace: str, name: str, value: str, unit: str, role: iam.IRole
    ) -> iot.CfnTopicRule.ActionProperty:
        return iot.CfnTopicRule.ActionProperty(
            cloudwatch_metric=iot.CfnTopicRule.CloudwatchMetricActionProperty(
                metric_namespace=namespace,
                metric_name=name,
                metric_value=value,
                metric_unit=unit,
                role_arn=role.role_arn,
            )
        )

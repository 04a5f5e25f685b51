"""Alarm when a ring's Greengrass deployment stops reaching devices that join the ring.

A ring's deployment is a continuous IoT job; once that job is cancelled (a rollout deployment's
abort criteria tripped, or someone cancelled the deployment), devices provisioned into the ring
later get no components at all. A Lambda function checks every ring's latest deployment every
few minutes (``runtime/check.py`` says what it checks and cites the guides) and puts the metric
``DeploymentNotServing`` per ring; an alarm per ring notifies the plant's alarm topic.

Why a scheduled check and not an event rule:

- The Greengrass EventBridge event ``Greengrass V2 Effective Deployment Status Change`` is per
  core device (``resources`` is the core device ARN; Greengrass developer guide,
  deployment-health-notifications). An abort cancels only QUEUED job executions, not IN_PROGRESS
  ones (IoT developer guide, jobs-configurations-details, "Retry and abort configuration"), so
  when every targeted device has already run the job (the demo plant's canary: one device, one
  failure) no device event says the job is cancelled.
- The IoT Jobs event ``$aws/events/job/<jobId>/canceled`` (IoT developer guide, events-jobs) is
  published only once ``JOB`` events are enabled account-wide with UpdateEventConfigurations
  (iot-events, "Enable events for AWS IoT"), and CloudFormation has no resource for that setting
  (no ``AWS::IoT::*`` event-configuration type in the CloudFormation resource schemas cfn-lint
  ships). It also fires for every superseded revision: "After you create a new revision of a
  deployment, the status of the previous revision's AWS IoT job changes to CANCELLED" (guide,
  check-deployment-status) — every rollout step would page someone.

The check looks at what decides whether new devices are served (the latest deployment and its
job), needs no account-wide setting, and leaves the alarm in ALARM until the ring is redeployed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs._nag import acknowledge_wildcard, arn_text
from stacks.constructs._own_log_group import function_reason, own_log_group
from stacks.constructs.deployment_check.runtime.check import DIMENSION, METRIC
from stacks.constructs.monitoring import plant_namespace

RUNTIME_DIR = Path(__file__).parent / "runtime"
CHECK_EVERY = cdk.Duration.minutes(5)


def check_environment(plant: PlantConfig, rings: Sequence[str]) -> dict[str, str]:
    """The check function's environment: the plant's namespace and the rings to check."""
    return {
        "NAMESPACE": plant_namespace(plant.name),
        "RINGS": json.dumps([[r, plant.ring_group_arn(r)] for r in rings], separators=(",", ":")),
    }


class DeploymentCheck(Construct):
    """Scheduled check of every deployed ring, an alarm per ring and one on the check's errors.

    Attributes:
        function: the check function (None when no ring has a deployment).
        rule: the EventBridge schedule that runs it.
        alarms: alarm name suffix (``<ring>-deployment-not-serving``,
            ``deployment-check-errors``) → alarm.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        deployments: Mapping[str, cdk.CfnResource],
        topic: sns.ITopic,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function: lambda_.Function | None = None
        self.rule: events.Rule | None = None
        self.alarms: dict[str, cw.Alarm] = {}
        rings = [r for r in plant.ring_names if r in deployments]
        if not rings:
            return
        stack = cdk.Stack.of(self)
        namespace = plant_namespace(plant.name)

        log_group_name = f"/lineguard/{plant.name}/deployment-check"
        made = own_log_group(
            self,
            log_group_name=log_group_name,
            log_key=log_key,
            role_description=(
                f"Deployment check of plant {plant.name}: read deployments, put a metric"
            ),
            reason=function_reason("the check"),
        )
        log_group, role = made.log_group, made.role
        # Same grant as the promotion role's deployment reads (pipeline_roles.py).
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["greengrass:ListDeployments", "greengrass:GetDeployment"],
                resources=["*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["iot:DescribeJob"],
                resources=[stack.format_arn(service="iot", resource="job", resource_name="*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["iot:DescribeThingGroup"],
                resources=[
                    stack.format_arn(
                        service="iot", resource="thinggroup", resource_name=plant.ring_group_name(r)
                    )
                    for r in rings
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData has no resource-level permission
                conditions={"StringEquals": {"cloudwatch:namespace": namespace}},
            )
        )
        acknowledge_wildcard(
            role,
            arn_text(role, "iot", "job/*"),
            "Greengrass creates each deployment's IoT job with an id it chooses; the check only "
            "describes the job of a ring's latest deployment.",
        )
        acknowledge_wildcard(
            role,
            "*",
            "greengrass:ListDeployments and GetDeployment are read-only and granted on * as for "
            "the promotion role; cloudwatch:PutMetricData supports no resource ARN and is limited "
            f"to the namespace {namespace} by condition.",
        )

        self.function = lambda_.Function(
            self,
            "Function",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="check.handler",
            code=lambda_.Code.from_asset(str(RUNTIME_DIR), exclude=["__pycache__", "*.pyc"]),
            role=role,
            log_group=log_group,
            memory_size=128,
            timeout=cdk.Duration.seconds(60),
            retry_attempts=0,  # the next scheduled run is the retry
            # one scheduled run every few minutes: never more than one at a time
            reserved_concurrent_executions=1,
            environment=check_environment(plant, rings),
            description=f"LineGuard {plant.name}: do the rings' deployments serve new devices",
        )
        self.rule = events.Rule(
            self,
            "Schedule",
            description=f"LineGuard {plant.name}: check the rings' Greengrass deployments",
            schedule=events.Schedule.rate(CHECK_EVERY),
            targets=[targets.LambdaFunction(self.function)],
        )
        # The first run must find the deployments the stack creates, or it would alarm.
        for ring in rings:
            self.rule.node.add_dependency(deployments[ring])

        action = cw_actions.SnsAction(topic)
        for ring in rings:
            alarm = cw.Metric(
                namespace=namespace,
                metric_name=METRIC,
                dimensions_map={DIMENSION: ring},
                statistic="Maximum",
                period=CHECK_EVERY,
            ).create_alarm(
                self,
                f"NotServing-{ring}",
                alarm_name=f"lineguard-{plant.name}-{ring}-deployment-not-serving",
                alarm_description=(
                    f"Ring {ring}'s Greengrass deployment no longer reaches devices that join the "
                    "ring: its IoT job was cancelled (abort criteria tripped) or the deployment "
                    "was cancelled. Redeploy the ring (docs/deploy.md)."
                ),
                threshold=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            self.alarms[f"{ring}-deployment-not-serving"] = alarm
        errors = self.function.metric_errors(period=CHECK_EVERY, statistic="Sum").create_alarm(
            self,
            "CheckErrors",
            alarm_name=f"lineguard-{plant.name}-deployment-check-errors",
            alarm_description=(
                "The ring deployment check failed on two runs in a row; rings may be unchecked "
                f"(logs: {log_group_name})."
            ),
            threshold=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        errors.add_alarm_action(action)
        self.alarms["deployment-check-errors"] = errors

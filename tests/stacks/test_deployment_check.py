"""Ring deployment check: the construct on a bare stack, the function against Stubber and moto.

Greengrass v2 goes through botocore's Stubber (moto has no Greengrass v2; the Stubber validates
requests and responses against the real service model); IoT jobs and CloudWatch through moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iot.models import iot_backends

from stacks.config import INSPECTOR, MODEL, PlantConfig, Release
from stacks.constructs.deployment_check import DeploymentCheck, check_environment
from stacks.constructs.deployment_check.runtime import check
from stacks.constructs.fleet_groups import FleetGroups
from stacks.constructs.log_encryption import PlantLogKey
from stacks.constructs.ring_deployments import RingDeployments

REGION = "eu-west-1"
ENV = cdk.Environment(account="123456789012", region=REGION)
NAMESPACE = "LineGuard/demo"

# ------------------------------------------------------------------ construct


@dataclass
class Built:
    template: Template
    stack: cdk.Stack
    topic: sns.Topic
    deployments: dict[str, cdk.CfnResource]


@pytest.fixture(scope="module")
def built(demo: PlantConfig) -> Built:
    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Test", env=ENV)
    groups = FleetGroups(stack, "Groups", plant=demo)
    # only the canary has a release: the fleet ring gets no deployment, so nothing to check
    release = Release(plant="demo").with_ring("canary", {INSPECTOR: "1.0.0", MODEL: "1.0.0"})
    rings = RingDeployments(
        stack, "Deployments", plant=demo, release=release, ring_groups=groups.ring_groups
    )
    topic = sns.Topic(stack, "Alarms")
    log_key = PlantLogKey(stack, "LogKey", plant_name=demo.name).key
    DeploymentCheck(
        stack, "Check", plant=demo, deployments=rings.deployments, topic=topic, log_key=log_key
    )
    return Built(Template.from_stack(stack), stack, topic, rings.deployments)


def test_one_alarm_per_deployed_ring_notifies_the_alarm_topic(built: Built) -> None:
    built.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "lineguard-demo-canary-deployment-not-serving",
            "Namespace": NAMESPACE,
            "MetricName": check.METRIC,
            "Dimensions": [{"Name": check.DIMENSION, "Value": "canary"}],
            "Statistic": "Maximum",
            "Period": 300,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "AlarmActions": [built.stack.resolve(built.topic.topic_arn)],
        },
    )
    names = [
        a["Properties"]["AlarmName"]
        for a in built.template.find_resources("AWS::CloudWatch::Alarm").values()
    ]
    assert sorted(names) == [
        "lineguard-demo-canary-deployment-not-serving",
        "lineguard-demo-deployment-check-errors",
    ]


def test_check_errors_alarm_on_the_function_errors(built: Built) -> None:
    built.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "lineguard-demo-deployment-check-errors",
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "EvaluationPeriods": 2,
            "DatapointsToAlarm": 2,
            "AlarmActions": [built.stack.resolve(built.topic.topic_arn)],
        },
    )


def test_function_checks_only_the_deployed_rings(built: Built, demo: PlantConfig) -> None:
    (function,) = built.template.find_resources("AWS::Lambda::Function").values()
    env = function["Properties"]["Environment"]["Variables"]
    assert env == check_environment(demo, ["canary"])
    assert json.loads(env["RINGS"]) == [["canary", demo.ring_group_arn("canary")]]
    assert function["Properties"]["Handler"] == "check.handler"


def test_schedule_runs_every_five_minutes_after_the_deployments_exist(built: Built) -> None:
    (rule,) = built.template.find_resources(
        "AWS::Events::Rule", {"Properties": {"ScheduleExpression": "rate(5 minutes)"}}
    ).values()
    deployment_id = built.stack.resolve(built.stack.get_logical_id(built.deployments["canary"]))
    assert deployment_id in rule["DependsOn"]
    assert len(rule["Properties"]["Targets"]) == 1


def test_role_reads_deployments_and_puts_only_the_plant_metric(built: Built) -> None:
    (policy,) = built.template.find_resources("AWS::IAM::Policy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    by_action = {a: s for s in statements for a in _as_list(s["Action"])}
    assert {"greengrass:ListDeployments", "greengrass:GetDeployment", "iot:DescribeJob"} <= set(
        by_action
    )
    assert by_action["cloudwatch:PutMetricData"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": NAMESPACE}
    }
    assert not any(a.endswith(":*") or a == "*" for a in by_action)
    built.template.has_resource_properties("AWS::IAM::Role", {"ManagedPolicyArns": Match.absent()})


def test_no_deployment_means_no_check(demo: PlantConfig) -> None:
    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Empty", env=ENV)
    construct = DeploymentCheck(
        stack,
        "Check",
        plant=demo,
        deployments={},
        topic=sns.Topic(stack, "Alarms"),
        log_key=PlantLogKey(stack, "LogKey", plant_name=demo.name).key,
    )
    assert construct.function is None and construct.alarms == {}
    Template.from_stack(stack).resource_count_is("AWS::Lambda::Function", 0)


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------ the function


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


@pytest.fixture
def greengrass() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "greengrassv2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def ring_job(iot: Any, plant: PlantConfig, ring: str) -> str:
    """A continuous IoT job on the ring's group, as Greengrass creates for a deployment."""
    group = iot.create_thing_group(thingGroupName=plant.ring_group_name(ring))
    job_id = f"job-{ring}"
    iot.create_job(
        jobId=job_id,
        targets=[group["thingGroupArn"]],
        document="{}",
        targetSelection="CONTINUOUS",
    )
    # moto 5.2.5 reports a new job as QUEUED, which is no JobStatus of the IoT service model;
    # "When you create a job ... the job status changes to IN_PROGRESS" (IoT developer guide,
    # iot-jobs-lifecycle), and a continuous job "is always in progress" until cancelled.
    iot_backends[DEFAULT_ACCOUNT_ID][REGION].jobs[job_id].status = "IN_PROGRESS"
    return job_id


def stub_ring(
    stubber: Stubber,
    plant: PlantConfig,
    ring: str,
    *,
    status: str = "ACTIVE",
    job_id: str | None = None,
) -> None:
    """ListDeployments (latest only) → the ring's deployment; GetDeployment → its status and job."""
    arn = plant.ring_group_arn(ring)
    deployment_id = f"d-{ring}"
    stubber.add_response(
        "list_deployments",
        {
            "deployments": [
                {
                    "targetArn": arn,
                    "revisionId": "3",
                    "deploymentId": deployment_id,
                    "deploymentName": f"lineguard-{plant.name}-{ring}",
                    "creationTimestamp": datetime(2026, 11, 1, tzinfo=UTC),
                    "deploymentStatus": status,
                    "isLatestForTarget": True,
                }
            ]
        },
        {"targetArn": arn, "historyFilter": "LATEST_ONLY"},
    )
    response: dict[str, Any] = {
        "targetArn": arn,
        "deploymentId": deployment_id,
        "deploymentStatus": status,
    }
    if job_id:
        response["iotJobId"] = job_id
    stubber.add_response("get_deployment", response, {"deploymentId": deployment_id})


def data_points(cloudwatch: Any, ring: str) -> list[float]:
    now = datetime.now(UTC)
    stats = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=check.METRIC,
        Dimensions=[{"Name": check.DIMENSION, "Value": ring}],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )
    return [p["Maximum"] for p in stats["Datapoints"]]


def rings(plant: PlantConfig, *names: str) -> list[tuple[str, str]]:
    return [(n, plant.ring_group_arn(n)) for n in names]


def test_active_deployment_with_running_job_serves(
    aws: None, greengrass: tuple[Any, Stubber], demo: PlantConfig
) -> None:
    client, stubber = greengrass
    iot, cloudwatch = boto3.client("iot"), boto3.client("cloudwatch")
    stub_ring(stubber, demo, "canary", job_id=ring_job(iot, demo, "canary"))
    (state,) = check.check_rings(
        rings(demo, "canary"),
        greengrass=client,
        iot=iot,
        cloudwatch=cloudwatch,
        namespace=NAMESPACE,
    )
    assert state.serving
    assert data_points(cloudwatch, "canary") == [0.0]


def test_job_cancelled_by_abort_criteria_does_not_serve(
    aws: None, greengrass: tuple[Any, Stubber], demo: PlantConfig
) -> None:
    # an abort cancels the IoT job; the Greengrass deployment itself can still say ACTIVE
    client, stubber = greengrass
    iot, cloudwatch = boto3.client("iot"), boto3.client("cloudwatch")
    job_id = ring_job(iot, demo, "canary")
    iot.cancel_job(jobId=job_id, reasonCode="abort", comment="abort criteria met")
    stub_ring(stubber, demo, "canary", job_id=job_id)
    (state,) = check.check_rings(
        rings(demo, "canary"),
        greengrass=client,
        iot=iot,
        cloudwatch=cloudwatch,
        namespace=NAMESPACE,
    )
    assert not state.serving
    assert f"IoT job {job_id} is CANCELED" in state.detail
    assert data_points(cloudwatch, "canary") == [1.0]


def test_cancelled_deployment_does_not_serve(
    aws: None, greengrass: tuple[Any, Stubber], demo: PlantConfig
) -> None:
    client, stubber = greengrass
    iot, cloudwatch = boto3.client("iot"), boto3.client("cloudwatch")
    stub_ring(stubber, demo, "fleet", status="CANCELED", job_id="job-fleet")
    (state,) = check.check_rings(
        rings(demo, "fleet"),
        greengrass=client,
        iot=iot,
        cloudwatch=cloudwatch,
        namespace=NAMESPACE,
    )
    assert not state.serving and "is CANCELED" in state.detail
    assert data_points(cloudwatch, "fleet") == [1.0]


def test_ring_without_any_deployment_does_not_serve(
    aws: None, greengrass: tuple[Any, Stubber], demo: PlantConfig
) -> None:
    client, stubber = greengrass
    arn = demo.ring_group_arn("canary")
    stubber.add_response(
        "list_deployments", {"deployments": []}, {"targetArn": arn, "historyFilter": "LATEST_ONLY"}
    )
    (state,) = check.check_rings(
        rings(demo, "canary"),
        greengrass=client,
        iot=boto3.client("iot"),
        cloudwatch=boto3.client("cloudwatch"),
        namespace=NAMESPACE,
    )
    assert not state.serving and "no deployment" in state.detail


def test_deployment_whose_job_is_not_created_yet_serves(
    aws: None, greengrass: tuple[Any, Stubber], demo: PlantConfig
) -> None:
    client, stubber = greengrass
    stub_ring(stubber, demo, "canary", job_id=None)
    (state,) = check.check_rings(
        rings(demo, "canary"),
        greengrass=client,
        iot=boto3.client("iot"),
        cloudwatch=boto3.client("cloudwatch"),
        namespace=NAMESPACE,
    )
    assert state.serving


def test_one_failing_ring_still_reports_the_others_then_raises(
    aws: None, greengrass: tuple[Any, Stubber], demo: PlantConfig
) -> None:
    client, stubber = greengrass
    iot, cloudwatch = boto3.client("iot"), boto3.client("cloudwatch")
    stubber.add_client_error(
        "list_deployments",
        service_error_code="ThrottlingException",
        service_message="Rate exceeded",
        http_status_code=429,
        expected_params={
            "targetArn": demo.ring_group_arn("canary"),
            "historyFilter": "LATEST_ONLY",
        },
    )
    stub_ring(stubber, demo, "fleet", job_id=ring_job(iot, demo, "fleet"))
    with pytest.raises(check.CheckFailed, match="ring 'canary'.*ThrottlingException"):
        check.check_rings(
            rings(demo, "canary", "fleet"),
            greengrass=client,
            iot=iot,
            cloudwatch=cloudwatch,
            namespace=NAMESPACE,
        )
    assert data_points(cloudwatch, "fleet") == [0.0]
    assert data_points(cloudwatch, "canary") == []  # no data point: the errors alarm says it


def test_handler_reads_the_environment_the_construct_sets(
    aws: None,
    greengrass: tuple[Any, Stubber],
    demo: PlantConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, stubber = greengrass
    iot, cloudwatch = boto3.client("iot"), boto3.client("cloudwatch")
    for key, value in check_environment(demo, ["canary", "fleet"]).items():
        monkeypatch.setenv(key, value)
    stub_ring(stubber, demo, "canary", job_id=ring_job(iot, demo, "canary"))
    stub_ring(stubber, demo, "fleet", status="CANCELED", job_id="job-fleet")
    made = {"greengrassv2": client, "iot": iot, "cloudwatch": cloudwatch}
    monkeypatch.setattr(boto3, "client", lambda service, **_kw: made[service])
    assert check.handler({}, None) == {"serving": {"canary": True, "fleet": False}}
    assert data_points(cloudwatch, "fleet") == [1.0]

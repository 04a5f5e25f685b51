"""Each construct on a bare stack: one intent per test, templates built once per module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match, Template

from stacks.config import INSPECTOR, MODEL, PlantConfig, Release, load_plant
from stacks.constructs.artifact_store import ArtifactStore
from stacks.constructs.core_device_access import CoreDeviceAccess
from stacks.constructs.fleet_groups import FleetGroups
from stacks.constructs.model_registry import ModelRegistry
from stacks.constructs.monitoring import PlantMonitoring
from stacks.constructs.pipeline_roles import PipelineRoles
from stacks.constructs.provisioning import FleetProvisioning
from stacks.constructs.results_pipeline import ResultsPipeline
from stacks.constructs.ring_deployments import RingDeployments
from stacks.constructs.rule_errors import RuleErrorLog

from .conftest import PLANTS

ENV = cdk.Environment(account="123456789012", region="eu-west-1")


def bare_stack() -> cdk.Stack:
    app = cdk.App(builtin_cloud_formation_validation=False)
    return cdk.Stack(app, "Test", env=ENV)


def resources(template: Template, type_: str) -> list[Any]:
    return list(template.find_resources(type_).values())


@dataclass
class Built:
    template: Template
    stack: cdk.Stack


@pytest.fixture(scope="module")
def shared() -> Built:
    stack = bare_stack()
    store = ArtifactStore(
        stack,
        "Store",
        bucket_name="lineguard-artifacts-x",
        access_log_bucket_name="lineguard-logs-x",
    )
    ModelRegistry(stack, "Models", group_name="lineguard-inspection")
    PipelineRoles(
        stack,
        "Roles",
        bucket=store.bucket,
        key=store.key,
        model_package_group_name="lineguard-inspection",
    )
    return Built(Template.from_stack(stack), stack)


@pytest.fixture(scope="module")
def large_plant() -> PlantConfig:
    return load_plant(PLANTS / "example-large.yaml")


@pytest.fixture(scope="module")
def plant_parts(large_plant: PlantConfig) -> Iterator[Built]:
    stack = bare_stack()
    bucket = s3.Bucket.from_bucket_name(stack, "Artifacts", "lineguard-artifacts-x")
    key = kms.Key.from_key_arn(
        stack, "Key", "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    )
    groups = FleetGroups(stack, "Groups", plant=large_plant)
    access = CoreDeviceAccess(
        stack, "Devices", plant=large_plant, artifact_bucket=bucket, artifact_key=key
    )
    FleetProvisioning(stack, "Provisioning", plant=large_plant, core_policy=access.policy)
    release = Release(plant=large_plant.name)
    for ring in ("canary", "early"):  # "broad" has no release
        release = release.with_ring(ring, {INSPECTOR: "1.0.0", MODEL: "1.0.0"})
    RingDeployments(
        stack, "Deployments", plant=large_plant, release=release, ring_groups=groups.ring_groups
    )
    errors = RuleErrorLog(stack, "Errors", plant_name=large_plant.name)
    logs_bucket = s3.Bucket.from_bucket_name(stack, "Logs", "lineguard-logs-x")
    ResultsPipeline(
        stack,
        "Results",
        plant=large_plant,
        access_log_bucket=logs_bucket,
        error_action=errors.error_action,
    )
    PlantMonitoring(stack, "Monitoring", plant=large_plant, error_action=errors.error_action)
    yield Built(Template.from_stack(stack), stack)


# ------------------------------------------------------------------ shared


def test_artifact_bucket_is_versioned_kms_encrypted_and_private(shared: Built) -> None:
    shared.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "lineguard-artifacts-x",
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {
                            "ServerSideEncryptionByDefault": Match.object_like(
                                {"SSEAlgorithm": "aws:kms"}
                            )
                        }
                    )
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": Match.object_like(
                {"LogFilePrefix": "s3-access-logs/artifacts/"}
            ),
        },
    )


def test_artifact_bucket_expires_noncurrent_versions(shared: Built) -> None:
    shared.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "lineguard-artifacts-x",
            "LifecycleConfiguration": {
                "Rules": [
                    Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": 90}})
                ]
            },
        },
    )


def test_buckets_deny_plain_http(shared: Built) -> None:
    policies = resources(shared.template, "AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies:
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )


def test_artifact_key_rotates(shared: Built) -> None:
    shared.template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_model_package_group(shared: Built) -> None:
    shared.template.has_resource_properties(
        "AWS::SageMaker::ModelPackageGroup", {"ModelPackageGroupName": "lineguard-inspection"}
    )


def test_training_and_promotion_roles_trust_their_services(shared: Built) -> None:
    principals = {
        r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]
        for r in resources(shared.template, "AWS::IAM::Role")
    }
    assert principals == {"sagemaker.amazonaws.com", "codebuild.amazonaws.com"}


def test_training_role_writes_only_pipeline_and_model_prefixes(shared: Built) -> None:
    text = json.dumps(resources(shared.template, "AWS::IAM::Policy"))
    assert "/models/*" in text and "/datasets/*" in text
    for policy in resources(shared.template, "AWS::IAM::Policy"):
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            assert not any(a.endswith(":*") or a == "*" for a in actions)


# ------------------------------------------------------------------ plant: groups and deployments


def test_line_and_ring_groups_hang_under_the_plant_group(plant_parts: Built) -> None:
    groups = resources(plant_parts.template, "AWS::IoT::ThingGroup")
    names = {
        g["Properties"]["ThingGroupName"]: g["Properties"].get("ParentGroupName") for g in groups
    }
    assert names["lineguard-example-large"] is None
    assert names["lineguard-example-large-line-line-01"] == "lineguard-example-large"
    assert names["lineguard-example-large-ring-canary"] == "lineguard-example-large"
    assert len(names) == 1 + 40 + 3


def test_one_deployment_per_ring_with_a_release(plant_parts: Built) -> None:
    deployments = resources(plant_parts.template, "AWS::GreengrassV2::Deployment")
    targets = sorted(d["Properties"]["TargetArn"].rsplit("/", 1)[1] for d in deployments)
    assert targets == ["lineguard-example-large-ring-canary", "lineguard-example-large-ring-early"]


def test_standing_deployment_has_rollback_rollout_and_no_abort(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::GreengrassV2::Deployment",
        {
            "DeploymentName": "lineguard-example-large-canary",
            "Components": {
                INSPECTOR: {"ComponentVersion": "1.0.0"},
                MODEL: {"ComponentVersion": "1.0.0"},
            },
            "DeploymentPolicies": Match.object_like({"FailureHandlingPolicy": "ROLLBACK"}),
            "IotJobConfiguration": {
                "JobExecutionsRolloutConfig": Match.object_like(
                    {"ExponentialRate": Match.object_like({"BaseRatePerMinute": 20})}
                ),
                "AbortConfig": Match.absent(),
                "TimeoutConfig": {"InProgressTimeoutInMinutes": 120},
            },
        },
    )


def test_ring_without_release_gets_a_warning(plant_parts: Built) -> None:
    Annotations.from_stack(plant_parts.stack).has_warning(
        "/Test/Deployments", Match.string_like_regexp("ring 'broad' has no release")
    )


# ------------------------------------------------------------------ plant: device access


def iot_statements(template: Template) -> dict[str, list[dict[str, Any]]]:
    return {
        p["Properties"]["PolicyName"]: p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources(template, "AWS::IoT::Policy")
    }


def test_core_device_connects_only_as_its_thing_name(plant_parts: Built) -> None:
    statements = iot_statements(plant_parts.template)["lineguard-example-large-core-device"]
    connect = [s for s in statements if s["Action"] == ["iot:Connect"]]
    assert connect[0]["Resource"] == [
        "arn:aws:iot:eu-west-1:123456789012:client/${iot:Connection.Thing.ThingName}"
    ]


def test_core_device_publishes_only_its_own_topics(plant_parts: Built) -> None:
    statements = iot_statements(plant_parts.template)["lineguard-example-large-core-device"]
    for statement in statements:
        if set(statement["Action"]) & {"iot:Publish", "iot:Subscribe", "iot:Receive"}:
            for resource in statement["Resource"]:
                assert "${iot:Connection.Thing.ThingName}" in resource, resource


def test_no_iot_policy_allows_everything(plant_parts: Built) -> None:
    for statements in iot_statements(plant_parts.template).values():
        for s in statements:
            assert "iot:*" not in s["Action"] and "*" not in s["Action"]
            if set(s["Action"]) & {"iot:Publish", "iot:Subscribe", "iot:Receive"}:
                assert "*" not in s["Resource"]


def test_claim_certificate_reaches_only_the_provisioning_topics(plant_parts: Built) -> None:
    statements = iot_statements(plant_parts.template)["lineguard-example-large-provisioning-claim"]
    topics = [r for s in statements if s["Action"] != ["iot:Connect"] for r in s["Resource"]]
    assert topics and all(
        "$aws/certificates/create/" in r
        or "$aws/provisioning-templates/lineguard-example-large-core-devices/provision/" in r
        for r in topics
    )


def test_token_exchange_role_reads_components_and_writes_own_samples(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": Match.object_like(
                {
                    "Statement": [
                        Match.object_like(
                            {"Principal": {"Service": "credentials.iot.amazonaws.com"}}
                        )
                    ]
                }
            )
        },
    )
    text = json.dumps(resources(plant_parts.template, "AWS::IAM::Policy"))
    assert "lineguard-artifacts-x/components/com.lineguard.*" in text
    assert "lineguard-artifacts-x/samples/example-large/${credentials-iot:ThingName}/*" in text


def test_role_alias_points_at_the_token_exchange_role(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::IoT::RoleAlias",
        {"RoleAlias": "lineguard-example-large-token-exchange", "RoleArn": Match.any_value()},
    )


# ------------------------------------------------------------------ plant: provisioning


def test_provisioning_template_uses_the_hook(plant_parts: Built) -> None:
    template = resources(plant_parts.template, "AWS::IoT::ProvisioningTemplate")[0]["Properties"]
    assert template["TemplateType"] == "FLEET_PROVISIONING"
    assert template["PreProvisioningHook"]["PayloadVersion"] == "2020-04-01"
    body = json.loads(template["TemplateBody"])
    assert set(body["Parameters"]) >= {"SerialNumber", "LineName", "RingName"}
    thing = body["Resources"]["thing"]["Properties"]
    assert thing["ThingName"]["Fn::Join"][1][0] == "lineguard-example-large-"
    assert len(thing["ThingGroups"]) == 2
    assert body["Resources"]["policy"]["Properties"]["PolicyName"] == (
        "lineguard-example-large-core-device"
    )


def test_hook_gets_rings_and_lines_from_the_plant(plant_parts: Built) -> None:
    fn = resources(plant_parts.template, "AWS::Lambda::Function")[0]["Properties"]
    env = fn["Environment"]["Variables"]
    assert json.loads(env["RINGS"]) == [["canary", 1.0], ["early", 10.0], ["broad", 89.0]]
    assert len(env["LINES"].split(",")) == 40
    assert fn["Handler"] == "hook.handler"


def test_only_iot_may_invoke_the_hook(plant_parts: Built) -> None:
    permission = resources(plant_parts.template, "AWS::Lambda::Permission")[0]["Properties"]
    assert permission["Principal"] == "iot.amazonaws.com"
    source = json.dumps(permission["SourceArn"])
    assert ":provisioningtemplate/lineguard-example-large-core-devices" in source


# ------------------------------------------------------------------ plant: results and monitoring


def test_every_topic_rule_has_an_error_action(plant_parts: Built) -> None:
    rules = resources(plant_parts.template, "AWS::IoT::TopicRule")
    assert len(rules) >= 2  # results + health (+ rules other areas add)
    for rule in rules:
        assert "CloudwatchLogs" in rule["Properties"]["TopicRulePayload"]["ErrorAction"]


def test_results_rule_splits_batches_into_firehose_records(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::IoT::TopicRule",
        {
            "TopicRulePayload": Match.object_like(
                {
                    "Sql": "SELECT VALUE results FROM 'lineguard/example-large/+/+/+/results' WHERE v = 1",
                    "Actions": [{"Firehose": Match.object_like({"BatchMode": True})}],
                }
            )
        },
    )


def test_results_land_partitioned_by_plant_line_and_date(plant_parts: Built) -> None:
    stream = resources(plant_parts.template, "AWS::KinesisFirehose::DeliveryStream")[0]
    s3_conf = stream["Properties"]["ExtendedS3DestinationConfiguration"]
    assert s3_conf["Prefix"] == (
        "results/plant=example-large/line=!{partitionKeyFromQuery:line}/"
        "dt=!{partitionKeyFromQuery:dt}/"
    )
    assert s3_conf["DynamicPartitioningConfiguration"]["Enabled"] is True


def test_glue_table_projects_line_and_date_partitions(plant_parts: Built) -> None:
    table = resources(plant_parts.template, "AWS::Glue::Table")[0]["Properties"]["TableInput"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["line", "dt"]
    assert table["Parameters"]["projection.enabled"] == "true"
    columns = {c["Name"] for c in table["StorageDescriptor"]["Columns"]}
    assert {"part_id", "decision", "score", "seq", "model"} <= columns


def test_health_rule_puts_plant_and_line_metrics(plant_parts: Built) -> None:
    sql = "SELECT * FROM 'lineguard/example-large/+/+/+/health' WHERE v = 1"
    (rule,) = [
        r
        for r in resources(plant_parts.template, "AWS::IoT::TopicRule")
        if r["Properties"]["TopicRulePayload"]["Sql"] == sql
    ]
    actions = rule["Properties"]["TopicRulePayload"]["Actions"]
    namespaces = {a["CloudwatchMetric"]["MetricNamespace"] for a in actions}
    assert namespaces == {"LineGuard/example-large", "LineGuard/example-large/${topic(3)}"}
    assert len(actions) <= 10  # IoT Core's limit of actions per rule


def test_alarm_per_line_plus_plant_alarms_all_notify_sns(plant_parts: Built) -> None:
    alarms = resources(plant_parts.template, "AWS::CloudWatch::Alarm")
    names = {a["Properties"]["AlarmName"] for a in alarms}
    assert "lineguard-example-large-line-07-reject-rate" in names
    assert {
        "lineguard-example-large-reject-burst",
        "lineguard-example-large-inference-p99",
        "lineguard-example-large-silent-devices",
        "lineguard-example-large-journal-backlog",
    } <= names
    assert len(alarms) == 40 + 4
    assert all(len(a["Properties"]["AlarmActions"]) == 1 for a in alarms)


def test_reject_burst_threshold_comes_from_the_plant_file(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"AlarmName": "lineguard-example-large-reject-burst", "Threshold": 200, "Period": 60},
    )


def test_alarm_topic_is_encrypted_and_dashboard_exists(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()}
    )
    plant_parts.template.has_resource_properties(
        "AWS::CloudWatch::Dashboard", {"DashboardName": "lineguard-example-large"}
    )

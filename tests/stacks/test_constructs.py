"""Each construct on a bare stack: one intent per test, templates built once per module."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match, Template

from stacks.authorization import render_provisioning_value
from stacks.config import INSPECTOR, MODEL, PlantConfig, Release, line_stack, load_plant
from stacks.constructs._own_log_group import RULE_LOG_ACTIONS
from stacks.constructs.artifact_store import ArtifactStore
from stacks.constructs.core_device_access import CoreDeviceAccess
from stacks.constructs.emf import Expr, MetricDirective, emf_document
from stacks.constructs.fleet_groups import FleetGroups
from stacks.constructs.identity import DeviceIdentity
from stacks.constructs.line_health import LINE_METRICS, line_health_document, line_health_sql
from stacks.constructs.log_encryption import PlantLogKey
from stacks.constructs.model_registry import ModelRegistry
from stacks.constructs.monitoring import PlantMonitoring
from stacks.constructs.pipeline_roles import PipelineRoles
from stacks.constructs.provisioning import HOOK_CONCURRENCY, FleetProvisioning
from stacks.constructs.results_pipeline import NONCURRENT_DAYS, ResultsPipeline
from stacks.constructs.ring_deployments import RingDeployments
from stacks.constructs.rollout_health import (
    decision_document,
    decision_sql,
    shadow_document,
    shadow_sql,
)
from stacks.constructs.rule_errors import RuleErrorLog

from .conftest import PLANTS

IOT_MESSAGING = {"iot:Publish", "iot:Subscribe", "iot:Receive"}
ENV = cdk.Environment(account="123456789012", region="eu-west-1")


def bare_stack() -> cdk.Stack:
    # asset metadata (as the CDK CLI sets it) tells where a function's code was staged
    app = cdk.App(
        builtin_cloud_formation_validation=False,
        context={"aws:cdk:enable-asset-metadata": True},
    )
    return cdk.Stack(app, "Test", env=ENV)


def resources(template: Template, type_: str) -> list[Any]:
    return list(template.find_resources(type_).values())


@dataclass
class Built:
    template: Template
    stack: cdk.Stack
    nested: dict[int, Template] = field(default_factory=dict)  # line stacks by index


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
    log_key = PlantLogKey(stack, "LogKey", plant_name=large_plant.name).key
    access = CoreDeviceAccess(
        stack, "Devices", plant=large_plant, artifact_bucket=bucket, artifact_key=key
    )
    FleetProvisioning(
        stack, "Provisioning", plant=large_plant, core_policy=access.policy, log_key=log_key
    )
    release = Release(plant=large_plant.name)
    for ring in ("canary", "early"):  # "broad" has no release
        release = release.with_ring(ring, {INSPECTOR: "1.0.0", MODEL: "1.0.0"})
    RingDeployments(
        stack, "Deployments", plant=large_plant, release=release, ring_groups=groups.ring_groups
    )
    errors = RuleErrorLog(stack, "Errors", plant_name=large_plant.name, log_key=log_key)
    logs_bucket = s3.Bucket.from_bucket_name(stack, "Logs", "lineguard-logs-x")
    ResultsPipeline(
        stack,
        "Results",
        plant=large_plant,
        access_log_bucket=logs_bucket,
        error_action=errors.error_action,
        log_key=log_key,
    )
    PlantMonitoring(
        stack, "Monitoring", plant=large_plant, error_action=errors.error_action, log_key=log_key
    )
    DeviceIdentity(
        stack, "Identity", plant=large_plant, error_action=errors.error_action, log_key=log_key
    )
    nested = {i: Template.from_stack(s) for i, s in groups.line_stacks.items()}
    yield Built(Template.from_stack(stack), stack, nested)


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


def test_access_log_bucket_is_versioned_and_expires_noncurrent_versions(shared: Built) -> None:
    shared.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "lineguard-logs-x",
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {
                "Rules": [
                    Match.object_like(
                        {
                            "ExpirationInDays": 365,
                            "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
                        }
                    ),
                    Match.object_like({"ExpiredObjectDeleteMarker": True}),
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


def promotion_statements(shared: Built) -> list[dict[str, Any]]:
    (policy,) = [
        p
        for p in resources(shared.template, "AWS::IAM::Policy")
        if "greengrass:CreateDeployment" in json.dumps(p)
    ]
    statements: list[dict[str, Any]] = policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_promotion_cancels_and_reads_only_deployments_and_lineguard_core_devices(
    shared: Built,
) -> None:
    scoped = {
        "greengrass:CancelDeployment": ":deployments:*",
        "greengrass:GetDeployment": ":deployments:*",
        "greengrass:GetCoreDevice": ":coreDevices:lineguard-*",
        "greengrass:ListInstalledComponents": ":coreDevices:lineguard-*",
        "greengrass:ListEffectiveDeployments": ":coreDevices:lineguard-*",
    }
    found = set()
    for statement in promotion_statements(shared):
        actions = statement["Action"] if isinstance(statement["Action"], list) else []
        for action in set(actions) & set(scoped):
            assert statement["Resource"] != "*", action
            assert json.dumps(statement["Resource"]).endswith(f'{scoped[action]}"]]}}'), action
            found.add(action)
    assert found == set(scoped)


def test_promotion_may_list_and_read_the_rollout_metrics(shared: Built) -> None:
    (statement,) = [
        st
        for st in promotion_statements(shared)
        if isinstance(st["Action"], list) and "cloudwatch:GetMetricData" in st["Action"]
    ]
    # ListMetrics finds the strata (rollout/aws.py decision_counts); neither takes a resource
    assert "cloudwatch:ListMetrics" in statement["Action"] and statement["Resource"] == "*"


# ------------------------------------------------------------------ plant: groups and deployments


def parents(template: Template) -> dict[str, str | None]:
    groups = resources(template, "AWS::IoT::ThingGroup")
    return {
        g["Properties"]["ThingGroupName"]: g["Properties"].get("ParentGroupName") for g in groups
    }


def test_ring_groups_hang_under_the_plant_group(plant_parts: Built) -> None:
    names = parents(plant_parts.template)
    assert names == {
        "lineguard-example-large": None,
        "lineguard-example-large-ring-canary": "lineguard-example-large",
        "lineguard-example-large-ring-early": "lineguard-example-large",
        "lineguard-example-large-ring-broad": "lineguard-example-large",
    }


def test_line_groups_are_top_level_in_the_nested_stack_their_name_picks(
    plant_parts: Built, large_plant: PlantConfig
) -> None:
    seen: dict[str, None | str] = {}
    for index, template in plant_parts.nested.items():
        names = parents(template)
        for name in names:
            line = name.removeprefix("lineguard-example-large-line-")
            assert line_stack(line) == index, name
        seen.update(names)
    assert seen == {large_plant.line_group_name(line.name): None for line in large_plant.lines}


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


def template_body(template: Template) -> dict[str, Any]:
    properties = resources(template, "AWS::IoT::ProvisioningTemplate")[0]["Properties"]
    return json.loads(properties["TemplateBody"])


def device_policy(template: Template, serial: str) -> dict[str, Any]:
    """The IoT policy fleet provisioning creates for the device with this serial."""
    value = template_body(template)["Resources"]["devicePolicy"]["Properties"]["PolicyDocument"]
    return json.loads(render_provisioning_value(value, {"SerialNumber": serial}))


def test_core_device_connects_only_as_its_thing_name(plant_parts: Built) -> None:
    statements = device_policy(plant_parts.template, "LG01-00000001")["Statement"]
    connect = [s for s in statements if s["Action"] == ["iot:Connect"]]
    arn = "arn:aws:iot:*:*:client/lineguard-example-large-LG01-00000001"
    assert connect[0]["Resource"] == [arn, arn + "#*"]


def test_core_device_publishes_only_its_own_topics(plant_parts: Built) -> None:
    statements = device_policy(plant_parts.template, "LG01-00000001")["Statement"]
    messaging = [s for s in statements if set(s["Action"]) & IOT_MESSAGING]
    assert messaging
    for statement in messaging:
        for resource in statement["Resource"]:
            assert "/lineguard-example-large-LG01-00000001/" in resource, resource


def test_plant_wide_core_policy_names_no_device_and_no_topic(plant_parts: Built) -> None:
    statements = iot_statements(plant_parts.template)["lineguard-example-large-core-device"]
    actions = {a for s in statements for a in s["Action"]}
    assert actions & (IOT_MESSAGING | {"iot:Connect"}) == set()
    assert "iot:AssumeRoleWithCertificate" in actions


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
        or "$aws/certificates/create-from-csr/" in r
        or "$aws/provisioning-templates/lineguard-example-large-core-devices/provision/" in r
        for r in topics
    )
    # and it may never connect as a device (the only Deny)
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Action"] == ["iot:Connect"]
    assert deny["Resource"] == ["arn:aws:iot:eu-west-1:123456789012:client/lineguard-*"]


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


def test_token_exchange_role_may_locate_the_artifact_bucket(plant_parts: Built) -> None:
    """The nucleus calls GetBucketLocation before it downloads an artifact (S3Downloader)."""
    found = [
        s
        for policy in resources(plant_parts.template, "AWS::IAM::Policy")
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Sid") == "LocateArtifactBucket"
    ]
    assert len(found) == 1
    assert found[0]["Action"] == "s3:GetBucketLocation"
    assert "lineguard-artifacts-x" in json.dumps(found[0]["Resource"])
    assert "/" not in json.dumps(found[0]["Resource"]).split("lineguard-artifacts-x")[1]


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
    # the device's own policy has no name: fleet provisioning names it by a hash of its document
    assert set(body["Resources"]["devicePolicy"]["Properties"]) == {"PolicyDocument"}
    assert body["Resources"]["thing"]["Properties"]["AttributePayload"]["station"] == {
        "Ref": "StationName"
    }


def hook_asset(built: Built) -> Path:
    (fn,) = [
        f
        for f in resources(built.template, "AWS::Lambda::Function")
        if f["Properties"]["Handler"] == "hook.handler"
    ]
    outdir = Path(built.stack.node.root.outdir)  # type: ignore[attr-defined]
    return outdir / fn["Metadata"]["aws:asset:path"]


def test_hook_gets_rings_lines_and_stations_from_its_code(
    plant_parts: Built, large_plant: PlantConfig
) -> None:
    (fn,) = [
        f["Properties"]
        for f in resources(plant_parts.template, "AWS::Lambda::Function")
        if f["Properties"]["Handler"] == "hook.handler"
    ]
    # the plant's topology ships in the code asset: Lambda environments hold 4 KB at most
    assert "Environment" not in fn
    asset = hook_asset(plant_parts)
    assert sorted(p.name for p in asset.iterdir()) == ["hook.py", "plant.json"]
    settings = json.loads((asset / "plant.json").read_text())
    assert settings["rings"] == [["canary", 1.0], ["early", 10.0], ["broad", 89.0]]
    assert list(settings["lines"]) == [line.name for line in large_plant.lines]
    assert settings["lines"]["line-01"]["weld-check"] == 3


def test_staged_hook_reads_the_plant_bundled_beside_it(
    plant_parts: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location(
        "staged_hook", hook_asset(plant_parts) / "hook.py"
    )
    assert spec is not None and spec.loader is not None
    staged = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "staged_hook", staged)  # dataclasses look it up
    spec.loader.exec_module(staged)
    parameters = {"SerialNumber": "LG07-00C0FFEE", "LineName": "line-40", "StationName": "paint"}
    request = {"parameters": parameters}
    assert staged.handler(request, None)["allowProvisioning"] is True
    parameters["LineName"] = "line-41"
    assert staged.handler(request, None) == {"allowProvisioning": False}


def test_only_iot_may_invoke_the_hook(plant_parts: Built) -> None:
    permission = resources(plant_parts.template, "AWS::Lambda::Permission")[0]["Properties"]
    assert permission["Principal"] == "iot.amazonaws.com"
    # the page asks for source-arn or source-account and does not name the ARN IoT sends
    assert permission["SourceAccount"] == "123456789012"
    assert "SourceArn" not in permission


def test_hook_has_reserved_concurrency(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Handler": "hook.handler", "ReservedConcurrentExecutions": HOOK_CONCURRENCY},
    )


# ------------------------------------------------------------------ plant: log encryption


def log_key_id(template: Template) -> str:
    (key_id,) = template.find_resources(
        "AWS::KMS::Key", {"Properties": {"Description": Match.string_like_regexp("log groups")}}
    )
    return key_id


def test_every_log_group_is_encrypted_with_the_plant_log_key(plant_parts: Built) -> None:
    key_id = log_key_id(plant_parts.template)
    groups = resources(plant_parts.template, "AWS::Logs::LogGroup")
    # provisioning hook, results delivery, IoT rule errors, identity sync, line health,
    # rollout health, quality
    assert len(groups) == 7
    for group in groups:
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_log_key_serves_only_cloudwatch_logs_of_this_plant(plant_parts: Built) -> None:
    key = plant_parts.template.find_resources("AWS::KMS::Key")[log_key_id(plant_parts.template)]
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    (logs_statement,) = [s for s in statements if "Service" in s["Principal"]]
    assert logs_statement["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    condition = logs_statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert json.dumps(condition).endswith(
        ':logs:eu-west-1:123456789012:log-group:/lineguard/example-large/*"]]}'
    )


def test_log_key_rotates(plant_parts: Built) -> None:
    key = plant_parts.template.find_resources("AWS::KMS::Key")[log_key_id(plant_parts.template)]
    assert key["Properties"]["EnableKeyRotation"] is True


# ------------------------------------------------------------------ plant: results and monitoring


def test_results_bucket_is_versioned_and_expires_noncurrent_versions(
    plant_parts: Built, large_plant: PlantConfig
) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {
                "Rules": [
                    Match.object_like(
                        {
                            "ExpirationInDays": large_plant.monitoring.results_retention_days,
                            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
                        }
                    ),
                    Match.object_like({"ExpiredObjectDeleteMarker": True}),
                ]
            },
        },
    )


def test_every_topic_rule_has_an_error_action(plant_parts: Built) -> None:
    rules = resources(plant_parts.template, "AWS::IoT::TopicRule")
    assert len(rules) >= 2  # results + health (+ rules other areas add)
    for rule in rules:
        assert "CloudwatchLogs" in rule["Properties"]["TopicRulePayload"]["ErrorAction"]


def stream_of(built: Built, kind_prefix: str) -> tuple[str, dict[str, Any]]:
    """The Firehose stream (logical id, properties) writing under ``kind_prefix``."""
    (found,) = [
        (logical_id, r["Properties"])
        for logical_id, r in built.template.find_resources(
            "AWS::KinesisFirehose::DeliveryStream"
        ).items()
        if r["Properties"]["ExtendedS3DestinationConfiguration"]["Prefix"].startswith(kind_prefix)
    ]
    return found


def firehose_rules(built: Built) -> list[dict[str, Any]]:
    return [
        r["Properties"]["TopicRulePayload"]
        for r in resources(built.template, "AWS::IoT::TopicRule")
        if "Firehose" in r["Properties"]["TopicRulePayload"]["Actions"][0]
    ]


@pytest.mark.parametrize("array", ["results", "labels"])
def test_each_array_of_a_batch_goes_to_its_own_stream_one_record_each(
    plant_parts: Built, array: str
) -> None:
    stream_id, _ = stream_of(plant_parts, f"{array}/")
    (rule,) = [
        r
        for r in firehose_rules(plant_parts)
        if r["Actions"][0]["Firehose"]["DeliveryStreamName"] == {"Ref": stream_id}
    ]
    # fires only when the array has a first element: an empty or absent one is no record
    assert rule["Sql"] == (
        f"SELECT VALUE {array} FROM 'lineguard/example-large/+/+/+/results' "
        f"WHERE v = 1 AND device = topic(5) AND NOT isUndefined(get({array}, 0))"
    )
    assert rule["Actions"][0]["Firehose"]["BatchMode"] is True
    assert rule["AwsIotSqlVersion"] == "2016-03-23"  # isUndefined needs 2016-03-23
    assert "CloudwatchLogs" in rule["ErrorAction"]


@pytest.mark.parametrize("kind_prefix", ["results/", "labels/"])
def test_records_get_one_newline_each_from_firehose_none_from_the_rule(
    plant_parts: Built, kind_prefix: str
) -> None:
    rules = firehose_rules(plant_parts)
    assert len(rules) == 2
    assert all("Separator" not in r["Actions"][0]["Firehose"] for r in rules)
    _, stream = stream_of(plant_parts, kind_prefix)
    processors = stream["ExtendedS3DestinationConfiguration"]["ProcessingConfiguration"][
        "Processors"
    ]
    delimiters = [p for p in processors if p["Type"] == "AppendDelimiterToRecord"]
    assert [d["Parameters"] for d in delimiters] == [
        [{"ParameterName": "Delimiter", "ParameterValue": "\\n"}]
    ]


def test_results_pipeline_refuses_batches_above_the_firehose_batch_limit(
    large_plant: PlantConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stacks.constructs import results_pipeline

    monkeypatch.setattr(results_pipeline, "MAX_RESULTS_PER_BATCH", 501)
    stack = bare_stack()
    log_key = PlantLogKey(stack, "LogKey", plant_name=large_plant.name).key
    errors = RuleErrorLog(stack, "Errors", plant_name=large_plant.name, log_key=log_key)
    logs_bucket = s3.Bucket.from_bucket_name(stack, "Logs", "lineguard-logs-x")
    with pytest.raises(ValueError, match="MAX_RESULTS_PER_BATCH: 501 .* at most 500 records"):
        ResultsPipeline(
            stack,
            "Results",
            plant=large_plant,
            access_log_bucket=logs_bucket,
            error_action=errors.error_action,
            log_key=log_key,
        )


@pytest.mark.parametrize("kind", ["results", "labels"])
def test_results_and_labels_land_partitioned_by_plant_line_and_date(
    plant_parts: Built, kind: str
) -> None:
    _, stream = stream_of(plant_parts, f"{kind}/")
    s3_conf = stream["ExtendedS3DestinationConfiguration"]
    assert s3_conf["Prefix"] == (
        f"{kind}/plant=example-large/line=!{{partitionKeyFromQuery:line}}/"
        "dt=!{partitionKeyFromQuery:dt}/"
    )
    assert s3_conf["ErrorOutputPrefix"].startswith(f"{kind}/errors/")
    assert s3_conf["DynamicPartitioningConfiguration"]["Enabled"] is True


def test_delivery_role_writes_under_results_and_labels_only(plant_parts: Built) -> None:
    roles = plant_parts.template.find_resources("AWS::IAM::Role")
    (firehose_role,) = [
        logical_id
        for logical_id, r in roles.items()
        if "firehose.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for p in resources(plant_parts.template, "AWS::IAM::Policy")
        if p["Properties"]["Roles"] == [{"Ref": firehose_role}]
    ]
    (writes,) = [s for s in policy["Statement"] if "s3:PutObject" in s["Action"]]
    objects = sorted(
        json.dumps(r).rsplit('"', 2)[-2] for r in writes["Resource"] if "Fn::Join" in r
    )
    assert objects == ["/labels/*", "/results/*"]
    assert len(writes["Resource"]) == 3  # the bucket itself (ListBucket) and the two prefixes


def glue_table(template: Template, name: str) -> dict[str, Any]:
    (table,) = [
        t["Properties"]["TableInput"]
        for t in resources(template, "AWS::Glue::Table")
        if t["Properties"]["TableInput"]["Name"] == name
    ]
    return table


def test_glue_table_projects_line_and_date_partitions(plant_parts: Built) -> None:
    table = glue_table(plant_parts.template, "results")
    assert [k["Name"] for k in table["PartitionKeys"]] == ["line", "dt"]
    assert table["Parameters"]["projection.enabled"] == "true"
    columns = {c["Name"] for c in table["StorageDescriptor"]["Columns"]}
    assert {"part_id", "decision", "score", "seq", "model"} <= columns


def test_labels_table_has_every_label_field_and_the_results_partitions(
    plant_parts: Built,
) -> None:
    from inspector.messages import LABEL_FIELDS, LABEL_OPTIONAL_FIELDS

    labels = glue_table(plant_parts.template, "labels")
    results = glue_table(plant_parts.template, "results")
    columns = [c["Name"] for c in labels["StorageDescriptor"]["Columns"]]
    # line is the partition key (a column of the same name would clash with it)
    assert sorted(columns) == sorted({*LABEL_FIELDS, *LABEL_OPTIONAL_FIELDS} - {"line"})
    assert labels["PartitionKeys"] == results["PartitionKeys"]
    assert {k: v for k, v in labels["Parameters"].items() if k.startswith("projection.")} == {
        k: v for k, v in results["Parameters"].items() if k.startswith("projection.")
    }
    assert json.dumps(labels["Parameters"]["storage.location.template"]).endswith(
        '/labels/plant=example-large/line=${line}/dt=${dt}/"]]}'
    )
    assert labels["StorageDescriptor"]["SerdeInfo"] == results["StorageDescriptor"]["SerdeInfo"]


def presto_view(view: dict[str, Any]) -> dict[str, Any]:
    text = view["ViewOriginalText"]
    prefix, suffix = "/* Presto View: ", " */"
    assert text.startswith(prefix) and text.endswith(suffix)
    decoded: dict[str, Any] = json.loads(base64.b64decode(text[len(prefix) : -len(suffix)]))
    return decoded


def test_dedup_view_is_an_athena_view_of_the_results_table(plant_parts: Built) -> None:
    view = glue_table(plant_parts.template, "results_dedup")
    # what Trino's Hive connector (Athena) takes for its own view: ViewReaderUtil.isTrinoView
    assert view["TableType"] == "VIRTUAL_VIEW"
    assert view["Parameters"] == {"presto_view": "true", "comment": "Presto View"}
    assert "Description" not in view  # Trino's Glue reader would put it in place of the comment
    assert view["ViewExpandedText"] == "/* Presto View */"
    assert view["StorageDescriptor"]["SerdeInfo"] == {}  # Trino refuses a view without one
    definition = presto_view(view)
    assert definition["catalog"] == "awsdatacatalog"
    assert definition["schema"] == "lineguard_example_large"
    assert "FROM results\n" in definition["originalSql"]
    assert "PARTITION BY device, seq, line, dt" in definition["originalSql"]
    (resource,) = [
        r
        for r in resources(plant_parts.template, "AWS::Glue::Table")
        if r["Properties"]["TableInput"]["Name"] == "results_dedup"
    ]
    assert resource["Properties"]["DatabaseName"] == "lineguard_example_large"


def test_dedup_view_has_every_result_column_and_ts_as_a_timestamp(plant_parts: Built) -> None:
    view = glue_table(plant_parts.template, "results_dedup")
    table = glue_table(plant_parts.template, "results")
    glue_columns = [(c["Name"], c["Type"]) for c in view["StorageDescriptor"]["Columns"]]
    table_columns = [
        (c["Name"], c["Type"])
        for c in table["StorageDescriptor"]["Columns"] + table["PartitionKeys"]
    ]
    assert [n for n, _ in glue_columns] == [n for n, _ in table_columns]
    assert dict(glue_columns)["ts"] == "timestamp" and dict(table_columns)["ts"] == "string"
    # the same columns in the encoded definition, with Trino's type names
    presto = [(c["name"], c["type"]) for c in presto_view(view)["columns"]]
    assert [n for n, _ in presto] == [n for n, _ in glue_columns]
    hive_to_presto = {"string": "varchar", "int": "integer", "timestamp": "timestamp(3)"}
    assert presto == [(n, hive_to_presto.get(t, t)) for n, t in glue_columns]


@pytest.mark.parametrize(
    ("view_name", "window"),
    [
        ("labels_dedup", "PARTITION BY device, seq, line, dt ORDER BY ts"),
        ("labels_current", "PARTITION BY device, result_seq ORDER BY revision DESC, ts DESC"),
    ],
)
def test_labels_views_are_athena_views_of_the_labels_table(
    plant_parts: Built, view_name: str, window: str
) -> None:
    view = glue_table(plant_parts.template, view_name)
    assert view["TableType"] == "VIRTUAL_VIEW"
    assert view["Parameters"] == {"presto_view": "true", "comment": "Presto View"}
    assert "Description" not in view
    definition = presto_view(view)
    assert definition["schema"] == "lineguard_example_large"
    assert "FROM labels\n" in definition["originalSql"] and window in definition["originalSql"]
    glue_columns = [c["Name"] for c in view["StorageDescriptor"]["Columns"]]
    assert [c["name"] for c in definition["columns"]] == glue_columns
    table = glue_table(plant_parts.template, "labels")
    assert glue_columns == [
        c["Name"] for c in table["StorageDescriptor"]["Columns"] + table["PartitionKeys"]
    ]


def rule_with_sql(built: Built, sql: str) -> dict[str, Any]:
    (rule,) = [
        r["Properties"]["TopicRulePayload"]
        for r in resources(built.template, "AWS::IoT::TopicRule")
        if r["Properties"]["TopicRulePayload"]["Sql"] == sql
    ]
    return rule


def test_health_rule_puts_plant_metrics(plant_parts: Built) -> None:
    rule = rule_with_sql(
        plant_parts,
        "SELECT * FROM 'lineguard/example-large/+/+/+/health' WHERE v = 1 AND device = topic(5)",
    )
    namespaces = {a["CloudwatchMetric"]["MetricNamespace"] for a in rule["Actions"]}
    assert namespaces == {"LineGuard/example-large"}
    assert len(rule["Actions"]) <= 10  # IoT Core's limit of actions per rule


def test_line_health_rule_writes_emf_documents_to_its_log_group(plant_parts: Built) -> None:
    rule = rule_with_sql(plant_parts, line_health_sql("example-large", "LineGuard/example-large"))
    assert rule["Sql"].startswith("SELECT VALUE {'_aws': {'Timestamp': timestamp(), ")
    assert rule["Sql"].endswith(
        "WHERE v = 1 AND device = topic(5) AND (counts.pass + counts.reject + counts.manual) > 0"
    )  # an interval without inspections has no reject rate
    (action,) = rule["Actions"]
    plant_parts.template.has_resource_properties(
        "AWS::Logs::LogGroup", {"LogGroupName": "/lineguard/example-large/line-health"}
    )
    assert action["CloudwatchLogs"]["LogGroupName"] == {
        "Ref": plant_parts.stack.resolve(
            plant_parts.stack.get_logical_id(
                plant_parts.stack.node.find_child("Monitoring")
                .node.find_child("LineHealth")
                .node.find_child("Logs")
                .node.default_child  # type: ignore[arg-type]
            )
        )
    }


def test_line_health_document_follows_the_emf_specification() -> None:
    doc = line_health_document("LineGuard/p")
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert set(doc["_aws"]) == {"Timestamp", "CloudWatchMetrics"}
    assert directive["Namespace"] == "LineGuard/p"
    # every dimension and metric a directive names is a member of the root node
    assert directive["Dimensions"] == [["Line"]]
    names = [m["Name"] for m in directive["Metrics"]]
    assert names == [n for n, _ in LINE_METRICS] and set(names) | {"Line"} <= set(doc)
    assert doc["Line"].sql == "topic(3)"
    assert "* 1.0 /" in doc["RejectRate"].sql  # not an integer division


def _logical_id(built: Built, *path: str) -> str:
    node = built.stack.node
    for name in path:
        node = node.find_child(name).node
    return built.stack.resolve(built.stack.get_logical_id(node.default_child))  # type: ignore[arg-type]


def test_rollout_health_rules_write_emf_documents_to_their_log_group(plant_parts: Built) -> None:
    logs = _logical_id(plant_parts, "Monitoring", "RolloutHealth", "Logs")
    plant_parts.template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {"LogGroupName": "/lineguard/example-large/rollout-health", "RetentionInDays": 7},
    )
    for sql in (decision_sql("example-large"), shadow_sql("example-large")):
        rule = rule_with_sql(plant_parts, sql)
        (action,) = rule["Actions"]
        assert action["CloudwatchLogs"]["LogGroupName"] == {"Ref": logs}
        assert rule["AwsIotSqlVersion"] == "2016-03-23" and rule["ErrorAction"]
        # only messages from the thing they name, that name their ring and served model
        assert " WHERE v = 1 AND device = topic(5) AND ring = substring(ring, 0) AND " in sql
        assert "ring <> ''" in sql and "model = substring(model, 0)" in sql


def test_rollout_health_role_writes_its_own_log_group_only(plant_parts: Built) -> None:
    role = _logical_id(plant_parts, "Monitoring", "RolloutHealth", "RuleRole")
    (policy,) = [
        p["Properties"]
        for p in resources(plant_parts.template, "AWS::IAM::Policy")
        if p["Properties"]["Roles"] == [{"Ref": role}]
    ]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == sorted(RULE_LOG_ACTIONS)
    assert "/lineguard/example-large/rollout-health:*" in json.dumps(statement["Resource"])


def test_decision_document_publishes_per_stratum_and_per_ring_and_version() -> None:
    doc = decision_document("LineGuard/p/rollout")
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "LineGuard/p/rollout"
    assert directive["Dimensions"] == [["Ring", "Version", "Line", "Station"], ["Ring", "Version"]]
    assert [(m["Name"], m["Unit"]) for m in directive["Metrics"]] == [
        ("Inspections", "Count"),
        ("Rejects", "Count"),
        ("Manual", "Count"),
        ("InferenceP99", "Milliseconds"),
        ("HealthReports", "Count"),
    ]
    # every dimension and metric a directive names is a member of the root node (EMF)
    assert {"Ring", "Version", "Line", "Station"} | {
        m["Name"] for m in directive["Metrics"]
    } <= set(doc)
    assert doc["Version"].sql == "substring(model, indexof(model, '@') + 1)"
    assert (doc["Ring"].sql, doc["Line"].sql, doc["Station"].sql) == ("ring", "line", "station")
    assert doc["HealthReports"] == 1 and "isNull(latency_ms.p99)" in doc["InferenceP99"].sql


def test_shadow_document_is_under_the_shadow_models_own_version() -> None:
    doc = shadow_document("LineGuard/p/rollout")
    shadow, served = doc["_aws"]["CloudWatchMetrics"]
    assert shadow["Dimensions"] == [["Ring", "ShadowVersion"]]
    assert [m["Name"] for m in shadow["Metrics"]] == [
        "ShadowFrames",
        "ShadowRejectBoth",
        "ShadowRejectServedOnly",
        "ShadowRejectShadowOnly",
    ]
    assert doc["ShadowVersion"].sql == "substring(shadow.model, indexof(shadow.model, '@') + 1)"
    assert served["Dimensions"] == [["Ring", "Version"]]
    assert [m["Name"] for m in served["Metrics"]] == ["ShadowFrames", "ShadowAgreed"]
    assert doc["ShadowRejectServedOnly"].sql == "shadow.reject.served_only"
    sql = shadow_sql("p")
    assert "shadow.model = substring(shadow.model, 0) AND shadow.frames > 0" in sql


def test_an_emf_directive_without_its_members_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no member for \['Station'\]"):
        emf_document(
            [MetricDirective("ns", (("Ring", "Station"),), (("Frames", "Count"),))],
            {"Ring": Expr("ring"), "Frames": 1},
        )


def test_the_rules_read_fields_the_inspectors_health_message_has() -> None:
    from inspector.engine import ShadowStats
    from inspector.health import HealthReporter
    from inspector.messages import Identity

    shadow = ShadowStats("tiny@2.0.0", frames=10, agreed=9, both=1, shadow_only=1, epoch=1)
    message = HealthReporter(
        Identity("p", "line-1", "st-1", "dev-1"),
        interval_s=60,
        ring="canary",
        status=lambda: {"healthy": True, "model": "tiny@1.0.0", "shadow": shadow},
    ).message()
    sql = decision_sql("p") + shadow_sql("p")
    strings = ("ring", "model", "line", "station", "shadow.model")
    numbers = ("counts.pass", "counts.reject", "counts.manual", "shadow.frames", "shadow.agreement")
    numbers += tuple(f"shadow.reject.{f}" for f in ("both", "served_only", "shadow_only"))
    for path in (*strings, *numbers, "latency_ms.p99"):
        assert path in sql, path
        value: Any = message
        for key in path.split("."):
            value = value[key]
        if path in strings:
            assert isinstance(value, str), path
        elif path in numbers:
            assert isinstance(value, int | float), path


def test_no_metric_is_put_under_a_served_model_namespace(plant_parts: Built) -> None:
    text = json.dumps(resources(plant_parts.template, "AWS::IoT::TopicRule"))
    assert "ShadowAgreement" not in text and "model:" not in text


def test_health_rule_role_may_put_the_plant_namespace_only(plant_parts: Built) -> None:
    (statement,) = [
        st
        for p in resources(plant_parts.template, "AWS::IAM::Policy")
        for st in p["Properties"]["PolicyDocument"]["Statement"]
        if st["Action"] == "cloudwatch:PutMetricData"
        and "LineGuard/example-large" in json.dumps(st.get("Condition"))
    ]
    assert statement["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "LineGuard/example-large"}
    }


def test_one_alarm_watches_every_line_plus_plant_alarms_all_notify_sns(
    plant_parts: Built,
) -> None:
    alarms = resources(plant_parts.template, "AWS::CloudWatch::Alarm")
    names = {a["Properties"]["AlarmName"] for a in alarms}
    assert names == {
        "lineguard-example-large-line-reject-rate",
        "lineguard-example-large-reject-burst",
        "lineguard-example-large-inference-p99",
        "lineguard-example-large-silent-devices",
        "lineguard-example-large-journal-backlog",
    }
    assert all(len(a["Properties"]["AlarmActions"]) == 1 for a in alarms)


def test_line_alarm_is_a_metrics_insights_query_grouped_by_line(plant_parts: Built) -> None:
    (alarm,) = [
        a["Properties"]
        for a in resources(plant_parts.template, "AWS::CloudWatch::Alarm")
        if a["Properties"]["AlarmName"] == "lineguard-example-large-line-reject-rate"
    ]
    (query,) = alarm["Metrics"]
    assert query["Expression"] == (
        'SELECT AVG(RejectRate) FROM SCHEMA("LineGuard/example-large", Line) '
        "GROUP BY Line ORDER BY AVG() DESC LIMIT 500"
    )
    assert query["Period"] == 300 and query["ReturnData"] is True
    assert (alarm["Threshold"], alarm["EvaluationPeriods"]) == (0.15, 2)


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


# ------------------------------------------------------------------ plant: identity


def test_identity_sync_runs_on_the_plants_fleet_status(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::IoT::TopicRule",
        {
            "TopicRulePayload": Match.object_like(
                {
                    "Sql": "SELECT topic(3) AS thing FROM '$aws/things/+/greengrassv2/health/json' "
                    "WHERE startswith(topic(3), 'lineguard-example-large-')",
                    "Actions": [{"Lambda": {"FunctionArn": Match.any_value()}}],
                    "ErrorAction": Match.any_value(),
                }
            )
        },
    )


def test_identity_sync_has_a_concurrency_cap_and_knows_its_plant(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "identity_sync.handler",
            "ReservedConcurrentExecutions": 5,
            "Environment": {"Variables": {"PLANT": "example-large"}},
        },
    )


def test_only_the_identity_rules_may_invoke_identity_sync(plant_parts: Built) -> None:
    permissions = [
        p["Properties"]
        for p in resources(plant_parts.template, "AWS::Lambda::Permission")
        if "Identity" in json.dumps(p["Properties"].get("FunctionName"))
    ]
    rules = {
        name
        for name, r in plant_parts.template.find_resources("AWS::IoT::TopicRule").items()
        if "identity sync" in r["Properties"]["TopicRulePayload"]["Description"]
    }
    # one permission per identity rule, each scoped to that rule
    assert len(rules) == 2
    assert {p["SourceArn"]["Fn::GetAtt"][0] for p in permissions} == rules
    assert {p["Principal"] for p in permissions} == {"iot.amazonaws.com"}


def test_dashboard_graphs_lines_with_queries_not_one_metric_per_line(plant_parts: Built) -> None:
    (dashboard,) = resources(plant_parts.template, "AWS::CloudWatch::Dashboard")
    # the body is a Fn::Join around the alarms' ARNs, each inside a JSON string
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))
    metrics = [m for w in body["widgets"] for m in w["properties"].get("metrics", [])]
    queries = [m[0]["expression"] for m in metrics if "expression" in m[0]]
    assert 'SELECT AVG(RejectRate) FROM SCHEMA("LineGuard/example-large", Line) ' in queries[0]
    # each series is labelled with its line (the default label), not with the query
    assert all(m[0]["label"] == "${LABEL}" for m in metrics if "expression" in m[0])
    assert "line-07" not in json.dumps(body)
    assert len(body["widgets"]) < 10


def test_only_this_accounts_iot_may_assume_the_provisioning_role(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": Match.object_like(
                {
                    "Statement": [
                        Match.object_like(
                            {
                                "Principal": {"Service": "iot.amazonaws.com"},
                                "Condition": {
                                    "StringEquals": {"aws:SourceAccount": "123456789012"},
                                    "ArnLike": {
                                        "aws:SourceArn": "arn:aws:iot:eu-west-1:123456789012:*"
                                    },
                                },
                            }
                        )
                    ]
                }
            ),
            "Description": Match.string_like_regexp("IoT fleet provisioning"),
        },
    )


def test_alarm_topic_has_the_name_people_subscribe_to(plant_parts: Built) -> None:
    plant_parts.template.has_resource_properties(
        "AWS::SNS::Topic", {"TopicName": "lineguard-example-large-alarms"}
    )


def topic_filter(sql: str) -> str:
    return sql.split(" FROM ")[1].split(" WHERE ")[0]


def test_the_acknowledgement_says_the_stack_stores_labels(plant_parts: Built) -> None:
    rules = resources(plant_parts.template, "AWS::IoT::TopicRule")
    (sql,) = [
        r["Properties"]["TopicRulePayload"]["Sql"]
        for r in rules
        if "republish" in json.dumps(r["Properties"]["TopicRulePayload"]["Actions"]).lower()
    ]
    assert sql.startswith("SELECT v, device, first_seq, last_seq, 1 AS labels FROM ")


def test_each_stored_batch_is_acknowledged_to_its_own_device(plant_parts: Built) -> None:
    from stacks.constructs.results_pipeline import (
        ACK_SQL,
        BATCH_FILTER,
        LABELS_SQL,
        RESULTS_SQL,
    )

    rules = resources(plant_parts.template, "AWS::IoT::TopicRule")
    acks = [
        r["Properties"]["TopicRulePayload"]
        for r in rules
        if "republish" in json.dumps(r["Properties"]["TopicRulePayload"]["Actions"]).lower()
    ]
    assert len(acks) == 1
    payload = acks[0]
    plant = payload["Sql"].split("'")[1].split("/")[1]
    assert payload["Sql"] == ACK_SQL.format(plant=plant)
    # the filter of the rules that store the batch, without their "has a first element": a
    # batch is acknowledged when each of its arrays that holds anything went to its rule
    ack_filter = payload["Sql"].split(" WHERE ")[1]
    assert ack_filter == BATCH_FILTER
    for array, sql in (("results", RESULTS_SQL), ("labels", LABELS_SQL)):
        assert sql.format(plant=plant).split(" WHERE ")[1] == (
            f"{ack_filter} AND NOT isUndefined(get({array}, 0))"
        )
        assert topic_filter(sql.format(plant=plant)) == topic_filter(payload["Sql"])
    republish = payload["Actions"][0]["Republish"]
    assert republish["Topic"] == f"lineguard/{plant}/${{topic(5)}}/ack" and republish["Qos"] == 1
    assert "ErrorAction" in payload

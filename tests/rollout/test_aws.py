"""AwsFleet against botocore Stubber (Greengrass v2) and moto (IoT, S3, SageMaker, CloudWatch)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iot.models import iot_backends

from inspector.model_package import Thresholds, load_package, write_manifest
from rollout.aws import AwsFleet
from rollout.errors import AwsError, BadInputError
from rollout.fleet import ShadowCounts, StratumCounts
from rollout.recipe import build_model, digest_b64
from stacks.config import initial_release
from stacks.deployment_spec import deployment_spec
from stacks.rollout_metrics import rollout_namespace

from .conftest import REPO

REGION = "eu-west-1"
BUCKET = "lineguard-artifacts-test"
T0 = 1_767_225_600.0


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield


@pytest.fixture
def greengrass() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "greengrassv2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def fleet(greengrass_client: Any) -> AwsFleet:
    return AwsFleet(
        region=REGION, artifact_bucket=BUCKET, clients={"greengrassv2": greengrass_client}
    )


def component_arn(version: str) -> str:
    return (
        f"arn:aws:greengrass:{REGION}:{DEFAULT_ACCOUNT_ID}:components:"
        f"com.lineguard.Model:versions:{version}"
    )


def test_publish_uploads_the_built_component_with_digest(aws, greengrass, make_package, tmp_path):
    client, stubber = greengrass
    package = make_package("1.1.0")
    built = build_model(package, BUCKET)
    uri = f"s3://{BUCKET}/components/com.lineguard.Model/1.1.0/model.zip"
    assert built.uri == uri and built.key == "components/com.lineguard.Model/1.1.0/model.zip"
    captured: dict[str, Any] = {}
    client.meta.events.register_first(
        "before-parameter-build.greengrassv2.CreateComponentVersion",
        lambda params, **_: captured.update(params),
    )
    # the version does not exist yet (GetComponent: ResourceNotFoundException)
    stubber.add_client_error("get_component", "ResourceNotFoundException", "no such", 404)
    stubber.add_response(
        "create_component_version",
        {
            "componentName": "com.lineguard.Model",
            "componentVersion": "1.1.0",
            "arn": component_arn("1.1.0"),
            "creationTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "status": {"componentState": "DEPLOYABLE", "message": "ok"},
        },
        {"inlineRecipe": ANY},
    )
    api = fleet(client)
    sent: dict[str, Any] = {}
    api.client("s3").meta.events.register_first(
        "before-parameter-build.s3.PutObject", lambda params, **_: sent.update(params)
    )
    published = api.publish_model(package)
    assert published.arn == component_arn("1.1.0") and published.artifact_uri == uri
    obj = boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=built.key)
    body = obj["Body"].read()
    assert body == built.archive  # the component build is deterministic
    assert sent["ChecksumSHA256"] == digest_b64(body) == published.sha256  # S3 verifies it
    assert obj["Metadata"]["graph-sha256"] == package.manifest.sha256
    recipe = json.loads(captured["inlineRecipe"])
    assert recipe["ComponentName"] == "com.lineguard.Model"
    assert recipe["ComponentVersion"] == "1.1.0"  # the model package's version
    (artifact,) = recipe["Manifests"][0]["Artifacts"]
    assert artifact["URI"] == uri and artifact["Unarchive"] == "ZIP"
    assert artifact["Digest"] == digest_b64(body) and artifact["Algorithm"] == "SHA-256"
    # what the device unpacks is a valid model package, where the inspector's recipe looks
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        archive.extractall(tmp_path / "model")
    assert load_package(tmp_path / "model").manifest.sha256 == package.manifest.sha256
    inspector_recipe = (REPO / "edge_component/recipes/com.lineguard.Inspector.yaml").read_text()
    assert "{com.lineguard.Model:artifacts:decompressedPath}/model" in inspector_recipe


def test_publish_shadow_carries_the_candidate_in_the_served_models_component(
    aws, greengrass, make_package, tmp_path
) -> None:
    client, stubber = greengrass
    served, candidate = make_package("1.0.0"), make_package("1.4.0")
    old = build_model(served, BUCKET)  # what the served version's artifact holds
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=old.key, Body=old.archive)
    # GetComponent of the served version: its recipe, as Greengrass returns it (JSON bytes)
    stubber.add_response(
        "get_component",
        {"recipeOutputFormat": "JSON", "recipe": json.dumps(old.recipe).encode()},
        {"arn": component_arn("1.0.0"), "recipeOutputFormat": "JSON"},
    )
    stubber.add_client_error("get_component", "ResourceNotFoundException", "no such", 404)
    captured: dict[str, Any] = {}
    client.meta.events.register_first(
        "before-parameter-build.greengrassv2.CreateComponentVersion",
        lambda params, **_: captured.update(params),
    )
    stubber.add_response(
        "create_component_version",
        {
            "componentName": "com.lineguard.Model",
            "componentVersion": "1.0.4",
            "arn": component_arn("1.0.4"),
            "creationTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "status": {"componentState": "DEPLOYABLE", "message": "ok"},
        },
        {"inlineRecipe": ANY},
    )
    published = fleet(client).publish_shadow("1.0.0", candidate)
    assert published.version == "1.0.4" and published.arn == component_arn("1.0.4")
    recipe = json.loads(captured["inlineRecipe"])
    assert recipe["ComponentVersion"] == "1.0.4"
    (artifact,) = recipe["Manifests"][0]["Artifacts"]
    obj = boto3.client("s3", region_name=REGION).get_object(
        Bucket=BUCKET, Key=artifact["URI"][len(f"s3://{BUCKET}/") :]
    )
    body = obj["Body"].read()
    assert artifact["Digest"] == digest_b64(body)
    assert obj["Metadata"]["shadow-graph-sha256"] == candidate.manifest.sha256
    # the device unpacks the served model where it decides from, the candidate under shadow/
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        archive.extractall(tmp_path / "carrier")
    assert load_package(tmp_path / "carrier").manifest.version == "1.0.0"
    assert load_package(tmp_path / "carrier" / "shadow").manifest.version == "1.4.0"


def test_publish_shadow_refuses_a_served_artifact_that_is_not_what_its_recipe_says(
    aws, greengrass, make_package
) -> None:
    client, stubber = greengrass
    old = build_model(make_package("1.0.0"), BUCKET)
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=old.key, Body=b"other")
    stubber.add_response(
        "get_component",
        {"recipeOutputFormat": "JSON", "recipe": json.dumps(old.recipe).encode()},
        {"arn": component_arn("1.0.0"), "recipeOutputFormat": "JSON"},
    )
    with pytest.raises(BadInputError, match="do not match the digest"):
        fleet(client).publish_shadow("1.0.0", make_package("1.4.0"))
    stubber.add_client_error("get_component", "ResourceNotFoundException", "no such", 404)
    with pytest.raises(BadInputError, match="1.0.0 is not published"):
        fleet(client).publish_shadow("1.0.0", make_package("1.4.0"))
    with pytest.raises(BadInputError, match="patch 0"):
        fleet(client).publish_shadow("1.0.3", make_package("1.4.0"))


def test_a_published_version_is_checked_before_anything_is_uploaded(
    aws, greengrass, make_package
) -> None:
    client, stubber = greengrass
    package = make_package("1.1.0")
    digest = build_model(package, BUCKET).digest
    for recipe_digest in (digest, "c29tZXRoaW5nIGVsc2U="):
        recipe = {"Manifests": [{"Artifacts": [{"Digest": recipe_digest}]}]}
        stubber.add_response(
            "get_component",
            {"recipeOutputFormat": "JSON", "recipe": json.dumps(recipe).encode()},
            {"arn": component_arn("1.1.0"), "recipeOutputFormat": "JSON"},
        )
        if recipe_digest == digest:  # the same bytes: it must be DEPLOYABLE to be used
            stubber.add_response(
                "describe_component",
                {"arn": component_arn("1.1.0"), "status": {"componentState": "DEPLOYABLE"}},
                {"arn": component_arn("1.1.0")},
            )
    # the same bytes: the existing version (a resumed promotion), nothing created again
    assert fleet(client).publish_model(package).arn == component_arn("1.1.0")
    # other bytes under the same version: refused, and the artifact is not overwritten
    with pytest.raises(BadInputError, match="already exists with a different artifact"):
        fleet(client).publish_model(package)
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET)
    assert listed.get("KeyCount", 0) == 0


def test_a_new_version_is_used_only_once_greengrass_made_it_deployable(
    aws, greengrass, make_package
) -> None:
    client, stubber = greengrass
    package = make_package("1.1.0")
    arn = component_arn("1.1.0")
    for final in ("DEPLOYABLE", "FAILED"):
        stubber.add_client_error("get_component", "ResourceNotFoundException", "no such", 404)
        stubber.add_response(
            "create_component_version",
            {"arn": arn, "componentName": "com.lineguard.Model", "componentVersion": "1.1.0",
             "creationTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
             "status": {"componentState": "REQUESTED", "message": "verifying"}},
            {"inlineRecipe": ANY},
        )  # fmt: skip
        for state in ("INITIATED", final):  # verification runs after the call returns
            status = {"componentState": state, "message": "artifact digest mismatch"}
            stubber.add_response("describe_component", {"arn": arn, "status": status},
                                 {"arn": arn})  # fmt: skip
    waits: list[float] = []
    api = AwsFleet(region=REGION, artifact_bucket=BUCKET, clients={"greengrassv2": client},
                   sleep=waits.append)  # fmt: skip
    assert api.publish_model(package).arn == arn and waits == [5.0]
    with pytest.raises(AwsError, match="FAILED: artifact digest mismatch"):
        api.publish_model(package)


def test_a_lost_race_to_create_the_version_accepts_the_same_artifact_only(
    aws, greengrass, make_package
) -> None:
    client, stubber = greengrass
    package = make_package("1.1.0")
    digest = build_model(package, BUCKET).digest
    for recipe_digest in (digest, "c29tZXRoaW5nIGVsc2U="):
        stubber.add_client_error("get_component", "ResourceNotFoundException", "no such", 404)
        stubber.add_client_error("create_component_version", "ConflictException", "exists", 409)
        recipe = {"Manifests": [{"Artifacts": [{"Digest": recipe_digest}]}]}
        stubber.add_response(
            "get_component",
            {"recipeOutputFormat": "JSON", "recipe": json.dumps(recipe).encode()},
            {"arn": component_arn("1.1.0"), "recipeOutputFormat": "JSON"},
        )
        if recipe_digest == digest:
            stubber.add_response(
                "describe_component",
                {"arn": component_arn("1.1.0"), "status": {"componentState": "DEPLOYABLE"}},
                {"arn": component_arn("1.1.0")},
            )
    assert fleet(client).publish_model(package).arn == component_arn("1.1.0")
    with pytest.raises(BadInputError, match="already exists with a different artifact"):
        fleet(client).publish_model(package)


def test_published_as_compares_the_component_build(aws, greengrass, make_package) -> None:
    client, stubber = greengrass
    package = make_package("1.1.0")
    stubber.add_client_error("get_component", "ResourceNotFoundException", "no such", 404)
    recipe = {"Manifests": [{"Artifacts": [{"Digest": build_model(package, BUCKET).digest}]}]}
    for _ in range(2):
        stubber.add_response(
            "get_component",
            {"recipeOutputFormat": "JSON", "recipe": json.dumps(recipe).encode()},
            {"arn": component_arn("1.1.0"), "recipeOutputFormat": "JSON"},
        )
    api = fleet(client)
    assert api.published_as(package) is None
    assert api.published_as(package) is True
    (package.root / "golden.png").write_bytes(b"other bytes")  # another package, same version
    assert api.published_as(package) is False


def test_reject_model_package_updates_the_registry(aws) -> None:
    arn = _register("Approved", "models/run-9/model.tar.gz", b"x")
    AwsFleet(region=REGION, artifact_bucket=BUCKET).reject_model_package(arn, "1.3.0: rolled back")
    desc = boto3.client("sagemaker", region_name=REGION).describe_model_package(
        ModelPackageName=arn
    )
    assert desc["ModelApprovalStatus"] == "Rejected"


def test_create_deployment_sends_deployment_spec_verbatim(greengrass, demo_plant) -> None:
    client, stubber = greengrass
    release = initial_release(
        demo_plant, {"com.lineguard.Inspector": "1.0.0", "com.lineguard.Model": "1.1.0"}
    )
    request = deployment_spec(demo_plant, "canary", release)
    # Stubber validates the request against the real greengrassv2 service model
    stubber.add_response(
        "create_deployment",
        {"deploymentId": "d-1", "iotJobId": "job-1", "iotJobArn": "arn:aws:iot:::job/job-1"},
        request,
    )
    assert fleet(client).create_deployment(request) == "d-1"


def test_greengrass_error_names_operation_and_resource(greengrass) -> None:
    client, stubber = greengrass
    stubber.add_client_error("get_deployment", "ResourceNotFoundException", "no such", 404)
    with pytest.raises(AwsError, match=r"greengrassv2.get_deployment \(d-9\): ResourceNotFound"):
        fleet(client).deployment_progress("d-9")


def _job(things: int) -> str:
    iot = boto3.client("iot", region_name=REGION)
    arns = []
    for i in range(things):
        arns.append(iot.create_thing(thingName=f"lineguard-demo-DEMO-{i:04d}")["thingArn"])
    iot.create_job(jobId="gg-job-1", targets=arns, document="{}")
    return "gg-job-1"


def test_deployment_progress_counts_job_executions(aws, greengrass) -> None:
    client, stubber = greengrass
    job_id = _job(5)
    iot = boto3.client("iot", region_name=REGION)
    iot.cancel_job_execution(jobId=job_id, thingName="lineguard-demo-DEMO-0004")
    backend = iot_backends[DEFAULT_ACCOUNT_ID][REGION]
    for i, status in enumerate(["SUCCEEDED", "SUCCEEDED", "FAILED"]):  # what devices reported
        backend.job_executions[(job_id, f"lineguard-demo-DEMO-{i:04d}")].status = status
    stubber.add_response(
        "get_deployment",
        {"deploymentId": "d-1", "deploymentStatus": "ACTIVE", "iotJobId": job_id},
        {"deploymentId": "d-1"},
    )
    progress = fleet(client).deployment_progress("d-1")
    assert progress.counts == {"SUCCEEDED": 2, "FAILED": 1, "QUEUED": 1, "CANCELED": 1}
    assert progress.total == 5 and progress.failed == 1 and progress.finished == 4
    assert progress.status == "ACTIVE"
    # per thing, by the name in the execution summary's thingArn
    assert progress.executions["lineguard-demo-DEMO-0002"] == "FAILED"
    assert progress.executions["lineguard-demo-DEMO-0003"] == "QUEUED"


def test_a_things_latest_execution_is_the_one_that_counts(greengrass) -> None:
    client, stubber = greengrass
    iot = boto3.client("iot", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    thing = f"arn:aws:iot:{REGION}:123456789012:thing/lineguard-demo-DEMO-0001"
    other = f"arn:aws:iot:{REGION}:123456789012:thing/lineguard-demo-DEMO-0002"
    stamp = datetime(2026, 1, 1, tzinfo=UTC)

    def summary(arn: str, status: str, number: int) -> dict[str, Any]:
        # the ListJobExecutionsForJob response shape (JobExecutionSummaryForJob)
        return {
            "thingArn": arn,
            "jobExecutionSummary": {
                "status": status, "queuedAt": stamp, "lastUpdatedAt": stamp,
                "executionNumber": number,
            },
        }  # fmt: skip

    stubber.add_response(
        "get_deployment",
        {"deploymentId": "d-1", "deploymentStatus": "ACTIVE", "iotJobId": "job-1"},
        {"deploymentId": "d-1"},
    )
    with Stubber(iot) as iot_stub:
        iot_stub.add_response(
            "describe_job", {"job": {"jobId": "job-1", "status": "IN_PROGRESS"}}, {"jobId": "job-1"}
        )
        # a thing that left the group (REMOVED) and came back has a second, later execution
        iot_stub.add_response(
            "list_job_executions_for_job",
            {"executionSummaries": [summary(thing, "SUCCEEDED", 2)], "nextToken": "t"},
            {"jobId": "job-1"},
        )
        iot_stub.add_response(
            "list_job_executions_for_job",
            {
                "executionSummaries": [
                    summary(thing, "REMOVED", 1),
                    summary(other, "IN_PROGRESS", 1),
                ]
            },
            {"jobId": "job-1", "nextToken": "t"},
        )
        api = AwsFleet(
            region=REGION, artifact_bucket=BUCKET, clients={"greengrassv2": client, "iot": iot}
        )
        progress = api.deployment_progress("d-1")
        iot_stub.assert_no_pending_responses()
    assert progress.job_status == "IN_PROGRESS"
    assert progress.executions == {
        "lineguard-demo-DEMO-0001": "SUCCEEDED",
        "lineguard-demo-DEMO-0002": "IN_PROGRESS",
    }


def test_ring_deployment_is_the_targets_latest(greengrass, demo_plant) -> None:
    client, stubber = greengrass
    target = demo_plant.ring_group_arn("canary")
    stubber.add_response("list_deployments", {"deployments": []},
                         {"targetArn": target, "historyFilter": "LATEST_ONLY"})  # fmt: skip
    stubber.add_response(
        "list_deployments",
        {"deployments": [{"deploymentId": "d-7", "targetArn": target,
                          "deploymentStatus": "ACTIVE", "revisionId": "3"}]},
        {"targetArn": target, "historyFilter": "LATEST_ONLY"},
    )  # fmt: skip
    stubber.add_response(
        "get_deployment",
        {
            "deploymentId": "d-7",
            "components": {
                "com.lineguard.Model": {"componentVersion": "1.2.0"},
                "com.lineguard.Inspector": {
                    "componentVersion": "1.0.0",
                    "configurationUpdate": {
                        "merge": '{"ring":"canary","runtime":{"judge_threads":2}}'
                    },
                },
            },
        },
        {"deploymentId": "d-7"},
    )
    api = fleet(client)
    assert api.ring_deployment(target) is None  # no deployment yet
    running = api.ring_deployment(target)
    assert running is not None and running.deployment_id == "d-7"
    assert running.components == {
        "com.lineguard.Model": "1.2.0",
        "com.lineguard.Inspector": "1.0.0",
    }
    # as the release records it: the ring is the deployment's own (deployment_spec)
    assert running.configuration == {"com.lineguard.Inspector": {"runtime": {"judge_threads": 2}}}


def test_ring_members_are_the_groups_things(aws, demo_plant) -> None:
    iot = boto3.client("iot", region_name=REGION)
    group = demo_plant.ring_group_arn("canary").rsplit("/", 1)[-1]
    iot.create_thing_group(thingGroupName=group)
    names = [f"lineguard-demo-DEMO-{i:04d}" for i in range(3)]
    for name in names:
        iot.create_thing(thingName=name)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
    iot.create_thing(thingName="lineguard-demo-DEMO-0099")  # not in the ring
    api = AwsFleet(region=REGION, artifact_bucket=BUCKET)
    assert sorted(api.ring_members(demo_plant.ring_group_arn("canary"))) == names


def test_core_devices_and_effective_deployments_page(greengrass, demo_plant) -> None:
    client, stubber = greengrass
    target = demo_plant.ring_group_arn("canary")
    stubber.add_response(
        "list_core_devices",
        {"coreDevices": [{"coreDeviceThingName": "a", "status": "HEALTHY"}], "nextToken": "n"},
        {"thingGroupArn": target},
    )
    stubber.add_response(
        "list_core_devices",
        {"coreDevices": [{"coreDeviceThingName": "b", "status": "UNHEALTHY"}]},
        {"thingGroupArn": target, "nextToken": "n"},
    )
    stubber.add_response(
        "list_effective_deployments",
        {
            "effectiveDeployments": [
                {
                    "deploymentId": "d-1",
                    "deploymentName": "lineguard-demo-canary",
                    "targetArn": target,
                    "coreDeviceExecutionStatus": "SUCCEEDED",
                    "creationTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
                    "modifiedTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
                }
            ]
        },
        {"coreDeviceThingName": "a"},
    )
    api = fleet(client)
    assert [(d.name, d.status) for d in api.core_devices(target)] == [
        ("a", "HEALTHY"),
        ("b", "UNHEALTHY"),
    ]
    assert api.effective_deployments("a")[0]["coreDeviceExecutionStatus"] == "SUCCEEDED"


def test_installed_components_lists_the_whole_topology(greengrass) -> None:
    client, stubber = greengrass
    stamp = datetime(2026, 1, 1, tzinfo=UTC)

    def component(name: str, version: str) -> dict[str, Any]:
        return {"componentName": name, "componentVersion": version, "lifecycleState": "RUNNING",
                "isRoot": name != "com.lineguard.Model", "lastStatusChangeTimestamp": stamp}  # fmt: skip

    stubber.add_response(
        "list_installed_components",
        {"installedComponents": [component("com.lineguard.Inspector", "1.0.0")], "nextToken": "n"},
        {"coreDeviceThingName": "dev-1", "topologyFilter": "ALL"},
    )
    stubber.add_response(
        "list_installed_components",
        {"installedComponents": [component("com.lineguard.Model", "1.0.0")]},
        {"coreDeviceThingName": "dev-1", "topologyFilter": "ALL", "nextToken": "n"},
    )
    assert fleet(client).installed_components("dev-1") == {
        "com.lineguard.Inspector": "1.0.0",
        "com.lineguard.Model": "1.0.0",
    }


def test_ring_health_reads_the_rings_own_series(aws, greengrass, demo_plant) -> None:
    client, stubber = greengrass
    target = demo_plant.ring_group_arn("canary")
    stubber.add_response(
        "list_core_devices",
        {
            "coreDevices": [
                {"coreDeviceThingName": "a", "status": "HEALTHY"},
                {"coreDeviceThingName": "b", "status": "UNHEALTHY"},
            ]
        },
        {"thingGroupArn": target},
    )
    cw = boto3.client("cloudwatch", region_name=REGION)
    now = datetime.now(UTC).timestamp()
    start = now - 300
    namespace = rollout_namespace("demo")

    def dims(ring: str, version: str) -> list[dict[str, str]]:
        return [{"Name": "Ring", "Value": ring}, {"Name": "Version", "Value": version}]

    points: list[dict[str, Any]] = []
    for minute in range(5):  # one health message per device per minute
        ts = datetime.fromtimestamp(start + 60 * minute + 30, UTC)
        for passed, rejected, p99 in ((55, 3, 40.0 + minute), (58, 1, 42.0)):
            for name, value in (
                ("Inspections", passed + rejected + 2),
                ("Rejects", rejected),
                ("Manual", 2),
                ("InferenceP99", p99),
                ("HealthReports", 1),
                ("ShadowFrames", 60),
                ("ShadowAgreed", 58),
            ):
                points.append(
                    {"MetricName": name, "Dimensions": dims("canary", "1.1.0"), "Value": value,
                     "Timestamp": ts}
                )  # fmt: skip
        idle = {"MetricName": "InferenceP99", "Value": 0.0, "Timestamp": ts}  # no frames
        points.append({**idle, "Dimensions": dims("canary", "1.1.0")})
        # other rings on the version, and the ring on another version, are not the ring's
        for other in (dims("fleet", "1.1.0"), dims("canary", "1.0.0")):
            points.append({"MetricName": "Rejects", "Dimensions": other, "Value": 99,
                           "Timestamp": ts})  # fmt: skip
    for i in range(0, len(points), 20):
        cw.put_metric_data(Namespace=namespace, MetricData=points[i : i + 20])
    health = fleet(client).ring_health("demo", "canary", target, start, now, "1.1.0")
    assert health.decisions == {"pass": 5 * 113, "reject": 5 * 4, "manual": 5 * 4}
    assert health.devices == 2 and health.healthy == 1 and health.reporting == 2
    assert health.latency_p99_ms == pytest.approx(44.0)
    assert health.shadow_agreement == pytest.approx(58 / 60)


def _cw() -> tuple[Any, Stubber]:
    client = boto3.client(
        "cloudwatch", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    return client, Stubber(client)


def _stat(query_id: str, metric: str, dims: dict[str, str], stat: str = "Sum") -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": "LineGuard/demo/rollout",
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
            },
            "Period": 60,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def _result(query_id: str, values: list[float], ts: datetime) -> dict[str, Any]:
    return {
        "Id": query_id,
        "Label": query_id,
        "Timestamps": [ts] * len(values),
        "Values": values,
        "StatusCode": "Complete",
    }


def _metric(name: str, **dims: str) -> dict[str, Any]:
    return {
        "Namespace": "LineGuard/demo/rollout",
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
    }


def test_decision_counts_list_the_strata_then_sum_them_in_batches_of_500() -> None:
    client, stubber = _cw()
    start, end = T0, T0 + 3600
    window = {
        "StartTime": datetime.fromtimestamp(start, UTC),
        "EndTime": datetime.fromtimestamp(end, UTC),
    }
    listing = {
        "Namespace": "LineGuard/demo/rollout",
        "MetricName": "Inspections",
        "Dimensions": [{"Name": n} for n in ("Ring", "Version", "Line", "Station")],
    }
    # 170 strata (3 metrics each: 510 queries, two GetMetricData calls); ListMetrics in two pages
    strata = [
        {"Ring": "canary" if i < 100 else "fleet", "Version": "1.1.0" if i % 2 else "1.0.0",
         "Line": f"line-{i:03d}", "Station": "final-check"}
        for i in range(170)
    ]  # fmt: skip
    first = [_metric("Inspections", **d) for d in strata[:120]]
    # a duplicate listing, and a series with other dimensions, are ignored
    rest = [_metric("Inspections", **d) for d in strata[120:]] + [
        _metric("Inspections", **strata[0]),
        _metric("Inspections", Ring="canary", Version="1.1.0"),
    ]
    stubber.add_response("list_metrics", {"Metrics": first, "NextToken": "p2"}, listing)
    stubber.add_response("list_metrics", {"Metrics": rest}, {**listing, "NextToken": "p2"})
    ordered = sorted(strata, key=lambda d: (d["Ring"], d["Version"], d["Line"], d["Station"]))
    queries = [
        _stat(f"s{i}_{key}", metric, d)
        for i, d in enumerate(ordered)
        for key, metric in (("frames", "Inspections"), ("reject", "Rejects"), ("manual", "Manual"))
    ]
    assert len(queries) == 510
    ts = datetime.fromtimestamp(start + 60, UTC)

    def values(query_id: str) -> list[float]:
        index = int(query_id[1:].split("_", 1)[0])
        if index == 7:  # a stratum that judged nothing in the window
            return [0.0]
        return {"frames": [60.0, 60.0], "reject": [2.0, 1.0], "manual": [1.0]}[
            query_id.split("_", 1)[1]
        ]

    batch_one = [_result(q["Id"], values(q["Id"]), ts) for q in queries[:500]]
    stubber.add_response(
        "get_metric_data",
        {"MetricDataResults": batch_one[:250], "NextToken": "more"},
        {"MetricDataQueries": queries[:500], **window},
    )
    stubber.add_response(
        "get_metric_data",
        {"MetricDataResults": batch_one[250:]},
        {"MetricDataQueries": queries[:500], **window, "NextToken": "more"},
    )
    stubber.add_response(
        "get_metric_data",
        {"MetricDataResults": [_result(q["Id"], values(q["Id"]), ts) for q in queries[500:]]},
        {"MetricDataQueries": queries[500:], **window},
    )
    with stubber:
        counts = AwsFleet(
            region=REGION, artifact_bucket=BUCKET, clients={"cloudwatch": client}
        ).decision_counts("demo", start, end)
        stubber.assert_no_pending_responses()
    assert len(counts) == 169  # the idle stratum is left out
    assert ordered[7] not in [
        {"Ring": c.ring, "Version": c.version, "Line": c.line, "Station": c.station} for c in counts
    ]
    assert counts[0] == StratumCounts("canary", "line-000", "final-check", "1.0.0", 120, 3, 1)
    assert {c.ring for c in counts} == {"canary", "fleet"}
    assert {c.version for c in counts} == {"1.0.0", "1.1.0"}


def test_decision_counts_of_one_ring_ask_list_metrics_for_that_ring_only() -> None:
    client, stubber = _cw()
    start, end = T0 - 24 * 3600, T0
    window = {
        "StartTime": datetime.fromtimestamp(start, UTC),
        "EndTime": datetime.fromtimestamp(end, UTC),
    }
    # ListMetrics' dimension filter: a Name with a Value matches that value only (API reference)
    listing = {
        "Namespace": "LineGuard/demo/rollout",
        "MetricName": "Inspections",
        "Dimensions": [
            {"Name": "Ring", "Value": "canary"},
            {"Name": "Version"},
            {"Name": "Line"},
            {"Name": "Station"},
        ],
    }
    dims = {"Ring": "canary", "Version": "1.0.0", "Line": "line-1", "Station": "press-out"}
    stubber.add_response("list_metrics", {"Metrics": [_metric("Inspections", **dims)]}, listing)
    queries = [
        _stat(f"s0_{key}", metric, dims)
        for key, metric in (("frames", "Inspections"), ("reject", "Rejects"), ("manual", "Manual"))
    ]
    ts = datetime.fromtimestamp(start + 60, UTC)
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                _result("s0_frames", [3600.0], ts),
                _result("s0_reject", [40.0], ts),
                _result("s0_manual", [9.0], ts),
            ]
        },
        {"MetricDataQueries": queries, **window},
    )
    with stubber:
        counts = AwsFleet(
            region=REGION, artifact_bucket=BUCKET, clients={"cloudwatch": client}
        ).decision_counts("demo", start, end, ring="canary")
        stubber.assert_no_pending_responses()
    assert counts == [StratumCounts("canary", "line-1", "press-out", "1.0.0", 3600, 40, 9)]


def test_shadow_counts_are_the_shadow_versions_own() -> None:
    client, stubber = _cw()
    start, end = T0, T0 + 1800
    dims = {"Ring": "canary", "ShadowVersion": "1.2.0"}
    queries = [
        _stat("frames", "ShadowFrames", dims),
        _stat("both", "ShadowRejectBoth", dims),
        _stat("served_only", "ShadowRejectServedOnly", dims),
        _stat("shadow_only", "ShadowRejectShadowOnly", dims),
    ]
    ts = datetime.fromtimestamp(start, UTC)
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                _result("frames", [600.0, 540.0], ts),
                _result("both", [12.0, 10.0], ts),
                _result("served_only", [1.0], ts),
                _result("shadow_only", [], ts),
            ]
        },
        {
            "MetricDataQueries": queries,
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
        },
    )
    with stubber:
        counts = AwsFleet(
            region=REGION, artifact_bucket=BUCKET, clients={"cloudwatch": client}
        ).shadow_counts("demo", "canary", "1.2.0", start, end)
        stubber.assert_no_pending_responses()
    assert counts == ShadowCounts(frames=1140, both=22, served_only=1, shadow_only=0)


def test_a_cloudwatch_error_names_the_operation() -> None:
    client, stubber = _cw()
    stubber.add_client_error("list_metrics", "Throttling", "Rate exceeded")
    with stubber, pytest.raises(AwsError, match="cloudwatch.list_metrics: Throttling"):
        AwsFleet(
            region=REGION, artifact_bucket=BUCKET, clients={"cloudwatch": client}
        ).decision_counts("demo", T0, T0 + 60)


def _register(status: str, key: str, body: bytes) -> str:
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model_package_group(ModelPackageGroupName="lineguard-inspection")
    return sm.create_model_package(
        ModelPackageGroupName="lineguard-inspection",
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "123.dkr.ecr.eu-west-1.amazonaws.com/x:1",
                    "ModelDataUrl": f"s3://{BUCKET}/{key}",
                }
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def _tar(root: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(root.iterdir()):
            archive.add(path, arcname=path.name)
    return buffer.getvalue()


def test_fetch_takes_the_kept_package_not_a_training_candidate(aws, make_package, tmp_path) -> None:
    # training's model.tar.gz holds the kept package at its root and every candidate it chose
    # from under candidates/<name>/ (training/train.py); a candidate's name sorts first here
    kept = make_package("1.4.0")
    other = make_package("1.3.0")
    candidate = kept.root / "candidates" / "anomaly"
    shutil.copytree(other.root, candidate)
    marked = replace(other.manifest, thresholds=Thresholds(reject=0.99, manual=0.98))
    write_manifest(candidate, marked)
    arn = _register("Approved", "models/run-2/model.tar.gz", _tar(kept.root))
    root = AwsFleet(region=REGION, artifact_bucket=BUCKET).fetch_model_package(arn, tmp_path / "w")
    assert load_package(root).manifest.thresholds == kept.manifest.thresholds
    assert load_package(root / "candidates" / "anomaly").manifest.thresholds == marked.thresholds


def test_fetch_approved_model_package(aws, make_package, tmp_path) -> None:
    package = make_package("1.2.0")
    arn = _register("Approved", "models/run-1/model.tar.gz", _tar(package.root))
    root = AwsFleet(region=REGION, artifact_bucket=BUCKET).fetch_model_package(arn, tmp_path / "w")
    fetched = load_package(root)
    # the version comes from the registry: <trained major>.<ModelPackageVersion>.0
    number = boto3.client("sagemaker", region_name=REGION).describe_model_package(
        ModelPackageName=arn
    )["ModelPackageVersion"]
    assert fetched.manifest.version == f"1.{number}.0"
    assert fetched.manifest.sha256 == package.manifest.sha256


def test_fetch_refuses_unapproved_or_broken_packages(aws, make_package, tmp_path) -> None:
    package = make_package("1.2.0")
    api = AwsFleet(region=REGION, artifact_bucket=BUCKET)
    pending = _register("PendingManualApproval", "models/run-2/model.tar.gz", _tar(package.root))
    with pytest.raises(BadInputError, match="PendingManualApproval, not Approved"):
        api.fetch_model_package(pending, tmp_path / "a")
    (package.root / "model.onnx").write_bytes(b"tampered")
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.update_model_package(ModelPackageArn=pending, ModelApprovalStatus="Approved")
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET, Key="models/run-2/model.tar.gz", Body=_tar(package.root)
    )
    with pytest.raises(Exception, match="sha256"):
        api.fetch_model_package(pending, tmp_path / "b")

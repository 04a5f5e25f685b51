"""The synthesised policies, evaluated the way AWS IoT Core and IAM evaluate them.

The stand-in for ``aws iot test-authorization`` (which needs an account): a device provisioned
from the synthesised template, with a given serial, line and station, gets the plant-wide core
policy and its own policy rendered from the template; every MQTT call that the Greengrass
nucleus and LineGuard's components make must be allowed for it, and the same calls must be
denied to another device, to another plant's device and to the claim certificate. The token
exchange role is checked the same way against the S3, KMS and CloudWatch Logs calls made with
its credentials. The rules are in ``stacks/authorization.py``, each cited there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacks.authorization import (
    Decision,
    Request,
    evaluate_iam,
    evaluate_iot,
    mqtt_context,
    render_provisioning_value,
)
from stacks.config import load_plant
from stacks.constructs.provisioning.runtime import hook

from .conftest import PLANTS

ACCOUNT, REGION = "123456789012", "eu-west-1"
IOT = f"arn:aws:iot:{REGION}:{ACCOUNT}"
BUCKET = f"lineguard-artifacts-{ACCOUNT}-{REGION}"


# ------------------------------------------------------------------ the synthesised templates


def _resolve(value: Any, template: dict[str, Any], imports: dict[str, Any]) -> Any:
    """CloudFormation intrinsics as they resolve at deploy time, for the ones our policies use."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref" and arg.startswith("AWS::"):
            return {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}[arg]
        if key == "Fn::Join":
            return arg[0].join(str(_resolve(v, template, imports)) for v in arg[1])
        if key == "Fn::ImportValue":
            return _resolve(imports[arg], template, imports)
        if key == "Fn::GetAtt":
            logical, attribute = arg
            resource = template["Resources"].get(logical) or imports["__shared__"][logical]
            kind = resource["Type"]
            if (kind, attribute) == ("AWS::IoT::RoleAlias", "RoleAliasArn"):
                return f"{IOT}:rolealias/{resource['Properties']['RoleAlias']}"
            if (kind, attribute) == ("AWS::KMS::Key", "Arn"):
                return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{logical}"
            raise AssertionError(f"no model for Fn::GetAtt {arg}")
    if isinstance(value, dict):
        return {k: _resolve(v, template, imports) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, template, imports) for v in value]
    return value


@dataclass(frozen=True)
class Plant:
    """A synthesised plant stack, with what fleet provisioning gives a device from it."""

    name: str
    template: dict[str, Any]
    imports: dict[str, Any]

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.template["Resources"].items() if r["Type"] == kind}

    def iot_policy(self, name: str) -> dict[str, Any]:
        for resource in self.resources("AWS::IoT::Policy").values():
            if resource["Properties"].get("PolicyName") == name:
                document = resource["Properties"]["PolicyDocument"]
                return _resolve(document, self.template, self.imports)
        raise AssertionError(f"no IoT policy {name} in {self.name}")

    @property
    def template_body(self) -> dict[str, Any]:
        (template,) = self.resources("AWS::IoT::ProvisioningTemplate").values()
        return json.loads(template["Properties"]["TemplateBody"])

    def provision(self, serial: str, line: str, station: str) -> dict[str, Any]:
        """What the template gives a device the hook admits: thing name, attributes, policies."""
        settings = hook.HookSettings.load(self.hook_settings_file)
        request = {"SerialNumber": serial, "LineName": line, "StationName": station}
        answer = hook.decide(settings, request)
        assert answer["allowProvisioning"], (self.name, request)
        body = self.template_body
        parameters = {
            name: spec["Default"] for name, spec in body["Parameters"].items() if "Default" in spec
        }
        parameters.update(request, **answer["parameterOverrides"])
        thing = render_provisioning_value(body["Resources"]["thing"]["Properties"], parameters)
        policies = []
        for resource in body["Resources"].values():
            if resource["Type"] != "AWS::IoT::Policy":
                continue
            properties = render_provisioning_value(resource["Properties"], parameters)
            if "PolicyDocument" in properties:
                policies.append(json.loads(properties["PolicyDocument"]))
            else:
                policies.append(self.iot_policy(properties["PolicyName"]))
        return {"thing": thing, "policies": policies}

    @property
    def hook_settings_file(self) -> Path:
        (fn,) = [
            f
            for f in self.resources("AWS::Lambda::Function").values()
            if f["Properties"]["Handler"] == "hook.handler"
        ]
        asset = fn["Metadata"]["aws:asset:path"]
        return self.out / asset / "plant.json"

    @property
    def out(self) -> Path:
        return Path(self.imports["__out__"])

    def role_policies(self, role_fragment: str) -> list[dict[str, Any]]:
        """The identity policies attached to the role whose logical id contains the fragment."""
        (role,) = [k for k in self.resources("AWS::IAM::Role") if role_fragment in k]
        policies = []
        for policy in self.resources("AWS::IAM::Policy").values():
            if {"Ref": role} in policy["Properties"]["Roles"]:
                policies.append(
                    _resolve(policy["Properties"]["PolicyDocument"], self.template, self.imports)
                )
        return policies


def load_plant_stack(cdk_out: Path, plant: str) -> Plant:
    template = json.loads((cdk_out / f"LineGuard-Plant-{plant}.template.json").read_text())
    shared = json.loads(
        (cdk_out / f"LineGuard-Shared-{ACCOUNT}-{REGION}.template.json").read_text()
    )
    imports: dict[str, Any] = {
        output["Export"]["Name"]: output["Value"]
        for output in shared.get("Outputs", {}).values()
        if "Export" in output
    }
    imports["__shared__"] = shared["Resources"]
    imports["__out__"] = str(cdk_out)
    return Plant(plant, template, imports)


@pytest.fixture(scope="module")
def demo_stack(cdk_out: Path) -> Plant:
    return load_plant_stack(cdk_out, "demo")


@pytest.fixture(scope="module")
def large_stack(cdk_out: Path) -> Plant:
    return load_plant_stack(cdk_out, "example-large")


# ------------------------------------------------------------------ the calls devices make


def mqtt_calls(plant: str, thing: str, line: str, station: str) -> list[tuple[str, str, str]]:
    """(why, action, resource) for every MQTT call a LineGuard core device makes.

    The nucleus' topics: AWS IoT Jobs MQTT API for deployments (nucleus
    deployment/IotJobsHelper.java via the device SDK's IotJobsClient: notify, $next/get,
    <jobId>/update and their accepted/rejected replies), shadow deployments and ShadowManager
    (``$aws/things/<thing>/shadow/name/<shadow>/...``), fleet status
    (status/FleetStatusService.java) and telemetry (telemetry/TelemetryAgent.java).
    """
    jobs = f"$aws/things/{thing}/jobs"
    shadow = f"$aws/things/{thing}/shadow/name/AWSManagedGreengrassV2Deployment"
    identity = f"$aws/things/{thing}/shadow/name/lineguard-identity"
    ours = f"lineguard/{plant}/{line}/{station}/{thing}"
    calls = [
        ("first connection", "iot:Connect", f"client/{thing}"),
        ("51st subscription", "iot:Connect", f"client/{thing}#2"),
        ("101st subscription", "iot:Connect", f"client/{thing}#3"),
        # nucleus >= 2.18 mqttclient/StandaloneMqttConnector.java:42
        ("endpoint switch", "iot:Connect", f"client/{thing}#endpoint-switch"),
        ("fleet status", "iot:Publish", f"topic/$aws/things/{thing}/greengrassv2/health/json"),
        ("telemetry", "iot:Publish", f"topic/$aws/things/{thing}/greengrass/health/json"),
        (
            "token exchange",
            "iot:AssumeRoleWithCertificate",
            f"rolealias/lineguard-{plant}-token-exchange",
        ),
        ("inspector results", "iot:Publish", f"topic/{ours}/results"),
        ("inspector health", "iot:Publish", f"topic/{ours}/health"),
        ("results acknowledged", "iot:Subscribe", f"topicfilter/lineguard/{plant}/{thing}/ack"),
        ("results acknowledged", "iot:Receive", f"topic/lineguard/{plant}/{thing}/ack"),
    ]
    # deployment/IotJobsClientWrapper.java:43-56 — every jobs topic carries the namespace.
    ns = "namespace-aws-gg-deployment"
    calls.append(("jobs", "iot:Subscribe", f"topicfilter/{jobs}/notify-{ns}"))
    calls.append(("jobs", "iot:Receive", f"topic/{jobs}/notify-{ns}"))
    calls.append(("jobs", "iot:Publish", f"topic/{jobs}/$next/{ns}/get"))
    calls.append(("jobs", "iot:Publish", f"topic/{jobs}/job-1/{ns}/update"))
    for reply in ("$next/" + ns + "/get", "job-1/" + ns + "/update"):
        for outcome in ("accepted", "rejected"):
            calls.append(("jobs", "iot:Subscribe", f"topicfilter/{jobs}/{reply}/{outcome}"))
            calls.append(("jobs", "iot:Receive", f"topic/{jobs}/{reply}/{outcome}"))
    # deployment/ShadowDeploymentListener.java:91-103
    for suffix in ("update/accepted", "update/rejected", "get/accepted"):
        calls.append(("shadow deployments", "iot:Subscribe", f"topicfilter/{shadow}/{suffix}"))
        calls.append(("shadow deployments", "iot:Receive", f"topic/{shadow}/{suffix}"))
    for suffix in ("get", "update"):
        calls.append(("shadow deployments", "iot:Publish", f"topic/{shadow}/{suffix}"))
    # ShadowManager sync/CloudDataClient.java:109-110 subscribes; IotDataPlaneClientWrapper
    # reads and writes over HTTPS with the device certificate.
    for suffix in ("update/accepted", "delete/accepted"):
        calls.append(("identity shadow", "iot:Subscribe", f"topicfilter/{identity}/{suffix}"))
        calls.append(("identity shadow", "iot:Receive", f"topic/{identity}/{suffix}"))
    for action in ("iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"):
        calls.append(("identity shadow", action, f"thing/{thing}/lineguard-identity"))
    # The Greengrass data plane, authorised by the IoT policy (device certificate).
    for action in (
        "greengrass:ResolveComponentCandidates",
        "greengrass:GetComponentVersionArtifact",
        "greengrass:GetDeploymentConfiguration",
        "greengrass:ListThingGroupsForCoreDevice",
    ):
        calls.append(("data plane", action, "component/com.lineguard.Inspector"))
    return calls


DEMO_DEVICE = ("DEMO-0001", "line-1", "press-out")
OTHER_DEMO_DEVICE = ("DEMO-0002", "line-1", "final-check")


def request(action: str, resource: str, client_id: str, thing: str | None) -> Request:
    return Request(action, f"{IOT}:{resource}", mqtt_context(client_id, thing))


def test_a_provisioned_device_may_make_every_call_the_nucleus_and_components_make(
    demo_stack: Plant,
) -> None:
    serial, line, station = DEMO_DEVICE
    device = demo_stack.provision(serial, line, station)
    thing = device["thing"]["ThingName"]
    refused = [
        (why, action, resource)
        for why, action, resource in mqtt_calls("demo", thing, line, station)
        if not evaluate_iot(
            device["policies"],
            request(
                action,
                resource,
                thing if action != "iot:Connect" else resource.removeprefix("client/"),
                thing,
            ),
        ).allowed
    ]
    assert refused == []


def test_every_large_plant_station_may_publish_its_results(large_stack: Plant) -> None:
    plant = load_plant(PLANTS / "example-large.yaml")
    for i, line in enumerate(plant.lines):
        for j, station in enumerate(line.stations):
            device = large_stack.provision(f"LG01-{i:04d}{j:04d}", line.name, station.name)
            thing = device["thing"]["ThingName"]
            topic = f"topic/lineguard/example-large/{line.name}/{station.name}/{thing}/results"
            decision = evaluate_iot(device["policies"], request("iot:Publish", topic, thing, thing))
            assert decision.allowed, topic


def test_the_thing_carries_the_identity_the_device_gave(demo_stack: Plant) -> None:
    device = demo_stack.provision("DEMO-0002", "line-1", "final-check")
    attributes = device["thing"]["AttributePayload"]
    assert attributes["plant"] == "demo"
    assert (attributes["line"], attributes["station"], attributes["cameras"]) == (
        "line-1",
        "final-check",
        "2",
    )
    assert device["thing"]["ThingName"] == "lineguard-demo-DEMO-0002"


@pytest.mark.parametrize("other", ["DEMO-0002", "DEMO-00012", "DEMO-000"])
def test_no_call_reaches_another_devices_topics_or_client_id(demo_stack: Plant, other: str) -> None:
    serial, line, station = DEMO_DEVICE
    device = demo_stack.provision(serial, line, station)
    own = device["thing"]["ThingName"]
    victim = f"lineguard-demo-{other}"
    allowed = []
    for why, action, resource in mqtt_calls("demo", victim, line, station):
        if victim not in resource:
            continue  # plant-wide calls (token exchange, data plane) name no device
        client = resource.removeprefix("client/") if action == "iot:Connect" else own
        decision = evaluate_iot(device["policies"], request(action, resource, client, own))
        if decision.allowed:
            allowed.append((why, action, resource))
    assert allowed == []


def test_no_call_reaches_another_plant(demo_stack: Plant) -> None:
    serial, line, station = DEMO_DEVICE
    device = demo_stack.provision(serial, line, station)
    thing = device["thing"]["ThingName"]
    for topic in (
        f"lineguard/example-large/line-01/stamping/{thing}/results",
        f"lineguard/other/{line}/{station}/{thing}/health",
    ):
        decision = evaluate_iot(
            device["policies"], request("iot:Publish", f"topic/{topic}", thing, thing)
        )
        assert decision is Decision.IMPLICIT_DENY, topic


@pytest.mark.parametrize(
    "topic_filter",
    ["lineguard/demo/#", "lineguard/#", "$aws/things/+/jobs/notify", "#", "$aws/things/#"],
)
def test_wildcard_subscriptions_beyond_its_own_are_refused(
    demo_stack: Plant, topic_filter: str
) -> None:
    device = demo_stack.provision(*DEMO_DEVICE)
    thing = device["thing"]["ThingName"]
    decision = evaluate_iot(
        device["policies"], request("iot:Subscribe", f"topicfilter/{topic_filter}", thing, thing)
    )
    assert decision is Decision.IMPLICIT_DENY


def test_the_claim_certificate_can_only_provision(demo_stack: Plant) -> None:
    claim = [demo_stack.iot_policy("lineguard-demo-provisioning-claim")]
    client = "claim-7f3a"
    thing = "lineguard-demo-DEMO-0001"
    device_calls = [
        (action, resource)
        for _, action, resource in mqtt_calls("demo", thing, *DEMO_DEVICE[1:])
        if action != "iot:Connect"
    ]
    allowed = [
        (action, resource)
        for action, resource in device_calls
        if evaluate_iot(claim, request(action, resource, client, None)).allowed
    ]
    assert allowed == []
    template = "$aws/provisioning-templates/lineguard-demo-core-devices/provision/json"
    for action, resource in (
        ("iot:Connect", f"client/{client}"),
        ("iot:Publish", "topic/$aws/certificates/create/json"),
        ("iot:Subscribe", "topicfilter/$aws/certificates/create/json/accepted"),
        ("iot:Receive", "topic/$aws/certificates/create/json/accepted"),
        ("iot:Publish", f"topic/{template}"),
        ("iot:Receive", f"topic/{template}/accepted"),
    ):
        assert evaluate_iot(claim, request(action, resource, client, None)).allowed, resource


def test_a_device_of_another_plant_gets_nothing_of_this_plant(large_stack: Plant) -> None:
    device = large_stack.provision("LG01-00000001", "line-01", "stamping")
    thing = device["thing"]["ThingName"]
    calls = [
        (action, resource)
        for _, action, resource in mqtt_calls("demo", thing, *DEMO_DEVICE[1:])
        if "lineguard/demo/" in resource or "lineguard-demo-" in resource
    ]
    assert calls
    for action, resource in calls:
        decision = evaluate_iot(device["policies"], request(action, resource, thing, thing))
        assert not decision.allowed, (action, resource)


# ------------------------------------------------------------------ the token exchange role


def tes_request(action: str, resource: str, thing: str) -> Request:
    # [iot-creds]: the credentials provider sets credentials-iot:ThingName from the
    # x-amzn-iot-thingname header, which the nucleus sends (iot/IotCloudHelper.java).
    return Request(action, resource, {"credentials-iot:ThingName": thing})


def tes_calls(plant: Plant, thing: str) -> list[tuple[str, str]]:
    """(action, resource) for the AWS calls a core device makes with its TES credentials."""
    key = _resolve({"Fn::GetAtt": [_artifact_key(plant), "Arn"]}, plant.template, plant.imports)
    artifact = f"arn:aws:s3:::{BUCKET}/components/com.lineguard.Inspector/1.0.0/inspector.zip"
    log_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/greengrass/UserComponent/{REGION}/com.lineguard.Inspector"
    return [
        # S3Downloader: the bucket's region first, then the object (SSE-KMS: decrypt).
        ("s3:GetBucketLocation", f"arn:aws:s3:::{BUCKET}"),
        ("s3:GetObject", artifact),
        ("kms:Decrypt", key),
        # LogManager (aws.greengrass.LogManager: CloudWatchAttemptLogsProcessor).
        ("logs:CreateLogGroup", log_group),
        ("logs:CreateLogStream", f"{log_group}:log-stream:/2026/12/01/thing/{thing}"),
        ("logs:PutLogEvents", f"{log_group}:log-stream:/2026/12/01/thing/{thing}"),
        ("logs:DescribeLogStreams", f"{log_group}:log-stream:*"),
        # the inspector's sampler: its own prefix only
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/samples/{plant.name}/{thing}/2026-12-01/p1.png"),
    ]


def _artifact_key(plant: Plant) -> str:
    (key,) = [
        k
        for k, r in plant.imports["__shared__"].items()
        if r["Type"] == "AWS::KMS::Key"
        and r["Properties"].get("Description") == "LineGuard artifact bucket encryption"
    ]
    return key


def test_the_token_exchange_role_allows_every_call_the_nucleus_makes(demo_stack: Plant) -> None:
    policies = demo_stack.role_policies("TokenExchange")
    thing = "lineguard-demo-DEMO-0001"
    refused = [
        (action, resource)
        for action, resource in tes_calls(demo_stack, thing)
        if not evaluate_iam(policies, tes_request(action, resource, thing)).allowed
    ]
    assert refused == []


def test_the_token_exchange_role_denies_other_prefixes_and_devices(demo_stack: Plant) -> None:
    policies = demo_stack.role_policies("TokenExchange")
    thing = "lineguard-demo-DEMO-0001"
    for action, resource in (
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/samples/demo/lineguard-demo-DEMO-0002/x.png"),
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/samples/example-large/{thing}/x.png"),
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/components/com.lineguard.Inspector/9.9.9/x.zip"),
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/models/brick/1.0.0/model.onnx"),
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/datasets/x.zip"),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}"),
        ("s3:GetBucketLocation", "arn:aws:s3:::some-other-bucket"),
        (
            "logs:PutLogEvents",
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/lineguard/demo/provisioning-hook:log-stream:x",
        ),
    ):
        decision = evaluate_iam(policies, tes_request(action, resource, thing))
        assert decision is Decision.IMPLICIT_DENY, (action, resource)


# ------------------------------------------------------------------ the identity-sync function


def test_identity_sync_reads_this_plants_things_and_writes_only_their_identity_shadow(
    demo_stack: Plant,
) -> None:
    policies = demo_stack.role_policies("IdentityRole")
    own = f"{IOT}:thing/lineguard-demo-DEMO-0001"
    for action, resource in (
        ("iot:DescribeThing", own),
        ("iot:GetThingShadow", f"{own}/lineguard-identity"),
        ("iot:UpdateThingShadow", f"{own}/lineguard-identity"),
    ):
        assert evaluate_iam(policies, Request(action, resource)).allowed, (action, resource)
    for action, resource in (
        ("iot:UpdateThingShadow", f"{own}/AWSManagedGreengrassV2Deployment"),
        ("iot:UpdateThingShadow", own),  # the classic shadow
        ("iot:DescribeThing", f"{IOT}:thing/lineguard-example-large-LG01-00000001"),
        ("iot:UpdateThing", own),
    ):
        assert not evaluate_iam(policies, Request(action, resource)).allowed, (action, resource)


def test_the_identity_rule_listens_where_devices_publish_fleet_status(demo_stack: Plant) -> None:
    (rule,) = [
        r["Properties"]["TopicRulePayload"]
        for r in demo_stack.resources("AWS::IoT::TopicRule").values()
        if "identity" in r["Properties"]["TopicRulePayload"].get("Description", "")
    ]
    device = demo_stack.provision(*DEMO_DEVICE)
    thing = device["thing"]["ThingName"]
    topic = f"$aws/things/{thing}/greengrassv2/health/json"
    decision = evaluate_iot(
        device["policies"], request("iot:Publish", f"topic/{topic}", thing, thing)
    )
    assert decision.allowed
    assert "FROM '$aws/things/+/greengrassv2/health/json'" in rule["Sql"]
    assert "startswith(topic(3), 'lineguard-demo-')" in rule["Sql"]

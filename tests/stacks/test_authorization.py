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
    https_context,
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


@dataclass(frozen=True)
class Call:
    """One call a core device makes to AWS IoT: why, the action, its resource, over what."""

    why: str
    action: str
    resource: str  # relative to arn:aws:iot:<region>:<account>: unless it is a full ARN
    https: bool = False  # HTTPS with the device certificate (no MQTT session)

    @property
    def arn(self) -> str:
        return self.resource if self.resource.startswith("arn:") else f"{IOT}:{self.resource}"

    def request(self, own_thing: str) -> Request:
        """The request as the device ``own_thing`` makes it (a core device: no thing variables)."""
        if self.https:
            return Request(self.action, self.arn, https_context())
        client = (
            self.resource.removeprefix("client/") if self.action == "iot:Connect" else own_thing
        )
        return Request(self.action, self.arn, mqtt_context(client, own_thing, core_device=True))


def device_calls(plant: str, thing: str, line: str, station: str) -> list[Call]:
    """Every call to AWS IoT a LineGuard core device makes with its certificate.

    The nucleus: client ids <thing>, <thing>#N (mqttclient/MqttClient.java) and
    <thing>#endpoint-switch (>= 2.18, mqttclient/StandaloneMqttConnector.java); the AWS IoT Jobs
    MQTT API for deployments, every topic with the namespace-aws-gg-deployment suffix
    (deployment/IotJobsClientWrapper.java:43-56); the deployment shadow
    (deployment/ShadowDeploymentListener.java:91-103); fleet status
    (status/FleetStatusService.java) and telemetry (telemetry/TelemetryAgent.java); the
    Greengrass data plane over HTTPS with the certificate (util/GreengrassServiceClientFactory
    .java). ShadowManager: subscribes to update/accepted and delete/accepted of the identity
    shadow (sync/CloudDataClient.java:109-110) and reads it over HTTPS
    (sync/IotDataPlaneClientWrapper.java). The inspector: results, health and the ack topic.
    """
    own = f"$aws/things/{thing}"
    ns = "namespace-aws-gg-deployment"
    deployment_shadow = f"{own}/shadow/name/AWSManagedGreengrassV2Deployment"
    identity = f"{own}/shadow/name/lineguard-identity"
    ours = f"lineguard/{plant}/{line}/{station}/{thing}"
    gg = f"arn:aws:greengrass:{REGION}:{ACCOUNT}"
    calls = [
        Call("first connection", "iot:Connect", f"client/{thing}"),
        Call("51st subscription", "iot:Connect", f"client/{thing}#2"),
        Call("101st subscription", "iot:Connect", f"client/{thing}#3"),
        Call("endpoint switch", "iot:Connect", f"client/{thing}#endpoint-switch"),
        Call("fleet status", "iot:Publish", f"topic/{own}/greengrassv2/health/json"),
        Call("telemetry", "iot:Publish", f"topic/{own}/greengrass/health/json"),
        Call("inspector results", "iot:Publish", f"topic/{ours}/results"),
        Call("inspector health", "iot:Publish", f"topic/{ours}/health"),
        Call("results acknowledged", "iot:Subscribe", f"topicfilter/lineguard/{plant}/{thing}/ack"),
        Call("results acknowledged", "iot:Receive", f"topic/lineguard/{plant}/{thing}/ack"),
        Call("jobs", "iot:Subscribe", f"topicfilter/{own}/jobs/notify-{ns}"),
        Call("jobs", "iot:Receive", f"topic/{own}/jobs/notify-{ns}"),
        Call("jobs", "iot:Publish", f"topic/{own}/jobs/$next/{ns}/get"),
        Call("jobs", "iot:Publish", f"topic/{own}/jobs/job-1/{ns}/update"),
        Call("identity shadow", "iot:GetThingShadow", f"thing/{thing}/lineguard-identity", True),
        Call(
            "token exchange",
            "iot:AssumeRoleWithCertificate",
            f"rolealias/lineguard-{plant}-token-exchange",
            True,
        ),
    ]
    for reply in (f"$next/{ns}/get", f"job-1/{ns}/update"):
        for outcome in ("accepted", "rejected"):
            calls.append(Call("jobs", "iot:Subscribe", f"topicfilter/{own}/jobs/{reply}/{outcome}"))
            calls.append(Call("jobs", "iot:Receive", f"topic/{own}/jobs/{reply}/{outcome}"))
    for suffix in ("update/accepted", "update/rejected", "get/accepted"):
        calls.append(
            Call("deployment shadow", "iot:Subscribe", f"topicfilter/{deployment_shadow}/{suffix}")
        )
        calls.append(
            Call("deployment shadow", "iot:Receive", f"topic/{deployment_shadow}/{suffix}")
        )
    for suffix in ("get", "update"):
        calls.append(
            Call("deployment shadow", "iot:Publish", f"topic/{deployment_shadow}/{suffix}")
        )
    for suffix in ("update/accepted", "delete/accepted"):
        calls.append(Call("identity shadow", "iot:Subscribe", f"topicfilter/{identity}/{suffix}"))
        calls.append(Call("identity shadow", "iot:Receive", f"topic/{identity}/{suffix}"))
    component = f"{gg}:components:com.lineguard.Inspector"
    for action, resource in (
        ("greengrass:ResolveComponentCandidates", f"{component}:versions:1.0.0"),
        ("greengrass:GetComponentVersionArtifact", f"{component}:versions:1.0.0"),
        ("greengrass:GetDeploymentConfiguration", f"{gg}:coreDevices:{thing}"),
        ("greengrass:ListThingGroupsForCoreDevice", f"{gg}:coreDevices:{thing}"),
    ):
        calls.append(Call("data plane", action, resource, True))
    return calls


def forbidden_own_calls(plant: str, thing: str) -> list[Call]:
    """Calls a device must not make even on its own resources: its identity is the cloud's."""
    identity = f"$aws/things/{thing}/shadow/name/lineguard-identity"
    return [
        Call("rewrite own identity", "iot:Publish", f"topic/{identity}/update"),
        Call(
            "rewrite own identity",
            "iot:UpdateThingShadow",
            f"thing/{thing}/lineguard-identity",
            True,
        ),
        Call(
            "delete own identity",
            "iot:DeleteThingShadow",
            f"thing/{thing}/lineguard-identity",
            True,
        ),
        Call("classic shadow", "iot:UpdateThingShadow", f"thing/{thing}", True),
    ]


DEMO_DEVICE = ("DEMO-0001", "line-1", "press-out")


def request(action: str, resource: str, client_id: str, thing: str | None) -> Request:
    return Request(action, f"{IOT}:{resource}", mqtt_context(client_id, thing, core_device=True))


def test_a_provisioned_device_may_make_every_call_the_nucleus_and_components_make(
    demo_stack: Plant,
) -> None:
    serial, line, station = DEMO_DEVICE
    device = demo_stack.provision(serial, line, station)
    thing = device["thing"]["ThingName"]
    refused = [
        call
        for call in device_calls("demo", thing, line, station)
        if not evaluate_iot(device["policies"], call.request(thing)).allowed
    ]
    assert refused == []


def test_a_device_cannot_rewrite_its_own_identity(demo_stack: Plant) -> None:
    device = demo_stack.provision(*DEMO_DEVICE)
    thing = device["thing"]["ThingName"]
    allowed = [
        call
        for call in forbidden_own_calls("demo", thing)
        if evaluate_iot(device["policies"], call.request(thing)).allowed
    ]
    assert allowed == []


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
    assert device["thing"]["ThingName"] == "lineguard-demo-DEMO-0002"
    assert device["thing"]["AttributePayload"] == {
        "line": "line-1",
        "station": "final-check",
        "cameras": "2",
    }
    # IoT developer guide, thing-types: "Things without a thing type can have up to three
    # attributes"
    assert "ThingTypeName" not in device["thing"]


@pytest.mark.parametrize("other", ["DEMO-0002", "DEMO-00012", "DEMO-000"])
def test_no_call_reaches_another_devices_topics_or_client_id(demo_stack: Plant, other: str) -> None:
    device = demo_stack.provision(*DEMO_DEVICE)
    own = device["thing"]["ThingName"]
    victim = f"lineguard-demo-{other}"
    calls = device_calls("demo", victim, *DEMO_DEVICE[1:]) + forbidden_own_calls("demo", victim)
    allowed = [
        call
        for call in calls
        # the token exchange names no device; the Greengrass data plane takes "*" only (the
        # guide's minimal policy), so any device may resolve the account's components
        if victim in call.resource and not call.action.startswith("greengrass:")
        if evaluate_iot(device["policies"], call.request(own)).allowed
    ]
    assert allowed == []


def test_the_longest_serial_the_hook_admits_fits_aws_iots_limits(large_stack: Plant) -> None:
    settings = hook.HookSettings.load(large_stack.hook_settings_file)
    longest = "L" * settings.max_serial_length
    wide = hook.HookSettings.from_dict(
        {**json.loads(large_stack.hook_settings_file.read_text()), "serial_pattern": ".+"}
    )
    request = {"LineName": "line-01", "StationName": "stamping"}
    assert hook.decide(wide, {"SerialNumber": longest, **request})["allowProvisioning"]
    assert hook.decide(wide, {"SerialNumber": longest + "L", **request}) == {
        "allowProvisioning": False
    }
    body = large_stack.template_body
    document = render_provisioning_value(
        body["Resources"]["devicePolicy"]["Properties"]["PolicyDocument"],
        {"SerialNumber": longest},
    )
    # CreatePolicy: "maximum length of 2048, excluding whitespace"; CreateThing: 128
    assert len("".join(document.split())) <= 2048
    assert len(f"lineguard-example-large-{longest}") <= 128


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
    client = "7f3a9c2e-1b4d-4e8a-9f00-5c6d7e8f9a0b"  # the plugin's default: a random UUID
    thing = "lineguard-demo-DEMO-0001"
    allowed = [
        call
        for call in device_calls("demo", thing, *DEMO_DEVICE[1:])
        if evaluate_iot(
            claim,
            Request(
                call.action,
                call.arn,
                https_context()
                if call.https
                else mqtt_context(
                    call.resource.removeprefix("client/")
                    if call.action == "iot:Connect"
                    else client,
                    None,
                ),
            ),
        ).allowed
    ]
    # connecting as a device would drop that device: IoT keeps one connection per client id
    assert allowed == []
    template = "$aws/provisioning-templates/lineguard-demo-core-devices/provision/json"
    for action, resource in (
        ("iot:Connect", f"client/{client}"),
        ("iot:Publish", "topic/$aws/certificates/create/json"),
        ("iot:Subscribe", "topicfilter/$aws/certificates/create/json/accepted"),
        ("iot:Receive", "topic/$aws/certificates/create/json/accepted"),
        ("iot:Publish", "topic/$aws/certificates/create-from-csr/json"),
        ("iot:Receive", "topic/$aws/certificates/create-from-csr/json/accepted"),
        ("iot:Publish", f"topic/{template}"),
        ("iot:Receive", f"topic/{template}/accepted"),
    ):
        decision = evaluate_iot(
            claim, Request(action, f"{IOT}:{resource}", mqtt_context(client, None))
        )
        assert decision.allowed, resource


def test_a_device_of_another_plant_gets_nothing_of_this_plant(large_stack: Plant) -> None:
    device = large_stack.provision("LG01-00000001", "line-01", "stamping")
    thing = device["thing"]["ThingName"]
    calls = [
        call
        for call in device_calls("demo", thing, *DEMO_DEVICE[1:])
        if "lineguard/demo/" in call.resource or "lineguard-demo-" in call.resource
    ]
    assert calls
    for call in calls:
        assert not evaluate_iot(device["policies"], call.request(thing)).allowed, call


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


def uploader_puts(plant: str, thing: str) -> list[str]:
    """The object ARNs of the sample uploader's PutObject calls, built by its own key function
    for every layout it writes (edge_component/inspector/uploader.py)."""
    from inspector.journal import LabelUpload, UploadCandidate
    from inspector.messages import Identity
    from inspector.uploader import label_key, object_key

    identity = Identity(plant, "line-1", "station-1", thing)
    arns = []
    for label, defect_type, decision in (
        ("good", None, "manual"),
        ("defect", "scratch", "reject"),
        ("defect", None, "manual"),
        (None, None, "pass"),
        (None, None, "manual"),
    ):
        candidate = UploadCandidate(
            id=1, ts=1_800_000_000.0, part_id="cam0-lfls2x-000123 /x", reason=decision,
            score=0.3, seq=1_800_000_000_456, size=10, result={"ts": "2027-01-15T08:00:00.000Z",
            "decision": decision}, review_decision=decision, label=label,
            defect_type=defect_type, operator="alice" if label else None,
            labelled_at=None, review_ts=None, review_model=None,
        )  # fmt: skip
        arns.append(f"arn:aws:s3:::{BUCKET}/{object_key(identity, candidate, 'png')}")
    # the verdicts, beside the images (labels/<day>_<part>_<result seq>_r<revision>.json)
    verdict = LabelUpload(
        seq=1_800_000_000_457, part_id="cam0-lfls2x-000123 /x", result_ts="2027-01-15T08:00:00.000Z",
        message={"result_seq": 1_800_000_000_456, "revision": 2, "label": "defect"},
    )  # fmt: skip
    arns.append(f"arn:aws:s3:::{BUCKET}/{label_key(identity, verdict)}")
    assert arns[-1].endswith(
        f"/{thing}/labels/20270115_cam0-lfls2x-000123--x_1800000000456_r2.json"
    )
    return arns


def test_the_uploaders_puts_are_allowed_on_its_own_prefix_only(demo_stack: Plant) -> None:
    policies = demo_stack.role_policies("TokenExchange")
    thing, other = "lineguard-demo-DEMO-0001", "lineguard-demo-DEMO-0002"
    key = _resolve(
        {"Fn::GetAtt": [_artifact_key(demo_stack), "Arn"]}, demo_stack.template, demo_stack.imports
    )
    # the bucket encrypts with SSE-KMS by default: S3 asks KMS for a data key as the caller
    # (S3 user guide, UsingKMSEncryption: PutObject needs kms:GenerateDataKey on the key)
    assert evaluate_iam(policies, tes_request("kms:GenerateDataKey", key, thing)).allowed
    for arn in uploader_puts("demo", thing):
        assert evaluate_iam(policies, tes_request("s3:PutObject", arn, thing)).allowed, arn
    # another device's prefix, whether the device names itself or the other one in the key
    for arn in uploader_puts("demo", other):
        decision = evaluate_iam(policies, tes_request("s3:PutObject", arn, thing))
        assert decision is Decision.IMPLICIT_DENY, arn
    for arn in uploader_puts("example-large", thing):  # another plant's prefix
        assert not evaluate_iam(policies, tes_request("s3:PutObject", arn, thing)).allowed, arn


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


def test_the_identity_rules_listen_where_the_device_and_iot_publish(demo_stack: Plant) -> None:
    sql = sorted(
        r["Properties"]["TopicRulePayload"]["Sql"]
        for r in demo_stack.resources("AWS::IoT::TopicRule").values()
        if "identity sync" in r["Properties"]["TopicRulePayload"].get("Description", "")
    )
    assert sql == [
        "SELECT clientId AS thing FROM '$aws/events/presence/connected/+' "
        "WHERE startswith(clientId, 'lineguard-demo-')",
        "SELECT topic(3) AS thing FROM '$aws/things/+/greengrassv2/health/json' "
        "WHERE startswith(topic(3), 'lineguard-demo-')",
    ]
    device = demo_stack.provision(*DEMO_DEVICE)
    thing = device["thing"]["ThingName"]
    # the fleet-status rule only sees what the device may publish
    fleet_status = Call(
        "fleet status", "iot:Publish", f"topic/$aws/things/{thing}/greengrassv2/health/json"
    )
    assert evaluate_iot(device["policies"], fleet_status.request(thing)).allowed

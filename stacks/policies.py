"""IoT policy documents of a plant (plain Python: the stacks and ``stacks.describe`` share them)."""

from __future__ import annotations

import json
from typing import Any

from stacks.config import PlantConfig

# Greengrass core devices get IoT policies with literal thing names: the developer guide
# (device-auth, "Minimal AWS IoT policy for AWS IoT Greengrass V2 core devices") says thing policy
# variables (iot:Connection.Thing.*) are not supported for core devices — the nucleus connects
# with client ids <thing>#2, #3, ... as well, which never equal the thing name. So each device
# gets its own policy from the provisioning template, with its thing name written in.
THING_PARAMETER = "SerialNumber"
# Upstream topics a device publishes: lineguard/<plant>/<line>/<station>/<thing>/<kind>
UPSTREAM_KINDS = ("results", "health")
# The named shadow that carries a device's identity to its components (docs/identity.md).
IDENTITY_SHADOW = "lineguard-identity"
# Downstream: the cloud acknowledges results here (lineguard/<plant>/<thing>/<kind>).
DOWNSTREAM_KINDS = ("ack",)


def role_alias_arn(plant: PlantConfig) -> str:
    """ARN of the plant's token exchange role alias."""
    return f"arn:aws:iot:{plant.region}:{plant.account}:rolealias/{plant.role_alias_name}"


def _arn(plant: PlantConfig) -> str:
    return f"arn:aws:iot:{plant.region}:{plant.account}"


def core_device_policy_document(plant: PlantConfig, alias_arn: str | None = None) -> dict[str, Any]:
    """The plant-wide part of every core device's IoT policy: token exchange, Greengrass calls.

    Nothing here names a device, so ``cdk deploy`` keeps it up to date on every device; what a
    device may connect as and publish or receive is in :func:`device_policy_document`.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TokenExchange",
                "Effect": "Allow",
                "Action": ["iot:AssumeRoleWithCertificate"],
                "Resource": [alias_arn or role_alias_arn(plant)],
            },
            {
                # These data-plane actions take no resource ARN narrower than "*" (minimal
                # policy in the developer guide's device-auth page).
                "Sid": "GreengrassDataPlane",
                "Effect": "Allow",
                "Action": [
                    "greengrass:GetComponentVersionArtifact",
                    "greengrass:ResolveComponentCandidates",
                    "greengrass:GetDeploymentConfiguration",
                    "greengrass:ListThingGroupsForCoreDevice",
                ],
                "Resource": ["*"],
            },
        ],
    }


# AWS IoT CreatePolicy: "policyDocument must have a minimum length of 1, with a maximum length of
# 2048, excluding whitespace" (AWS IoT API reference, CreatePolicy). Thing names: at most 128
# characters (CreateThing, thingName).
MAX_POLICY_CHARS = 2048
MAX_THING_NAME = 128
# The named shadow the nucleus uses for deployments to a single thing (nucleus
# deployment/ShadowDeploymentListener.java DEPLOYMENT_SHADOW_NAME).
DEPLOYMENT_SHADOW = "AWSManagedGreengrassV2Deployment"


def device_topics(plant: PlantConfig, thing: str) -> dict[str, list[str]]:
    """The MQTT topics (and topic filters) of one core device, by IoT policy action.

    Kept short on purpose: the rendered policy must stay under :data:`MAX_POLICY_CHARS`.
    """
    own = f"$aws/things/{thing}"
    # The nucleus (developer guide device-auth, "Minimal AWS IoT policy for AWS IoT Greengrass
    # V2 core devices"; nucleus deployment/IotJobsClientWrapper.java, ShadowDeploymentListener
    # .java): IoT jobs and the deployment shadow both ways; it publishes fleet status on
    # greengrassv2/health/json (status/FleetStatusService.java) and telemetry on
    # greengrass/health/json (telemetry/TelemetryAgent.java) — "greengrass*" is both.
    # ShadowManager subscribes to update/accepted and delete/accepted of the identity shadow
    # (sync/CloudDataClient.java) and reads it over HTTPS; with direction cloudToDevice it never
    # writes the cloud copy, so the device publishes to no shadow but the deployment shadow:
    # the cloud owns its identity.
    inbound = [f"{own}/*", *(f"lineguard/{plant.name}/{thing}/{k}" for k in DOWNSTREAM_KINDS)]
    return {
        # lineguard/<plant>/<line>/<station>/<thing>/results|health (UPSTREAM_KINDS)
        "publish": [
            f"lineguard/{plant.name}/*/*/{thing}/*",
            f"{own}/greengrass*/health/json",
            f"{own}/jobs/*",
            f"{own}/shadow/name/{DEPLOYMENT_SHADOW}/*",
        ],
        "subscribe": inbound,
        "receive": inbound,
    }


def device_policy_document(plant: PlantConfig, thing: str) -> dict[str, Any]:
    """One core device's own IoT policy: its client ids and its topics, thing name literal.

    Its ARNs leave region and account as ``*``: an IoT policy only ever authorizes requests in
    its own account and region, and the shorter ARNs keep the document within the 2,048
    characters CreatePolicy takes.
    """
    arn = "arn:aws:iot:*:*"
    topics = device_topics(plant, thing)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # The nucleus opens more connections as <thing>#2, <thing>#3, ... (one per 50
                # subscriptions) and <thing>#endpoint-switch (mqttclient/MqttClient.java,
                # StandaloneMqttConnector.java); "#" is literal in a policy.
                "Effect": "Allow",
                "Action": ["iot:Connect"],
                "Resource": [f"{arn}:client/{thing}", f"{arn}:client/{thing}#*"],
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Publish"],
                "Resource": [f"{arn}:topic/{t}" for t in topics["publish"]],
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Subscribe"],
                "Resource": [f"{arn}:topicfilter/{t}" for t in topics["subscribe"]],
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Receive"],
                "Resource": [f"{arn}:topic/{t}" for t in topics["receive"]],
            },
            {
                # ShadowManager reads the cloud shadow over the IoT data-plane HTTPS API with the
                # device certificate (sync/IotDataPlaneClientFactory.java), an IoT action on
                # thing/<thing>/<shadow> (iot-action-resources).
                "Effect": "Allow",
                "Action": ["iot:GetThingShadow"],
                "Resource": [f"{arn}:thing/{thing}/{IDENTITY_SHADOW}"],
            },
        ],
    }


def max_serial_length(plant: PlantConfig) -> int:
    """The longest serial whose thing name and device policy stay within AWS IoT's limits."""
    base = plant.thing_name("")
    rendered = json.dumps(device_policy_document(plant, base), separators=(",", ":"))
    occurrences = rendered.count(base)
    by_policy = (MAX_POLICY_CHARS - len(rendered)) // occurrences
    return min(by_policy, MAX_THING_NAME - len(base))


_PLACEHOLDER = "\x00thing\x00"


def device_policy_template(plant: PlantConfig) -> dict[str, Any]:
    """:func:`device_policy_document` as a provisioning-template value: ``Fn::Join`` of its JSON.

    The template's ``PolicyDocument`` is the policy as a JSON string, and intrinsic functions
    may build it (IoT developer guide, provision-template "Policy resources" and "Intrinsic
    functions"); without a ``PolicyName`` the policy's name is a hash of the document, so each
    device gets its own policy and re-provisioning the same serial reuses it.
    """
    text = json.dumps(
        device_policy_document(plant, plant.thing_name(_PLACEHOLDER)), separators=(",", ":")
    )
    # json.dumps escapes the NUL characters: split on the escaped form.
    marker = json.dumps(_PLACEHOLDER)[1:-1]
    pieces: list[Any] = []
    for i, chunk in enumerate(text.split(marker)):
        if i:
            pieces.append({"Ref": THING_PARAMETER})
        if chunk:
            pieces.append(chunk)
    return {"Fn::Join": ["", pieces]}


def claim_policy_document(plant: PlantConfig) -> dict[str, Any]:
    """What a claim certificate may do: only the fleet provisioning MQTT API of this template."""
    arn = f"arn:aws:iot:{plant.region}:{plant.account}"
    template = plant.provisioning_template_name
    topics = [
        "$aws/certificates/create/json",
        "$aws/certificates/create/json/*",
        # the plugin's CSR mode (csrPath): CreateCertificateFromCsr (provision-wo-cert)
        "$aws/certificates/create-from-csr/json",
        "$aws/certificates/create-from-csr/json/*",
        f"$aws/provisioning-templates/{template}/provision/json",
        f"$aws/provisioning-templates/{template}/provision/json/*",
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # The claim certificate is shared by devices that have no thing name yet, so the
                # client id cannot be pinned; everything it can do after connecting is below.
                "Sid": "ConnectForProvisioning",
                "Effect": "Allow",
                "Action": ["iot:Connect"],
                "Resource": [f"{arn}:client/*"],
            },
            {
                # ...but never as a device: IoT keeps one connection per client id, so a claim
                # certificate connecting as lineguard-... would drop that device. The plugin
                # connects with a random client id unless deviceId is set.
                "Sid": "NeverAsADevice",
                "Effect": "Deny",
                "Action": ["iot:Connect"],
                "Resource": [f"{arn}:client/lineguard-*"],
            },
            {
                "Sid": "ProvisioningTopics",
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [f"{arn}:topic/{t}" for t in topics],
            },
            {
                "Sid": "ProvisioningTopicFilters",
                "Effect": "Allow",
                "Action": ["iot:Subscribe"],
                "Resource": [f"{arn}:topicfilter/{t}" for t in topics],
            },
        ],
    }


def provisioning_template_body(plant: PlantConfig) -> dict[str, Any]:
    """The provisioning template: thing and identity attributes, groups, cert, both policies.

    The device sends ``SerialNumber``, ``LineName`` and ``StationName``; the pre-provisioning
    hook checks them against the plant file and sets ``RingName`` and ``CameraCount`` (whatever
    the device sends for those is overridden). The thing's attributes are the device's identity
    (docs/identity.md).
    """
    return {
        "Parameters": {
            THING_PARAMETER: {"Type": "String"},
            "LineName": {"Type": "String"},
            "StationName": {"Type": "String"},
            # Set by the pre-provisioning hook.
            "RingName": {"Type": "String", "Default": plant.rings[-1].name},
            "CameraCount": {"Type": "String", "Default": "1"},
            "AWS::IoT::Certificate::Id": {"Type": "String"},
        },
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "OverrideSettings": {
                    "AttributePayload": "REPLACE",
                    "ThingGroups": "REPLACE",
                    "ThingTypeName": "REPLACE",
                },
                "Properties": {
                    "ThingName": {
                        "Fn::Join": ["", [f"lineguard-{plant.name}-", {"Ref": THING_PARAMETER}]]
                    },
                    # A thing without a thing type has at most three attributes (IoT developer
                    # guide, thing-types). The plant and serial are in the thing name, the ring
                    # is its ring group.
                    "AttributePayload": {
                        "line": {"Ref": "LineName"},
                        "station": {"Ref": "StationName"},
                        "cameras": {"Ref": "CameraCount"},
                    },
                    "ThingGroups": [
                        {"Fn::Join": ["", [f"lineguard-{plant.name}-line-", {"Ref": "LineName"}]]},
                        {"Fn::Join": ["", [f"lineguard-{plant.name}-ring-", {"Ref": "RingName"}]]},
                    ],
                },
            },
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                    "Status": "Active",
                },
            },
            # The plant-wide policy, kept current by cdk deploy.
            "policy": {
                "Type": "AWS::IoT::Policy",
                "Properties": {"PolicyName": plant.core_policy_name},
            },
            # This device's own policy, with its thing name written in.
            "devicePolicy": {
                "Type": "AWS::IoT::Policy",
                "Properties": {"PolicyDocument": device_policy_template(plant)},
            },
        },
    }

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


def device_topics(plant: PlantConfig, thing: str) -> dict[str, list[str]]:
    """The MQTT topics (and topic filters) of one core device, by IoT policy action."""
    own = f"$aws/things/{thing}"
    # The nucleus (developer guide device-auth, "Minimal AWS IoT policy for AWS IoT Greengrass
    # V2 core devices"): IoT jobs (deployments) and shadows (ShadowManager, shadow deployments)
    # both ways; it publishes fleet status on greengrassv2/health/json and telemetry on
    # greengrass/health/json.
    nucleus = [f"{own}/jobs/*", f"{own}/shadow/*"]
    health = [f"{own}/greengrassv2/health/json", f"{own}/greengrass/health/json"]
    upstream = [f"lineguard/{plant.name}/*/*/{thing}/{kind}" for kind in UPSTREAM_KINDS]
    downstream = [f"lineguard/{plant.name}/{thing}/{kind}" for kind in DOWNSTREAM_KINDS]
    return {
        "publish": [*upstream, *health, *nucleus],
        "subscribe": [*nucleus, *downstream],
        "receive": [*nucleus, *downstream],
    }


def device_policy_document(plant: PlantConfig, thing: str) -> dict[str, Any]:
    """One core device's own IoT policy: its client ids and its topics, thing name literal."""
    arn = _arn(plant)
    topics = device_topics(plant, thing)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # The nucleus opens more connections as <thing>#2, <thing>#3, ... when one
                # connection's subscriptions are full ("#" is literal in a policy).
                "Sid": "ConnectAsOwnThing",
                "Effect": "Allow",
                "Action": ["iot:Connect"],
                "Resource": [f"{arn}:client/{thing}", f"{arn}:client/{thing}#*"],
            },
            {
                "Sid": "PublishOwnTopics",
                "Effect": "Allow",
                "Action": ["iot:Publish"],
                "Resource": [f"{arn}:topic/{t}" for t in topics["publish"]],
            },
            {
                "Sid": "SubscribeOwnTopics",
                "Effect": "Allow",
                "Action": ["iot:Subscribe"],
                "Resource": [f"{arn}:topicfilter/{t}" for t in topics["subscribe"]],
            },
            {
                "Sid": "ReceiveOwnTopics",
                "Effect": "Allow",
                "Action": ["iot:Receive"],
                "Resource": [f"{arn}:topic/{t}" for t in topics["receive"]],
            },
            {
                # ShadowManager reads and writes the cloud shadows over the IoT data-plane HTTPS
                # API with the device certificate (shadow-manager-component, "Requirements";
                # ShadowManager sync/IotDataPlaneClientFactory.java), so these are IoT actions
                # on the thing (iot-action-resources: thing/<thing>/<shadow>).
                "Sid": "OwnIdentityShadow",
                "Effect": "Allow",
                "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"],
                "Resource": [f"{arn}:thing/{thing}/{IDENTITY_SHADOW}"],
            },
        ],
    }


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
                    "AttributePayload": {
                        "plant": plant.name,
                        "line": {"Ref": "LineName"},
                        "station": {"Ref": "StationName"},
                        "cameras": {"Ref": "CameraCount"},
                        "ring": {"Ref": "RingName"},
                        "serial": {"Ref": THING_PARAMETER},
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

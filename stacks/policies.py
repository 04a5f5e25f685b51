"""IoT policy documents of a plant (plain Python: the stacks and ``stacks.describe`` share them)."""

from __future__ import annotations

from typing import Any

from stacks.config import PlantConfig

THING = "${iot:Connection.Thing.ThingName}"
# Upstream topics a device publishes: lineguard/<plant>/<line>/<station>/<thing>/<kind>
UPSTREAM_KINDS = ("results", "health")
# Greengrass nucleus: deployments arrive as jobs and shadows; the nucleus talks on these.
AWS_TOPIC_KINDS = ("greengrass", "jobs", "shadow")


def role_alias_arn(plant: PlantConfig) -> str:
    """ARN of the plant's token exchange role alias."""
    return f"arn:aws:iot:{plant.region}:{plant.account}:rolealias/{plant.role_alias_name}"


def core_device_policy_document(plant: PlantConfig, alias_arn: str | None = None) -> dict[str, Any]:
    """The core-device IoT policy: own client id, own topics, role alias, Greengrass data plane."""
    arn = f"arn:aws:iot:{plant.region}:{plant.account}"
    own_aws = [f"$aws/things/{THING}/{kind}/*" for kind in AWS_TOPIC_KINDS]
    upstream = [f"lineguard/{plant.name}/*/*/{THING}/{kind}" for kind in UPSTREAM_KINDS]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectAsOwnThingName",
                "Effect": "Allow",
                "Action": ["iot:Connect"],
                "Resource": [f"{arn}:client/{THING}"],
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Sid": "PublishOwnTopics",
                "Effect": "Allow",
                "Action": ["iot:Publish"],
                "Resource": [f"{arn}:topic/{t}" for t in upstream + own_aws],
            },
            {
                "Sid": "SubscribeOwnTopics",
                "Effect": "Allow",
                "Action": ["iot:Subscribe"],
                "Resource": [f"{arn}:topicfilter/{t}" for t in own_aws],
            },
            {
                "Sid": "ReceiveOwnTopics",
                "Effect": "Allow",
                "Action": ["iot:Receive"],
                "Resource": [f"{arn}:topic/{t}" for t in own_aws],
            },
            {
                "Sid": "TokenExchange",
                "Effect": "Allow",
                "Action": ["iot:AssumeRoleWithCertificate"],
                "Resource": [alias_arn or role_alias_arn(plant)],
            },
            {
                # These data-plane actions take no resource ARN narrower than "*".
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
    """The provisioning template: thing from the serial, line + ring groups, cert, core policy."""
    return {
        "Parameters": {
            "SerialNumber": {"Type": "String"},
            "LineName": {"Type": "String"},
            # Set by the pre-provisioning hook; whatever the device sends is overridden.
            "RingName": {"Type": "String", "Default": plant.rings[-1].name},
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
                        "Fn::Join": ["", [f"lineguard-{plant.name}-", {"Ref": "SerialNumber"}]]
                    },
                    "AttributePayload": {
                        "plant": plant.name,
                        "line": {"Ref": "LineName"},
                        "ring": {"Ref": "RingName"},
                        "serial": {"Ref": "SerialNumber"},
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
            "policy": {
                "Type": "AWS::IoT::Policy",
                "Properties": {"PolicyName": plant.core_policy_name},
            },
        },
    }

"""Fleet provisioning by claim: template, claim policy, provisioning role and pre-provisioning hook."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.config import PlantConfig
from stacks.constructs._nag import acknowledge_wildcard, arn_text
from stacks.constructs._own_log_group import function_reason, own_log_group
from stacks.policies import (
    claim_policy_document,
    max_serial_length,
    provisioning_template_body,
)

RUNTIME_DIR = Path(__file__).parent / "runtime"
HOOK_CONCURRENCY = 10  # reserved concurrent executions of the pre-provisioning hook
HOOK_SOURCE = RUNTIME_DIR / "hook.py"
MIN_SERIAL_LENGTH = 8  # a plant whose serials cannot be this long is refused
SETTINGS_FILE = "plant.json"  # read by the hook beside itself (runtime/hook.py)


def hook_settings(plant: PlantConfig) -> dict[str, Any]:
    """The hook's ``plant.json``, from the plant file."""
    return {
        "plant": plant.name,
        "serial_pattern": plant.provisioning.serial_pattern,
        "allow_list": list(plant.provisioning.allow_list),
        "lines": {line.name: {s.name: s.cameras for s in line.stations} for line in plant.lines},
        "rings": [[r.name, r.percent] for r in plant.rings],
        # the thing name and the device's own policy must stay within AWS IoT's limits
        "max_serial_length": max_serial_length(plant),
    }


def hook_code(scope: Construct, plant: PlantConfig) -> lambda_.Code:
    """The hook's code asset: ``hook.py`` and the plant's ``plant.json`` (:func:`hook_settings`).

    The plant's lines and stations travel in the code, not the environment: a function's
    environment variables share 4 KB (Lambda quotas, ``gettingstarted-limits.html``), which a
    large plant's lines exceed. The source is assembled in the cloud assembly's directory, which
    the CDK stages it from.
    """
    stage = cdk.Stage.of(scope)
    assert stage is not None, "the hook must be inside an app"
    staging = Path(stage.outdir) / f".hook-source-{plant.name}"
    shutil.rmtree(staging, ignore_errors=True)  # nothing left over from an earlier synth
    staging.mkdir(parents=True)
    shutil.copyfile(HOOK_SOURCE, staging / HOOK_SOURCE.name)
    settings = json.dumps(hook_settings(plant), sort_keys=True, separators=(",", ":"))
    (staging / SETTINGS_FILE).write_text(settings + "\n", encoding="utf-8")
    return lambda_.Code.from_asset(str(staging))


class FleetProvisioning(Construct):
    """Provisioning template, claim policy, provisioning role and pre-provisioning hook.

    Attributes:
        template: the provisioning template.
        claim_policy: IoT policy to attach to the claim certificate.
        provisioning_role: the role IoT assumes to create things and attach policies.
        hook: the pre-provisioning hook function.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        core_policy: iot.CfnPolicy,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        if max_serial_length(plant) < MIN_SERIAL_LENGTH:
            raise ValueError(
                f"plant {plant.name}: serials could have at most {max_serial_length(plant)} "
                "characters within AWS IoT's 128-character thing names and 2,048-character "
                "policies; use a shorter plant name"
            )
        stack = cdk.Stack.of(self)
        template_name = plant.provisioning_template_name

        log_group_name = f"/lineguard/{plant.name}/provisioning-hook"
        made = own_log_group(
            self,
            log_group_name=log_group_name,
            log_key=log_key,
            role_description=f"Pre-provisioning hook of plant {plant.name}: writes its own logs only",
            reason=function_reason("the hook"),
            logs_id="HookLogs",
            role_id="HookRole",
        )
        log_group, hook_role = made.log_group, made.role
        self.hook = lambda_.Function(
            self,
            "Hook",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="hook.handler",
            code=hook_code(self, plant),
            role=hook_role,
            log_group=log_group,
            memory_size=128,
            timeout=cdk.Duration.seconds(5),
            # IoT calls the hook synchronously and fails the registration (ACCESS_DENIED) if it has
            # not answered within 5 s (IoT Developer Guide, pre-provisioning-hook). It answers in
            # milliseconds (a regex and a hash), so 10 in flight serve far more registrations per
            # second than a plant commissions, and a leaked claim certificate cannot drain the
            # account's Lambda concurrency; a throttled request fails and the device retries.
            reserved_concurrent_executions=HOOK_CONCURRENCY,
            description=f"LineGuard {plant.name}: check serial and line, assign the ring",
        )
        # Confused-deputy protection as the IoT developer guide asks for it on this page
        # (pre-provisioning-hook: "include the source-arn or source-account"): the account.
        # The page does not say which ARN IoT sends as the source of a hook invocation, and a
        # SourceArn that does not match would refuse every registration; the account does not
        # depend on it, and only this account's templates can name this function.
        self.hook.add_permission(
            "InvokedByIotProvisioning",
            principal=iam.ServicePrincipal("iot.amazonaws.com"),
            action="lambda:InvokeFunction",
            source_account=plant.account,
        )

        self.provisioning_role = iam.Role(
            self,
            "ProvisioningRole",
            # Confused-deputy protection in the trust policy, in the form the IoT developer
            # guide gives (cross-service-confused-deputy-prevention): this account's IoT only.
            assumed_by=iam.ServicePrincipal(
                "iot.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": plant.account},
                    "ArnLike": {"aws:SourceArn": f"arn:aws:iot:{plant.region}:{plant.account}:*"},
                },
            ),
            description=f"IoT fleet provisioning of plant {plant.name}'s core devices",
        )
        thing_arn = stack.format_arn(
            service="iot", resource="thing", resource_name=f"lineguard-{plant.name}-*"
        )
        groups_arn = stack.format_arn(
            service="iot", resource="thinggroup", resource_name=f"lineguard-{plant.name}-*"
        )
        cert_arn = stack.format_arn(service="iot", resource="cert", resource_name="*")
        policy_arn = stack.format_arn(
            service="iot", resource="policy", resource_name=plant.core_policy_name
        )
        self.provisioning_role.add_to_policy(
            iam.PolicyStatement(
                sid="RegisterOwnThings",
                actions=[
                    "iot:CreateThing",
                    "iot:DescribeThing",
                    "iot:UpdateThing",
                    "iot:AddThingToThingGroup",
                    "iot:RemoveThingFromThingGroup",
                    "iot:UpdateThingGroupsForThing",
                    "iot:ListThingGroupsForThing",
                    "iot:DescribeThingGroup",
                    "iot:AttachThingPrincipal",
                    "iot:DetachThingPrincipal",
                    "iot:ListThingPrincipals",
                ],
                resources=[thing_arn, groups_arn],
            )
        )
        # Each device's own policy is created from the template's PolicyDocument; its name is a
        # hash of the document (provision-template "Policy resources"), unknown in advance.
        device_policies_arn = stack.format_arn(service="iot", resource="policy", resource_name="*")
        self.provisioning_role.add_to_policy(
            iam.PolicyStatement(
                sid="CreateDevicePolicies",
                actions=[
                    "iot:CreatePolicy",
                    "iot:GetPolicy",
                    "iot:AttachPolicy",
                    "iot:DetachPolicy",
                    "iot:ListPolicyPrincipals",
                    "iot:ListTargetsForPolicy",
                ],
                resources=[device_policies_arn],
            )
        )
        acknowledge_wildcard(
            self.provisioning_role,
            arn_text(self, "iot", "policy/*"),
            "Each core device gets its own IoT policy with its thing name written in (Greengrass "
            "core devices do not support thing policy variables); fleet provisioning names it by "
            "a hash of its document, so the name is not known in advance. Only this plant's "
            "template, whose documents the stack defines, uses the role.",
        )
        self.provisioning_role.add_to_policy(
            iam.PolicyStatement(
                sid="ActivateCertificates",
                actions=[
                    "iot:DescribeCertificate",
                    "iot:UpdateCertificate",
                    "iot:AttachPolicy",
                    "iot:DetachPolicy",
                ],
                resources=[cert_arn, policy_arn],
            )
        )
        # The read-only calls of AWS's reference role for provisioning (managed policy
        # AWSIoTThingsRegistration) that name a principal rather than a resource: IAM's service
        # authorization reference for AWS IoT lists no resource type for them, so only "*"
        # matches. They read; nothing here can change a resource.
        self.provisioning_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadPrincipals",
                actions=[
                    "iot:ListPrincipalThings",
                    "iot:ListAttachedPolicies",
                    "iot:ListPrincipalPolicies",
                ],
                resources=["*"],
            )
        )
        acknowledge_wildcard(
            self.provisioning_role,
            "*",
            "Read-only principal lookups fleet provisioning makes during RegisterThing "
            "(ListPrincipalThings, ListAttachedPolicies, ListPrincipalPolicies); IAM gives these "
            "actions no resource type, so they take '*'. Nothing they allow changes a resource.",
        )
        acknowledge_wildcard(
            self.provisioning_role,
            arn_text(self, "iot", "cert/*"),
            "Device certificates are created during provisioning; their ids are not known in "
            "advance. Only describe/activate/attach the plant's core policy are allowed.",
        )
        for kind in ("thing", "thinggroup"):
            acknowledge_wildcard(
                self.provisioning_role,
                arn_text(self, "iot", f"{kind}/lineguard-{plant.name}-*"),
                f"Things and groups are limited to this plant's name prefix lineguard-{plant.name}-; "
                "thing names come from serials at provisioning time.",
            )

        self.claim_policy = iot.CfnPolicy(
            self,
            "ClaimPolicy",
            policy_name=plant.claim_policy_name,
            policy_document=claim_policy_document(plant),
        )
        self.template = iot.CfnProvisioningTemplate(
            self,
            "Template",
            template_name=template_name,
            description=f"LineGuard {plant.name}: core devices provisioning by claim",
            enabled=True,
            provisioning_role_arn=self.provisioning_role.role_arn,
            template_body=json.dumps(provisioning_template_body(plant), separators=(",", ":")),
            template_type="FLEET_PROVISIONING",
            pre_provisioning_hook=iot.CfnProvisioningTemplate.ProvisioningHookProperty(
                target_arn=self.hook.function_arn, payload_version="2020-04-01"
            ),
        )
        self.template.node.add_dependency(core_policy)
        for child in self.hook.node.children:
            if isinstance(child, lambda_.CfnPermission):
                self.template.node.add_dependency(child)

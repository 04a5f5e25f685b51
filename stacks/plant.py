"""LineGuard-Plant-<plant>: one plant's fleet, provisioning, deployments and monitoring."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.config import PlantConfig, Release, access_log_bucket_name, artifact_bucket_name
from stacks.constructs.core_device_access import CoreDeviceAccess
from stacks.constructs.deployment_check import DeploymentCheck
from stacks.constructs.fleet_groups import FleetGroups
from stacks.constructs.identity import DeviceIdentity
from stacks.constructs.log_encryption import PlantLogKey
from stacks.constructs.monitoring import PlantMonitoring
from stacks.constructs.provisioning import FleetProvisioning
from stacks.constructs.results_pipeline import ResultsPipeline
from stacks.constructs.ring_deployments import RingDeployments
from stacks.constructs.rule_errors import RuleErrorLog


def plant_stack_name(plant: str) -> str:
    """Stack name (and CDK id) of a plant's stack."""
    return f"LineGuard-Plant-{plant}"


class PlantStack(cdk.Stack):
    """Thing groups, provisioning, device access, ring deployments (checked), results, monitoring.

    Its own size is O(rings), whatever the line or device count: devices join by fleet
    provisioning and are not CloudFormation resources, and the line thing groups live in nested
    stacks (``Groups/Lines<k>``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        release: Release,
        artifact_key: kms.IKey,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        # The shared buckets have fixed names; only the key ARN is a cross-stack reference.
        artifact_bucket = s3.Bucket.from_bucket_name(
            self, "ArtifactBucket", artifact_bucket_name(plant.account, plant.region)
        )
        access_log_bucket = s3.Bucket.from_bucket_name(
            self, "AccessLogBucket", access_log_bucket_name(plant.account, plant.region)
        )
        self.plant = plant
        self.log_key = log_key = PlantLogKey(self, "LogKey", plant_name=plant.name).key
        self.groups = FleetGroups(self, "Groups", plant=plant)
        self.device_access = CoreDeviceAccess(
            self,
            "CoreDevices",
            plant=plant,
            artifact_bucket=artifact_bucket,
            artifact_key=artifact_key,
        )
        self.provisioning = FleetProvisioning(
            self,
            "Provisioning",
            plant=plant,
            core_policy=self.device_access.policy,
            log_key=log_key,
        )
        # Devices join their line's group as they provision: the groups come first.
        for line_stack in self.groups.line_stacks.values():
            self.provisioning.template.node.add_dependency(line_stack)
        for group in self.groups.ring_groups.values():
            self.provisioning.template.node.add_dependency(group)
        self.deployments = RingDeployments(
            self,
            "Deployments",
            plant=plant,
            release=release,
            ring_groups=self.groups.ring_groups,
        )
        rule_errors = RuleErrorLog(self, "RuleErrors", plant_name=plant.name, log_key=log_key)
        self.results = ResultsPipeline(
            self,
            "Results",
            plant=plant,
            access_log_bucket=access_log_bucket,
            error_action=rule_errors.error_action,
            log_key=log_key,
        )
        self.identity = DeviceIdentity(
            self, "Identity", plant=plant, error_action=rule_errors.error_action, log_key=log_key
        )
        self.monitoring = PlantMonitoring(
            self,
            "Monitoring",
            plant=plant,
            error_action=rule_errors.error_action,
            log_key=log_key,
        )
        self.deployment_check = DeploymentCheck(
            self,
            "DeploymentCheck",
            plant=plant,
            deployments=self.deployments.deployments,
            topic=self.monitoring.topic,
            log_key=log_key,
        )
        cdk.Tags.of(self).add("lineguard:plant", plant.name)

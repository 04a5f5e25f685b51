"""IAM roles for the training pipeline (SageMaker) and the promoter (CodeBuild), least privilege."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.constructs._nag import acknowledge_wildcard, arn_text, attr_text
from stacks.constructs.artifact_store import (
    COMPONENTS_PREFIX,
    DATASETS_PREFIX,
    MODELS_PREFIX,
    PIPELINE_PREFIX,
    SAMPLES_PREFIX,
)

COMPONENT_NAMES = "com.lineguard.*"
CORE_DEVICE_NAMES = "lineguard-*"  # thing names lineguard-<plant>-<serial> (provisioning)


class PipelineRoles(Construct):
    """The training pipeline's execution role and the promotion job's role.

    Attributes:
        training_role: assumed by SageMaker; reads datasets and the field samples of the given
            plants (``samples/<plant>/``, the pipeline's ``SamplesPrefix``), writes pipeline
            files and models, registers model packages in the group.
        promotion_role: assumed by CodeBuild; reads models, publishes LineGuard components and
            drives Greengrass deployments on LineGuard thing groups.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        key: kms.IKey,
        model_package_group_name: str,
        sample_plants: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.sample_plants = tuple(sorted(set(sample_plants)))
        stack = cdk.Stack.of(self)
        group_arn = stack.format_arn(
            service="sagemaker",
            resource="model-package-group",
            resource_name=model_package_group_name,
        )
        packages_arn = stack.format_arn(
            service="sagemaker",
            resource="model-package",
            resource_name=f"{model_package_group_name}/*",
        )

        def s3_objects(prefix: str) -> str:
            return bucket.arn_for_objects(f"{prefix}*")

        # ---- training (SageMaker pipeline execution role)
        self.training_role = iam.Role(
            self,
            "Training",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="LineGuard training pipeline: datasets in, model packages out",
        )
        t = self.training_role
        # the data check merges a plant's field samples (training.merge): read-only, and only
        # samples/<plant>/ of this account's plants, never the bucket's other device uploads
        samples = [f"{SAMPLES_PREFIX}{plant}/" for plant in self.sample_plants]
        t.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    s3_objects(DATASETS_PREFIX),
                    s3_objects(PIPELINE_PREFIX),
                    *(s3_objects(prefix) for prefix in samples),
                ],
            )
        )
        t.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[s3_objects(PIPELINE_PREFIX), s3_objects(MODELS_PREFIX)],
            )
        )
        t.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={
                    "StringLike": {
                        "s3:prefix": [
                            f"{DATASETS_PREFIX}*",
                            f"{PIPELINE_PREFIX}*",
                            f"{MODELS_PREFIX}*",
                            *(f"{prefix}*" for prefix in samples),
                        ]
                    }
                },
            )
        )
        t.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[key.key_arn]
            )
        )
        t.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateModelPackage",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:ListModelPackages",
                    "sagemaker:DescribeModelPackageGroup",
                ],
                resources=[group_arn, packages_arn],
            )
        )
        jobs = [
            stack.format_arn(service="sagemaker", resource=kind, resource_name="pipelines-*")
            for kind in ("training-job", "processing-job")
        ]
        t.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:CreateProcessingJob",
                    "sagemaker:DescribeProcessingJob",
                    "sagemaker:StopProcessingJob",
                    "sagemaker:AddTags",
                ],
                resources=jobs,
            )
        )
        t.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[t.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        t.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="/aws/sagemaker/*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        t.add_to_policy(
            iam.PolicyStatement(
                actions=["ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"],
                resources=["*"],
            )
        )
        t.add_to_policy(
            iam.PolicyStatement(
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                resources=["arn:aws:ecr:*:*:repository/*"],
            )
        )

        # ---- promotion (CodeBuild job that runs the rollout controller)
        self.promotion_role = iam.Role(
            self,
            "Promotion",
            assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"),
            description="LineGuard promotion: publish components and roll them out ring by ring",
        )
        p = self.promotion_role
        p.add_to_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[s3_objects(MODELS_PREFIX)])
        )
        p.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"], resources=[s3_objects(COMPONENTS_PREFIX)]
            )
        )
        p.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[key.key_arn]
            )
        )
        p.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:ListModelPackages",
                    "sagemaker:UpdateModelPackage",
                ],
                resources=[group_arn, packages_arn],
            )
        )

        def greengrass_arn(resource: str, name: str) -> str:
            return stack.format_arn(
                service="greengrass",
                resource=resource,
                resource_name=name,
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            )

        components_arn = greengrass_arn("components", COMPONENT_NAMES)
        p.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "greengrass:CreateComponentVersion",
                    "greengrass:DescribeComponent",
                    "greengrass:GetComponent",
                    "greengrass:ListComponentVersions",
                ],
                resources=[components_arn],
            )
        )
        # Greengrass v2 resource types (Service Authorization Reference, "Actions, resources, and
        # condition keys for AWS IoT Greengrass V2"): Get/CancelDeployment take a deployment
        # (deployments:<id>); GetCoreDevice, ListInstalledComponents and ListEffectiveDeployments a
        # core device (coreDevices:<thing name>); CreateDeployment, ListDeployments,
        # ListCoreDevices, cloudwatch:GetMetricData and cloudwatch:ListMetrics (Service
        # Authorization Reference for Amazon CloudWatch) take no resource, hence "*".
        p.add_to_policy(
            iam.PolicyStatement(
                actions=["greengrass:GetDeployment", "greengrass:CancelDeployment"],
                resources=[greengrass_arn("deployments", "*")],
            )
        )
        p.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "greengrass:GetCoreDevice",
                    "greengrass:ListInstalledComponents",
                    "greengrass:ListEffectiveDeployments",
                ],
                resources=[greengrass_arn("coreDevices", CORE_DEVICE_NAMES)],
            )
        )
        p.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "greengrass:CreateDeployment",
                    "greengrass:ListDeployments",
                    "greengrass:ListCoreDevices",
                    "cloudwatch:GetMetricData",
                    "cloudwatch:ListMetrics",
                ],
                resources=["*"],
            )
        )
        p.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "iot:CreateJob",
                    "iot:DescribeJob",
                    "iot:CancelJob",
                    "iot:UpdateJob",
                    "iot:ListJobExecutionsForJob",
                    "iot:DescribeThingGroup",
                    "iot:ListThingsInThingGroup",
                ],
                resources=[
                    stack.format_arn(
                        service="iot", resource="thinggroup", resource_name="lineguard-*"
                    ),
                    stack.format_arn(service="iot", resource="job", resource_name="*"),
                    stack.format_arn(service="iot", resource="thing", resource_name="lineguard-*"),
                ],
            )
        )
        p.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="/aws/codebuild/lineguard-*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        self._acknowledge(bucket, model_package_group_name)

    def _acknowledge(self, bucket: s3.IBucket, group_name: str) -> None:
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, cdk.CfnResource)
        objects = attr_text(cfn_bucket, "Arn")
        prefix_reason = (
            "Object names under this prefix are created at run time; the role reaches only the "
            "prefixes of its own job (see artifact_store.py for the prefix map)."
        )
        packages = (
            arn_text(self, "sagemaker", f"model-package/{group_name}/*"),
            f"Model packages are versioned inside the one LineGuard group ({group_name}).",
        )
        no_resource_level = (
            "*",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData (training), "
            "greengrass:CreateDeployment, ListDeployments, ListCoreDevices and "
            "cloudwatch:GetMetricData and ListMetrics (promotion) support no resource-level "
            "permissions.",
        )
        training = [
            (f"{objects}/{DATASETS_PREFIX}*", prefix_reason),
            (f"{objects}/{PIPELINE_PREFIX}*", prefix_reason),
            (f"{objects}/{MODELS_PREFIX}*", prefix_reason),
            *(
                (
                    f"{objects}/{SAMPLES_PREFIX}{plant}/*",
                    f"Devices of plant {plant} upload their samples under this prefix with "
                    "run-time names (<device>/<layout>/<date>_<part>_<seq>); the role only reads "
                    "them, for the pipeline's SamplesPrefix.",
                )
                for plant in self.sample_plants
            ),
            packages,
            no_resource_level,
            (
                arn_text(self, "sagemaker", "training-job/pipelines-*"),
                "SageMaker Pipelines names its jobs pipelines-<execution>-<step>-<hash>.",
            ),
            (
                arn_text(self, "sagemaker", "processing-job/pipelines-*"),
                "SageMaker Pipelines names its jobs pipelines-<execution>-<step>-<hash>.",
            ),
            (
                arn_text(self, "logs", "log-group:/aws/sagemaker/*"),
                "SageMaker jobs log to /aws/sagemaker/TrainingJobs and /ProcessingJobs groups.",
            ),
            (
                "arn:aws:ecr:*:*:repository/*",
                "SageMaker framework images live in AWS-owned ECR repositories in other accounts.",
            ),
        ]
        promotion = [
            (f"{objects}/{MODELS_PREFIX}*", prefix_reason),
            (f"{objects}/{COMPONENTS_PREFIX}*", prefix_reason),
            packages,
            no_resource_level,
            (
                arn_text(self, "greengrass", f"components:{COMPONENT_NAMES}"),
                "Promotion publishes new versions of LineGuard's own components only.",
            ),
            (
                arn_text(self, "greengrass", "deployments:*"),
                "Greengrass generates deployment ids; the grant is Get/CancelDeployment only.",
            ),
            (
                arn_text(self, "greengrass", f"coreDevices:{CORE_DEVICE_NAMES}"),
                "LineGuard core devices are named lineguard-<plant>-<serial> at provisioning; "
                "the grant is core-device reads only.",
            ),
            (
                arn_text(self, "iot", "job/*"),
                "Greengrass creates one IoT job per deployment with a generated id.",
            ),
            (
                arn_text(self, "iot", "thing/lineguard-*"),
                "LineGuard core devices are named lineguard-<plant>-<serial> at provisioning.",
            ),
            (
                arn_text(self, "iot", "thinggroup/lineguard-*"),
                "Deployments target LineGuard ring groups, lineguard-<plant>-ring-<ring>.",
            ),
            (
                arn_text(self, "logs", "log-group:/aws/codebuild/lineguard-*"),
                "CodeBuild creates the log group of the promotion project at its first run.",
            ),
        ]
        for role, findings in ((self.training_role, training), (self.promotion_role, promotion)):
            for resource, reason in findings:
                acknowledge_wildcard(role, resource, reason)

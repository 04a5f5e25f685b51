"""The SageMaker training pipeline, its definition generated offline at synth time."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.config import Calibration
from stacks.constructs._nag import acknowledge_wildcard
from training.pipeline import (
    PIPELINE_NAME,
    ROLE_PLACEHOLDER,
    default_code_uri,
    pipeline_definition,
)

MAX_DEFINITION_BYTES = 1_000_000  # SageMaker's inline definition limit
TRAINED_MODELS_PREFIX = "models/pipeline/"


class TrainingPipeline(Construct):
    """``AWS::SageMaker::Pipeline`` built by ``training.pipeline`` (data check → train →
    evaluate → registration gate → register PendingManualApproval), run by the given execution
    role.

    ``calibration`` (default: the plant file's defaults) gives the defaults of the pipeline parameters ``TargetFalseRejectRate`` and
    ``TargetManualRate`` (the thresholds' targets and what the registration gate checks); a run
    for one plant may pass that plant's own values when it starts.

    The definition is produced by the SageMaker SDK with the role ARN as a placeholder and
    cached under ``build/training`` keyed by its inputs, so synthesis imports the SDK only when
    the pipeline or the training code changed. The role gets one extra grant here: reading the
    model artifacts its training step wrote, which its evaluation step scores.

    Attributes:
        pipeline_name: the pipeline's name.
        code_uri: where the steps' ``sourcedir.tar.gz`` is (the Shared stack publishes it there,
            ``stacks.constructs.training_assets``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        role: iam.IRole,
        bucket_name: str,
        model_package_group_name: str,
        pipeline_name: str = PIPELINE_NAME,
        calibration: Calibration | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        if cdk.Token.is_unresolved(stack.region) or cdk.Token.is_unresolved(bucket_name):
            raise ValueError("TrainingPipeline needs a concrete region and bucket name")
        calibration = calibration or Calibration()
        body = pipeline_definition(
            stack.region,
            bucket_name,
            model_package_group_name=model_package_group_name,
            target_false_reject_rate=calibration.target_false_reject_rate,
            target_manual_rate=calibration.target_manual_rate,
        )
        self.calibration = calibration
        if len(body.encode()) > MAX_DEFINITION_BYTES:
            raise ValueError(f"pipeline definition is {len(body.encode())} bytes (limit 1 MB)")
        # Fn::Sub substitutes ${RoleArn}; any other "${" must be escaped as "${!"
        escaped = body.replace("${", "${!").replace(ROLE_PLACEHOLDER, "${RoleArn}")
        self.pipeline_name = pipeline_name
        self.code_uri = default_code_uri(bucket_name)
        pipeline = sagemaker.CfnPipeline(
            self,
            "Pipeline",
            pipeline_name=pipeline_name,
            pipeline_description="LineGuard: data check, train, evaluate, gate on the plants' "
            "target rates and AUROC, register",
            role_arn=role.role_arn,
            pipeline_definition={
                "PipelineDefinitionBody": cdk.Fn.sub(escaped, {"RoleArn": role.role_arn})
            },
        )
        pipeline.node.add_dependency(role)
        models = f"arn:{stack.partition}:s3:::{bucket_name}/{TRAINED_MODELS_PREFIX}*"
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[models])
        )
        if isinstance(role, iam.Role):
            acknowledge_wildcard(
                role,
                f"arn:<AWS::Partition>:s3:::{bucket_name}/{TRAINED_MODELS_PREFIX}*",
                "the evaluation step reads the model artifacts the training step wrote under "
                "this prefix; their keys contain the pipeline-generated job name",
            )
        cdk.CfnOutput(
            self,
            "CodeUri",
            value=self.code_uri,
            description="the training steps' code (published by this stack)",
        )

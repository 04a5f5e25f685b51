"""The SageMaker model package group that training registers into and promotion reads from."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


class ModelRegistry(Construct):
    """One model package group for the inspection models.

    Attributes:
        group_name: the model package group's name.
        group_arn: its ARN.
    """

    def __init__(self, scope: Construct, construct_id: str, *, group_name: str) -> None:
        super().__init__(scope, construct_id)
        self.group_name = group_name
        group = sagemaker.CfnModelPackageGroup(
            self,
            "Group",
            model_package_group_name=group_name,
            model_package_group_description=(
                "LineGuard inspection models; approval starts the staged rollout"
            ),
        )
        group.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        self.group_arn = group.attr_model_package_group_arn

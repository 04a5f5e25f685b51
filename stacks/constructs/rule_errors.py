"""Where IoT rule actions that fail go: one log group per plant, used as every rule's error action."""

from __future__ import annotations

from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.constructs._own_log_group import IOT, RULE_LOG_ACTIONS, own_log_group


class RuleErrorLog(Construct):
    """A log group and a role that IoT rules' error actions write to.

    Attributes:
        log_group: the log group failed rule actions are written to.
        error_action: the ``errorAction`` to give every topic rule.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, plant_name: str, log_key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        name = f"/lineguard/{plant_name}/iot-rule-errors"
        made = own_log_group(
            self,
            log_group_name=name,
            log_key=log_key,
            role_description=f"IoT rule error action of plant {plant_name}",
            reason="IoT creates the log streams of this one error log group at run time.",
            service=IOT,
            actions=RULE_LOG_ACTIONS,
        )
        self.log_group, role = made.log_group, made.role
        self.error_action = iot.CfnTopicRule.ActionProperty(
            cloudwatch_logs=iot.CfnTopicRule.CloudwatchLogsActionProperty(
                log_group_name=self.log_group.log_group_name, role_arn=role.role_arn
            )
        )

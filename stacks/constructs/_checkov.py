"""Checkov findings LineGuard accepts instead of fixing, each with its reason, all in this file.

Checkov reads per-resource suppressions from a CloudFormation resource's
``Metadata: {checkov: {skip: [{id, comment}]}}`` (checkov docs, "Suppressing and Skipping
Policies", CloudFormation Metadata and CDK examples; ``checkov/cloudformation/context_parser.py``
``collect_skip_comments``). ``accept_checkov_findings`` writes that metadata on the resources
listed here, so a plain ``checkov`` run on ``cdk.out`` honours them and reports them as skipped
with the reason; ``tests/stacks/test_synth.py`` fails on any other finding and on an entry here
that no longer matches a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from constructs import IConstruct


@dataclass(frozen=True)
class AcceptedCheck:
    """One checkov check accepted on one resource, given by its construct path in its stack."""

    check_id: str
    path: str
    reason: str


_HOOK = "Provisioning/Hook/Resource"
_IDENTITY = "Identity/Function/Resource"
_DEPLOYMENT_CHECK = "DeploymentCheck/Function/Resource"
_PUBLISHER = "Publisher/Function/Resource"

ACCEPTED: tuple[AcceptedCheck, ...] = (
    AcceptedCheck(
        "CKV_AWS_18",
        "Artifacts/AccessLogs/Resource",
        "This is the server-access-log bucket itself; logging it into itself would loop "
        "(cdk-nag AwsSolutions-S1 is acknowledged for the same reason).",
    ),
    AcceptedCheck(
        "CKV_AWS_116",
        _HOOK,
        "IoT fleet provisioning invokes the pre-provisioning hook synchronously and fails the "
        "registration itself when the hook errs or is late; a dead-letter queue only receives "
        "failed asynchronous invocations, so there is nothing to send it.",
    ),
    AcceptedCheck(
        "CKV_AWS_117",
        _HOOK,
        "The hook reaches no network resource and calls no AWS API (a regex and a hash over the "
        "request); a VPC would add network interfaces and endpoints with nothing behind them.",
    ),
    AcceptedCheck(
        "CKV_AWS_116",
        _IDENTITY,
        "The identity sync is idempotent and runs again on every fleet-status message of the "
        "device (at launch, reconnect, each component status change and deployment, and every "
        "24 h); a failed invocation is repaired by the next one, which a dead-letter queue "
        "could not do better.",
    ),
    AcceptedCheck(
        "CKV_AWS_117",
        _IDENTITY,
        "The identity sync calls only the public AWS IoT APIs (DescribeThing, the shadow data "
        "plane); a VPC would need endpoints for them and would protect nothing.",
    ),
    AcceptedCheck(
        "CKV_AWS_173",
        _IDENTITY,
        "The environment holds only the plant's name, which is in the repository and in every "
        "resource name; Lambda encrypts it at rest with its service key already.",
    ),
    AcceptedCheck(
        "CKV_AWS_116",
        _DEPLOYMENT_CHECK,
        "The deployment check runs on a schedule with no retries; the next run is the retry, and "
        "a run that fails raises the plant's deployment-check-errors alarm, which a dead-letter "
        "queue would only duplicate.",
    ),
    AcceptedCheck(
        "CKV_AWS_117",
        _DEPLOYMENT_CHECK,
        "The deployment check calls only public AWS APIs (Greengrass, IoT jobs, CloudWatch); a "
        "VPC would need endpoints for them and would protect nothing.",
    ),
    AcceptedCheck(
        "CKV_AWS_173",
        _DEPLOYMENT_CHECK,
        "The environment holds the plant's name, namespace and ring group ARNs, which are in the "
        "repository and the template; Lambda encrypts it at rest with its service key already.",
    ),
    AcceptedCheck(
        "CKV_AWS_116",
        _PUBLISHER,
        "The artifact publisher serves CloudFormation custom resources only: CloudFormation "
        "invokes it during a deployment and learns every outcome from its response, failing the "
        "stack update on an error; an event left in a dead-letter queue would be a stale request "
        "that nothing may replay.",
    ),
    AcceptedCheck(
        "CKV_AWS_117",
        _PUBLISHER,
        "The artifact publisher calls only the S3 API (the CDK assets bucket and the artifact "
        "bucket); a VPC would need an S3 endpoint and would protect nothing.",
    ),
)


def accept_checkov_findings(scope: IConstruct) -> None:
    """Write the checkov skip metadata of ``ACCEPTED`` on the matching resources under ``scope``."""
    for node in scope.node.find_all():
        if not isinstance(node, cdk.CfnResource):
            continue
        stack = cdk.Stack.of(node)
        path = node.node.path.removeprefix(f"{stack.node.path}/")
        skips = [{"id": a.check_id, "comment": a.reason} for a in ACCEPTED if a.path == path]
        if skips:
            node.add_metadata("checkov", {"skip": skips})

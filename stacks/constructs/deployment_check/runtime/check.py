"""Scheduled check: does each ring's Greengrass deployment still reach devices that join it?

Runs in AWS Lambda (Python standard library and the runtime's boto3). A deployment to a thing
group is a continuous IoT job: it keeps serving devices added to the group only while the
deployment is active and its job in progress. Once the job is cancelled — by the rollout's abort
criteria, by CancelDeployment — devices provisioned into the ring later get nothing:

- "Deployments are continuous ... When you add a core device to a target thing group, AWS IoT
  Greengrass sends the device the latest deployment for that thing group" (Greengrass developer
  guide, manage-deployments);
- "If you cancel a deployment that targets a thing group, core devices that you add to the group
  won't receive that continuous deployment" (guide, cancel-deployments);
- "While a deployment is active, the AWS IoT job's status is IN_PROGRESS" (guide,
  check-deployment-status); a job cancelled "using ... the Job abort configuration" is CANCELED
  (IoT developer guide, iot-jobs-lifecycle).

So a ring serves new devices iff its latest deployment (``ListDeployments`` with
``historyFilter=LATEST_ONLY``) is ``ACTIVE`` and that deployment's IoT job is ``IN_PROGRESS``.
Earlier revisions are cancelled by every new deployment to the ring (check-deployment-status),
which is why only the latest one is looked at. Each ring's verdict is put as the metric
``DeploymentNotServing`` (1 or 0, dimension ``Ring``) in the plant's namespace; an alarm per ring
notifies the plant's alarm topic. A ring whose check failed gets no data point, and the run
raises, so the function's Errors metric shows it.

Environment (set by the construct):
    NAMESPACE  CloudWatch namespace (``LineGuard/<plant>``)
    RINGS      JSON list of [ring name, thing group ARN] of the rings the Plant stack deploys to
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

METRIC = "DeploymentNotServing"
DIMENSION = "Ring"
# greengrassv2 DeploymentStatus is ACTIVE|COMPLETED|CANCELED|FAILED|INACTIVE; iot JobStatus is
# IN_PROGRESS|CANCELED|COMPLETED|DELETION_IN_PROGRESS|SCHEDULED (botocore service models).
SERVING_DEPLOYMENT = "ACTIVE"
SERVING_JOB = "IN_PROGRESS"


class CheckFailed(RuntimeError):
    """At least one ring could not be checked (the others were reported)."""


@dataclass(frozen=True)
class RingState:
    """Whether a ring's latest deployment still serves devices that join the ring, and why."""

    ring: str
    serving: bool
    detail: str


def latest_deployment(greengrass: Any, target_arn: str) -> dict[str, Any] | None:
    """The latest deployment revision that targets ``target_arn`` itself (no subdeployment)."""
    pages = greengrass.get_paginator("list_deployments").paginate(
        targetArn=target_arn, historyFilter="LATEST_ONLY"
    )
    for page in pages:
        for deployment in page.get("deployments", []):
            if deployment.get("isLatestForTarget", True) and not deployment.get("parentTargetArn"):
                return dict(deployment)
    return None


def ring_state(greengrass: Any, iot: Any, ring: str, target_arn: str) -> RingState:
    """Check one ring: its latest deployment must be ACTIVE and its IoT job IN_PROGRESS."""
    latest = latest_deployment(greengrass, target_arn)
    if latest is None:
        return RingState(ring, False, f"no deployment targets {target_arn}")
    deployment_id = latest["deploymentId"]
    deployment = greengrass.get_deployment(deploymentId=deployment_id)
    status = deployment.get("deploymentStatus", "")
    if status != SERVING_DEPLOYMENT:
        return RingState(ring, False, f"deployment {deployment_id} is {status or 'without status'}")
    job_id = deployment.get("iotJobId")
    if not job_id:  # the job is created just after the deployment
        return RingState(ring, True, f"deployment {deployment_id} is ACTIVE, its job not yet made")
    job_status = iot.describe_job(jobId=job_id)["job"].get("status", "")
    if job_status != SERVING_JOB:
        return RingState(
            ring, False, f"deployment {deployment_id}: its IoT job {job_id} is {job_status}"
        )
    return RingState(ring, True, f"deployment {deployment_id} is ACTIVE, job {job_id} IN_PROGRESS")


def check_rings(
    rings: Sequence[tuple[str, str]],
    *,
    greengrass: Any,
    iot: Any,
    cloudwatch: Any,
    namespace: str,
) -> list[RingState]:
    """Check every ring, put one data point per checked ring, raise if any could not be checked."""
    states: list[RingState] = []
    failures: list[str] = []
    for ring, target_arn in rings:
        try:
            state = ring_state(greengrass, iot, ring, target_arn)
        except Exception as exc:  # an AWS error on one ring must not hide the others
            failures.append(f"ring {ring!r} ({target_arn}): {type(exc).__name__}: {exc}")
            continue
        (LOG.info if state.serving else LOG.error)("ring %s: %s", ring, state.detail)
        states.append(state)
    if states:
        cloudwatch.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": METRIC,
                    "Dimensions": [{"Name": DIMENSION, "Value": s.ring}],
                    "Value": 0.0 if s.serving else 1.0,
                    "Unit": "Count",
                }
                for s in states
            ],
        )
    if failures:
        raise CheckFailed("; ".join(failures))
    return states


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Lambda entry point (EventBridge schedule)."""
    import boto3  # in the Lambda runtime; imported here so importing this module does no work

    rings = [(str(name), str(arn)) for name, arn in json.loads(os.environ["RINGS"])]
    states = check_rings(
        rings,
        greengrass=boto3.client("greengrassv2"),
        iot=boto3.client("iot"),
        cloudwatch=boto3.client("cloudwatch"),
        namespace=os.environ["NAMESPACE"],
    )
    return {"serving": {s.ring: s.serving for s in states}}

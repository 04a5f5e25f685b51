"""The FleetApi contract: the same situations answered by the fleet simulator and by ``AwsFleet``.

Each scenario drives the simulator into a situation, then scripts, with botocore's Stubber, the
responses AWS gives in that situation (shapes checked against the real service models by the
Stubber; the behaviour cited beside each). Both must answer the controller's call the same way,
so the simulator the rollout benchmark runs on behaves as AWS does for what the controller reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from rollout.aws import AwsFleet
from rollout.fleet import MODEL_COMPONENT
from rollout.simulator import FleetSimulator
from stacks.config import PlantConfig, initial_release
from stacks.deployment_spec import deployment_spec

REGION, ACCOUNT = "eu-west-1", "123456789012"
STAMP = datetime(2026, 1, 1, tzinfo=UTC)
OLD = {"com.lineguard.Inspector": "1.0.0", MODEL_COMPONENT: "1.0.0"}
NEW = {**OLD, MODEL_COMPONENT: "2.0.0"}


class Aws:
    """AwsFleet on stubbed greengrassv2 and iot clients."""

    def __init__(self) -> None:
        keys = {"region_name": REGION, "aws_access_key_id": "x", "aws_secret_access_key": "x"}
        self.gg = boto3.client("greengrassv2", **keys)
        self.iot = boto3.client("iot", **keys)
        self.gg_stub, self.iot_stub = Stubber(self.gg), Stubber(self.iot)
        self.fleet = AwsFleet(
            region=REGION, artifact_bucket="b", clients={"greengrassv2": self.gg, "iot": self.iot}
        )

    def __enter__(self) -> Aws:
        self.gg_stub.activate()
        self.iot_stub.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gg_stub.assert_no_pending_responses()
        self.iot_stub.assert_no_pending_responses()
        self.gg_stub.deactivate()
        self.iot_stub.deactivate()

    def deployment(self, deployment_id: str, status: str, job: str, job_status: str,
                   executions: dict[str, tuple[str, int]]) -> None:  # fmt: skip
        """GetDeployment → DescribeJob → ListJobExecutionsForJob, as AWS answers them."""
        self.gg_stub.add_response(
            "get_deployment",
            {"deploymentId": deployment_id, "deploymentStatus": status, "iotJobId": job},
            {"deploymentId": deployment_id},
        )
        self.iot_stub.add_response(
            "describe_job", {"job": {"jobId": job, "status": job_status}}, {"jobId": job}
        )
        self.iot_stub.add_response(
            "list_job_executions_for_job",
            {
                "executionSummaries": [
                    {
                        "thingArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{thing}",
                        "jobExecutionSummary": {
                            "status": state,
                            "queuedAt": STAMP,
                            "executionNumber": number,
                        },
                    }  # fmt: skip
                    for thing, (state, number) in executions.items()
                ]
            },
            {"jobId": job},
        )


@pytest.fixture
def aws() -> Iterator[Aws]:
    with Aws() as stubbed:
        yield stubbed


def simulator(plant: PlantConfig, make_package: Any, n: int = 3) -> FleetSimulator:
    rings = [(r.name, plant.ring_group_arn(r.name), n) for r in plant.rings]
    sim = FleetSimulator(rings, OLD, offline_share=0.0)
    sim.publish_model(make_package("2.0.0"))
    return sim


def request(plant: PlantConfig, components: dict[str, str]) -> dict[str, Any]:
    return deployment_spec(plant, "canary", initial_release(plant, components))


def test_a_thing_group_deployment_stays_in_progress_when_every_device_succeeded(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    dep = sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(15 * 60)
    simulated = sim.deployment_progress(dep)
    # AWS: "While a deployment is active, the AWS IoT job's status is IN_PROGRESS"
    # (check-deployment-status); a continuous job "is always in progress" (iot-jobs-lifecycle)
    aws.deployment(dep, "ACTIVE", "job-1", "IN_PROGRESS",
                   {t: ("SUCCEEDED", 1) for t in simulated.executions})  # fmt: skip
    real = aws.fleet.deployment_progress(dep)
    for progress in (simulated, real):
        assert progress.job_status == "IN_PROGRESS" and progress.status == "ACTIVE"
    assert simulated.executions == real.executions and not simulated.aborted


def test_a_new_revision_cancels_the_previous_job(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    first = sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(15 * 60)
    sim.create_deployment(request(demo_plant, OLD))
    simulated = sim.deployment_progress(first)
    # AWS: "After you create a new revision of a deployment, the status of the previous
    # revision's AWS IoT job changes to CANCELLED" (check-deployment-status); the deployment
    # itself is no longer the target's latest (deploymentStatus INACTIVE, API DeploymentStatus)
    aws.deployment(first, "INACTIVE", "job-1", "CANCELED",
                   {t: (s, 1) for t, s in simulated.executions.items()})  # fmt: skip
    real = aws.fleet.deployment_progress(first)
    for progress in (simulated, real):
        assert (progress.status, progress.job_status) == ("INACTIVE", "CANCELED")
        # replaced, not aborted by its criteria: the controller stops without a rollback
        assert progress.superseded and not progress.aborted
    assert simulated.executions == real.executions


def test_a_device_joining_the_group_is_a_member_gets_an_execution_and_is_not_yet_listed(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    target = demo_plant.ring_group_arn("canary")
    dep = sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(15 * 60)
    joined = sim.add_device(target)
    members = sim.ring_members(target)
    listed = sorted(d.name for d in sim.core_devices(target))
    progress = sim.deployment_progress(dep)
    group = target.rsplit("/", 1)[-1]
    # ListThingsInThingGroup: the group's things now
    aws.iot_stub.add_response("list_things_in_thing_group", {"things": members},
                              {"thingGroupName": group})  # fmt: skip
    # ListCoreDevices(thingGroupArn): "only core devices that have successfully deployed a
    # deployment that targets the thing group" (API reference)
    aws.gg_stub.add_response(
        "list_core_devices",
        {
            "coreDevices": [
                {"coreDeviceThingName": n, "status": "HEALTHY", "lastStatusUpdateTimestamp": STAMP}
                for n in listed
            ]
        },  # fmt: skip
        {"thingGroupArn": target},
    )
    # a continuous job "is sent to any new devices (things) that are added to the target
    # group" (key-concepts-jobs): the new thing has a QUEUED execution
    aws.deployment(dep, "ACTIVE", "job-1", "IN_PROGRESS",
                   {t: (s, 1) for t, s in progress.executions.items()})  # fmt: skip
    assert aws.fleet.ring_members(target) == members and joined in members
    real_listed = sorted(d.name for d in aws.fleet.core_devices(target))
    assert real_listed == listed and joined not in listed
    real = aws.fleet.deployment_progress(dep)
    assert real.executions == progress.executions and real.executions[joined] == "QUEUED"


def test_the_rings_deployment_is_the_targets_latest(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    target = demo_plant.ring_group_arn("canary")
    assert sim.ring_deployment(target) is None
    aws.gg_stub.add_response("list_deployments", {"deployments": []},
                             {"targetArn": target, "historyFilter": "LATEST_ONLY"})  # fmt: skip
    assert aws.fleet.ring_deployment(target) is None
    sim.create_deployment(request(demo_plant, NEW))
    merge = {"com.lineguard.Inspector": {"runtime": {"judge_threads": 2}}}
    release = initial_release(demo_plant, OLD).with_ring("canary", OLD, configuration=merge)
    sent = deployment_spec(demo_plant, "canary", release)
    second = sim.create_deployment(sent)
    simulated = sim.ring_deployment(target)
    # ListDeployments(LATEST_ONLY) lists the latest revision only; GetDeployment echoes the
    # components of the request (API reference)
    aws.gg_stub.add_response(
        "list_deployments",
        {
            "deployments": [
                {"deploymentId": second, "targetArn": target, "deploymentStatus": "ACTIVE"}
            ]
        },  # fmt: skip
        {"targetArn": target, "historyFilter": "LATEST_ONLY"},
    )
    aws.gg_stub.add_response(
        "get_deployment",
        {"deploymentId": second, "components": sent["components"]},
        {"deploymentId": second},
    )
    real = aws.fleet.ring_deployment(target)
    assert simulated is not None and real is not None
    assert (simulated.deployment_id, simulated.components, simulated.configuration) == (
        real.deployment_id,
        real.components,
        real.configuration,
    )
    assert real.configuration == {"com.lineguard.Inspector": {"runtime": {"judge_threads": 2}}}


def test_a_repeated_request_with_its_client_token_is_the_same_deployment(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    spec = {**request(demo_plant, NEW), "clientToken": "p-1-promote-canary"}
    first, again = sim.create_deployment(spec), sim.create_deployment(spec)
    assert first == again and len(sim.deployments) == 1
    # CreateDeployment is idempotent per clientToken: the same response again (API reference)
    for _ in range(2):
        aws.gg_stub.add_response(
            "create_deployment", {"deploymentId": "d-1", "iotJobId": "job-1"}, spec
        )
    assert aws.fleet.create_deployment(spec) == aws.fleet.create_deployment(spec) == "d-1"


def test_installed_components_after_a_successful_deployment(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(15 * 60)
    device = sim.ring_members(demo_plant.ring_group_arn("canary"))[0]
    simulated = sim.installed_components(device)
    aws.gg_stub.add_response(
        "list_installed_components",
        {
            "installedComponents": [
                {"componentName": n, "componentVersion": v, "lifecycleState": "RUNNING"}
                for n, v in simulated.items()
            ]
        },  # fmt: skip
        {"coreDeviceThingName": device, "topologyFilter": "ALL"},
    )
    assert aws.fleet.installed_components(device) == simulated
    assert simulated[MODEL_COMPONENT] == "2.0.0"

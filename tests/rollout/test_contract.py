"""The FleetApi contract: the same situations answered by the fleet simulator and by ``AwsFleet``.

Each scenario drives the simulator into a situation, writes down what AWS answers in that
situation as a literal fixture, from the documented rule cited beside it (never from the
simulator's own output), scripts it with botocore's Stubber (shapes checked against the real
service models; enums checked here too, which the Stubber does not), and asserts that the
simulator and ``AwsFleet`` both give exactly that answer. So the simulator the rollout benchmark
runs on behaves as AWS does for what the controller reads.
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
                   executions: dict[str, tuple[str, int]], page: int = 250) -> None:  # fmt: skip
        """GetDeployment → DescribeJob → ListJobExecutionsForJob (pages of at most 250, the
        API's maxResults limit), as AWS answers them."""
        _enum("greengrassv2", "DeploymentStatus", status)
        _enum("iot", "JobStatus", job_status)
        for state, _number in executions.values():
            _enum("iot", "JobExecutionStatus", state)
        self.gg_stub.add_response(
            "get_deployment",
            {"deploymentId": deployment_id, "deploymentStatus": status, "iotJobId": job},
            {"deploymentId": deployment_id},
        )
        self.iot_stub.add_response(
            "describe_job", {"job": {"jobId": job, "status": job_status}}, {"jobId": job}
        )
        items = list(executions.items())
        pages = [items[i : i + page] for i in range(0, len(items), page)] or [[]]
        for index, chunk in enumerate(pages):
            response: dict[str, Any] = {
                "executionSummaries": [
                    {
                        "thingArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{thing}",
                        "jobExecutionSummary": {
                            "status": state,
                            "queuedAt": STAMP,
                            "executionNumber": number,
                        },
                    }  # fmt: skip
                    for thing, (state, number) in chunk
                ]
            }
            expected: dict[str, Any] = {"jobId": job}
            if index + 1 < len(pages):
                response["nextToken"] = f"page-{index + 1}"
            if index > 0:
                expected["nextToken"] = f"page-{index}"
            self.iot_stub.add_response("list_job_executions_for_job", response, expected)

    def core_devices(self, target: str, devices: dict[str, str]) -> None:
        """ListCoreDevices(thingGroupArn) answering ``devices`` (name → status)."""
        for status in devices.values():
            _enum("greengrassv2", "CoreDeviceStatus", status)
        self.gg_stub.add_response(
            "list_core_devices",
            {
                "coreDevices": [
                    {"coreDeviceThingName": n, "status": st, "lastStatusUpdateTimestamp": STAMP}
                    for n, st in devices.items()
                ]
            },
            {"thingGroupArn": target},
        )


def _enum(service: str, shape: str, value: str) -> None:
    """The value is one the service model allows (the Stubber checks types, not enums)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service).shape_for(shape)
    assert value in model.enum, f"{service} {shape}: {value!r} is not one of {model.enum}"


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
    members = sim.ring_members(demo_plant.ring_group_arn("canary"))
    dep = sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(15 * 60)
    # AWS: "While a deployment is active, the AWS IoT job's status is IN_PROGRESS"
    # (check-deployment-status); a continuous job "is always in progress" (iot-jobs-lifecycle);
    # each device that installed the deployment reports its execution SUCCEEDED
    expected = dict.fromkeys(members, "SUCCEEDED")
    aws.deployment(dep, "ACTIVE", "job-1", "IN_PROGRESS",
                   {t: (s, 1) for t, s in expected.items()})  # fmt: skip
    for progress in (sim.deployment_progress(dep), aws.fleet.deployment_progress(dep)):
        assert (progress.status, progress.job_status) == ("ACTIVE", "IN_PROGRESS")
        assert progress.executions == expected and not progress.aborted


def test_a_new_revision_cancels_the_previous_job(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    members = sim.ring_members(demo_plant.ring_group_arn("canary"))
    first = sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(15 * 60)
    sim.create_deployment(request(demo_plant, OLD))
    # AWS: "After you create a new revision of a deployment, the status of the previous
    # revision's AWS IoT job changes to CANCELLED" (check-deployment-status); the deployment
    # itself is no longer the target's latest (deploymentStatus INACTIVE, API DeploymentStatus;
    # an assumption: no page says which value a replaced revision shows). Terminal executions
    # stay as they were: SUCCEEDED "is a terminal state" (iot-jobs-lifecycle)
    expected = dict.fromkeys(members, "SUCCEEDED")
    aws.deployment(first, "INACTIVE", "job-1", "CANCELED",
                   {t: (s, 1) for t, s in expected.items()})  # fmt: skip
    for progress in (sim.deployment_progress(first), aws.fleet.deployment_progress(first)):
        assert (progress.status, progress.job_status) == ("INACTIVE", "CANCELED")
        # replaced, not aborted by its criteria: the controller stops without a rollback
        assert progress.superseded and not progress.aborted
        assert progress.executions == expected


def test_a_device_joining_the_group_is_a_member_gets_an_execution_and_is_not_yet_listed(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    target = demo_plant.ring_group_arn("canary")
    before = sim.ring_members(target)
    dep = sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(15 * 60)
    joined = sim.add_device(target)
    members = [*before, joined]
    assert sim.ring_members(target) == members
    listed = sorted(before)  # they deployed to the group; the new device has not yet
    assert sorted(d.name for d in sim.core_devices(target)) == listed
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
    expected = {**dict.fromkeys(before, "SUCCEEDED"), joined: "QUEUED"}
    aws.deployment(dep, "ACTIVE", "job-1", "IN_PROGRESS",
                   {t: (s, 1) for t, s in expected.items()})  # fmt: skip
    assert aws.fleet.ring_members(target) == members
    real_listed = sorted(d.name for d in aws.fleet.core_devices(target))
    assert real_listed == listed and joined not in listed
    assert progress.executions == aws.fleet.deployment_progress(dep).executions == expected


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
    # after a successful deployment the device runs exactly the deployment's components
    aws.gg_stub.add_response(
        "list_installed_components",
        {
            "installedComponents": [
                {"componentName": n, "componentVersion": v, "lifecycleState": "RUNNING"}
                for n, v in NEW.items()
            ]
        },  # fmt: skip
        {"coreDeviceThingName": device, "topologyFilter": "ALL"},
    )
    assert sim.installed_components(device) == aws.fleet.installed_components(device) == NEW


def test_an_offline_member_stays_queued_however_long_it_is_offline(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    members = sim.ring_members(demo_plant.ring_group_arn("canary"))
    offline = members[1]
    sim.devices[offline].offline = [(sim.now - 60, sim.now + 6 * 3600)]
    dep = sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(3 * 3600)  # beyond the in-progress timeout (30 min in the demo plant)
    # AWS: an execution "remains in the QUEUED state until" the device receives it, the job is
    # cancelled or the device leaves the group; the in-progress timer starts only when the
    # device reports IN_PROGRESS (iot-jobs-lifecycle, timeoutConfig): never TIMED_OUT offline
    expected = {**dict.fromkeys(members, "SUCCEEDED"), offline: "QUEUED"}
    aws.deployment(dep, "ACTIVE", "job-1", "IN_PROGRESS",
                   {t: (s, 1) for t, s in expected.items()})  # fmt: skip
    assert sim.deployment_progress(dep).executions == expected
    assert aws.fleet.deployment_progress(dep).executions == expected


def test_a_device_that_stops_reporting_mid_install_times_out(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package)
    members = sim.ring_members(demo_plant.ring_group_arn("canary"))
    dep = sim.create_deployment(request(demo_plant, NEW))
    # the first device takes the job, then its network goes for hours
    while sim.deployment_progress(dep).executions.get(members[0]) != "IN_PROGRESS":
        sim.clock.sleep(10)
    sim.devices[members[0]].offline = [(sim.now, sim.now + 6 * 3600)]
    sim.clock.sleep(2 * 3600)
    # AWS: "TIMED_OUT: the job execution ... did not complete within the in-progress timeout"
    # (inProgressTimeoutInMinutes: "the timer is activated when the job execution status is set
    # to IN_PROGRESS", iot-jobs-lifecycle / jobs-configurations-details)
    expected = {**dict.fromkeys(members, "SUCCEEDED"), members[0]: "TIMED_OUT"}
    aws.deployment(dep, "ACTIVE", "job-1", "IN_PROGRESS",
                   {t: (s, 1) for t, s in expected.items()})  # fmt: skip
    assert sim.deployment_progress(dep).executions == expected
    assert aws.fleet.deployment_progress(dep).executions == expected


def test_a_component_broken_by_the_deployment_makes_its_core_device_unhealthy(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    from rollout.simulator import ModelBehaviour

    sim = simulator(demo_plant, make_package)
    sim.behaviours["2.0.0"] = ModelBehaviour(crash_per_start=1.0)
    target = demo_plant.ring_group_arn("canary")
    members = sim.ring_members(target)
    spec = request(demo_plant, NEW)
    spec["deploymentPolicies"]["failureHandlingPolicy"] = "DO_NOTHING"
    del spec["iotJobConfiguration"]["abortConfig"]  # every device runs it: no early cancel
    dep = sim.create_deployment(spec)
    sim.clock.sleep(30 * 60)
    # AWS: a component that fails three times within errorResetTime is BROKEN (nucleus
    # Lifecycle.java, docs/core-device.md); the deployment fails on the device (FAILED), and
    # with DO_NOTHING it stays on the new components; the core device reports UNHEALTHY ("a
    # component is in a failed state", API CoreDevice status) and stays listed for the group it
    # deployed to before (ListCoreDevices)
    expected = dict.fromkeys(members, "FAILED")
    aws.deployment(dep, "ACTIVE", "job-1", "IN_PROGRESS",
                   {t: (s, 1) for t, s in expected.items()})  # fmt: skip
    aws.core_devices(target, dict.fromkeys(members, "UNHEALTHY"))
    assert sim.deployment_progress(dep).executions == expected
    assert aws.fleet.deployment_progress(dep).executions == expected
    simulated = {d.name: d.status for d in sim.core_devices(target)}
    assert simulated == {d.name: d.status for d in aws.fleet.core_devices(target)}
    assert simulated == dict.fromkeys(members, "UNHEALTHY")


def test_executions_of_a_large_ring_come_in_pages(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    sim = simulator(demo_plant, make_package, n=300)
    members = sim.ring_members(demo_plant.ring_group_arn("canary"))
    dep = sim.create_deployment(request(demo_plant, NEW))
    sim.clock.sleep(4 * 3600)
    # ListJobExecutionsForJob returns at most 250 summaries a call, then a nextToken
    expected = dict.fromkeys(members, "SUCCEEDED")
    aws.deployment(dep, "ACTIVE", "job-1", "IN_PROGRESS",
                   {t: (s, 1) for t, s in expected.items()})  # fmt: skip
    assert sim.deployment_progress(dep).executions == expected
    assert aws.fleet.deployment_progress(dep).executions == expected
    assert len(expected) == 300


def test_abort_criteria_cancel_the_queued_and_let_the_running_finish(
    demo_plant: PlantConfig, make_package: Any, aws: Aws
) -> None:
    from rollout.simulator import ModelBehaviour

    sim = simulator(demo_plant, make_package, n=6)
    sim.behaviours["2.0.0"] = ModelBehaviour(crash_per_start=1.0)
    members = sim.ring_members(demo_plant.ring_group_arn("canary"))
    spec = request(demo_plant, NEW)  # the demo's abort: FAILED 50 % after 1 executed
    rollout = spec["iotJobConfiguration"]["jobExecutionsRolloutConfig"]
    rollout["exponentialRate"]["baseRatePerMinute"] = rollout["maximumPerMinute"] = 1
    dep = sim.create_deployment(spec)
    sim.clock.sleep(30 * 60)
    # AWS: when abort criteria are met "AWS IoT Jobs cancels the job" (jobs-configurations-
    # details); CancelJob without force cancels only QUEUED executions ("If false, only job
    # executions that are QUEUED are canceled", API CancelJob ``force``), so a device that had
    # started finishes and reports (FAILED here: every start crashes)
    started = {m for m, ex in sim.deployments[dep].executions.items() if ex.started > 0}
    assert 0 < len(started) < len(members)  # one a minute: the first failure stops the rest
    expected = {m: "FAILED" if m in started else "CANCELED" for m in members}
    aws.deployment(dep, "ACTIVE", "job-1", "CANCELED",
                   {t: (s, 1) for t, s in expected.items()})  # fmt: skip
    simulated, real = sim.deployment_progress(dep), aws.fleet.deployment_progress(dep)
    assert simulated.job_status == real.job_status == "CANCELED"
    assert simulated.executions == real.executions == expected
    assert simulated.aborted and real.aborted

"""The fleet simulator keeps Greengrass v2 / IoT jobs semantics and reports model behaviour.

The rules these tests hold the simulator to are cited where it implements them
(rollout/simulator.py): continuous jobs and revisions (Greengrass developer guide,
check-deployment-status; IoT developer guide, iot-jobs-lifecycle and key-concepts-jobs),
the job rollout and abort configuration (jobs-configurations-details), ListCoreDevices
(API reference), BROKEN after three errors (nucleus lifecyclemanager/Lifecycle.java).
"""

from __future__ import annotations

import pytest

from rollout.errors import BadInputError
from rollout.fleet import MODEL_COMPONENT
from rollout.simulator import FleetSimulator, ModelBehaviour
from stacks.config import PlantConfig, initial_release
from stacks.deployment_spec import deployment_spec

OLD = {"com.lineguard.Inspector": "1.0.0", MODEL_COMPONENT: "1.0.0"}
NEW = {**OLD, MODEL_COMPONENT: "2.0.0"}


def fleet(plant: PlantConfig, n: int = 20, **kw: object) -> FleetSimulator:
    rings = [(r.name, plant.ring_group_arn(r.name), n) for r in plant.rings]
    kw.setdefault("offline_share", 0.0)
    return FleetSimulator(rings, OLD, **kw)  # type: ignore[arg-type]


def request(plant: PlantConfig, ring: str, components: dict[str, str]) -> dict:
    return deployment_spec(plant, ring, initial_release(plant, components))


def publish(sim: FleetSimulator, make_package, version: str = "2.0.0") -> None:
    sim.publish_model(make_package(version))


def test_unpublished_component_version_is_refused(demo_plant: PlantConfig) -> None:
    sim = fleet(demo_plant)
    with pytest.raises(BadInputError, match="never published"):
        sim.create_deployment(request(demo_plant, "canary", NEW))


def test_rollout_rate_starts_at_base_and_grows_exponentially(demo_plant, make_package) -> None:
    sim = fleet(demo_plant, n=40)
    publish(sim, make_package)
    dep = sim.create_deployment(request(demo_plant, "canary", NEW))
    # demo plant: base 2/min, x2 after every success, max 10/min
    sim.clock.sleep(60)
    first = sim.deployment_progress(dep)
    assert first.total == 40
    assert first.finished + first.count("IN_PROGRESS") <= 2
    sim.clock.sleep(60 * 3)
    later = sim.deployment_progress(dep)
    started = later.finished + later.count("IN_PROGRESS")
    assert 2 < started <= 2 + 4 + 8 + 10  # grows, but never above maximumPerMinute
    sim.clock.sleep(60 * 10)
    assert sim.deployment_progress(dep).count("SUCCEEDED") == 40
    # a thing-group deployment is a continuous job: IN_PROGRESS while active, never COMPLETED
    assert sim.deployment_progress(dep).job_status == "IN_PROGRESS"
    assert {d.components[MODEL_COMPONENT] for d in sim.devices.values() if d.ring == "canary"} == {
        "2.0.0"
    }
    # the other ring is a different target: untouched
    assert {d.components[MODEL_COMPONENT] for d in sim.devices.values() if d.ring == "fleet"} == {
        "1.0.0"
    }


def test_new_deployment_replaces_the_previous_one_on_its_target(demo_plant, make_package) -> None:
    sim = fleet(demo_plant, n=40)
    publish(sim, make_package)
    first = sim.create_deployment(request(demo_plant, "canary", NEW))
    sim.clock.sleep(60)
    second = sim.create_deployment(request(demo_plant, "canary", OLD))
    old = sim.deployment_progress(first)
    assert old.status == "INACTIVE" and old.job_status == "CANCELED"
    assert old.count("CANCELED") >= 30
    sim.clock.sleep(3600)
    assert sim.deployment_progress(second).count("SUCCEEDED") == 40
    assert {d.components[MODEL_COMPONENT] for d in sim.devices.values()} == {"1.0.0"}


def test_crashing_model_fails_rolls_back_and_aborts_the_job(demo_plant, make_package) -> None:
    sim = fleet(demo_plant, n=40, behaviours={"2.0.0": ModelBehaviour(crash_per_start=1.0)})
    publish(sim, make_package)
    dep = sim.create_deployment(request(demo_plant, "canary", NEW))
    sim.clock.sleep(3600)
    progress = sim.deployment_progress(dep)
    assert progress.job_status == "CANCELED"  # abort criteria: FAILED >= 50% after 1 executed
    assert progress.count("FAILED") >= 1
    assert progress.count("CANCELED") > 0
    # ROLLBACK: every device still runs (and is healthy on) the previous model
    canary = [d for d in sim.devices.values() if d.ring == "canary"]
    assert {d.components[MODEL_COMPONENT] for d in canary} == {"1.0.0"}
    assert all(d.status == "HEALTHY" for d in sim.core_devices(demo_plant.ring_group_arn("canary")))


def test_do_nothing_failure_handling_leaves_a_broken_device(demo_plant, make_package) -> None:
    sim = fleet(demo_plant, n=2, behaviours={"2.0.0": ModelBehaviour(crash_per_start=1.0)})
    publish(sim, make_package)
    req = request(demo_plant, "canary", NEW)
    req["deploymentPolicies"]["failureHandlingPolicy"] = "DO_NOTHING"
    sim.create_deployment(req)
    sim.clock.sleep(600)
    statuses = [d.status for d in sim.core_devices(demo_plant.ring_group_arn("canary"))]
    assert "UNHEALTHY" in statuses


def test_component_erroring_three_times_in_an_hour_goes_broken(demo_plant, make_package) -> None:
    sim = fleet(demo_plant, n=20, behaviours={"2.0.0": ModelBehaviour(crash_per_hour=6.0)})
    publish(sim, make_package)
    dep = sim.create_deployment(request(demo_plant, "canary", NEW))
    sim.clock.sleep(20 * 60)
    assert sim.deployment_progress(dep).count("SUCCEEDED") == 20  # installs fine...
    sim.clock.sleep(2 * 3600)
    target = demo_plant.ring_group_arn("canary")
    unhealthy = [d for d in sim.core_devices(target) if d.status == "UNHEALTHY"]
    assert len(unhealthy) >= 15  # ...then errors 3 times within an hour: BROKEN
    health = sim.ring_health("demo", "canary", target, sim.now - 600, sim.now, "2.0.0")
    assert health.healthy == 20 - len(unhealthy)


def test_offline_device_times_out_in_progress(demo_plant, make_package) -> None:
    sim = fleet(demo_plant, n=3)
    publish(sim, make_package)
    name = "sim-canary-00000"
    sim.devices[name].offline = [(sim.now + 61, sim.now + 10 * 3600)]
    dep = sim.create_deployment(request(demo_plant, "canary", NEW))
    sim.clock.sleep(60)  # released and started, then the device drops off before finishing
    sim.clock.sleep(45 * 60)  # demo in-progress timeout is 30 min
    progress = sim.deployment_progress(dep)
    assert progress.count("TIMED_OUT") == 1
    assert sim.devices[name].components[MODEL_COMPONENT] == "1.0.0"


def test_offline_device_is_queued_until_it_returns(demo_plant, make_package) -> None:
    sim = fleet(demo_plant, n=3)
    publish(sim, make_package)
    name = "sim-canary-00001"
    sim.devices[name].offline = [(sim.now, sim.now + 2 * 3600)]
    dep = sim.create_deployment(request(demo_plant, "canary", NEW))
    sim.clock.sleep(3600)
    assert sim.deployment_progress(dep).count("QUEUED") == 1
    sim.clock.sleep(2 * 3600)
    assert sim.deployment_progress(dep).count("SUCCEEDED") == 3


def test_health_reflects_the_running_version(demo_plant, make_package) -> None:
    sim = fleet(
        demo_plant,
        n=10,
        behaviours={
            "1.0.0": ModelBehaviour(reject_rate=0.03, latency_p99_ms=40),
            "2.0.0": ModelBehaviour(reject_rate=0.5, latency_p99_ms=120, agreement=0.4),
        },
    )
    target = demo_plant.ring_group_arn("canary")
    factor = sum(sim.devices[n].rate_factor for n in sim.targets[target]) / 10
    before = sim.ring_health("demo", "canary", target, sim.now - 3600, sim.now, "1.0.0")
    assert before.frames == 10 * 3600
    assert before.rate("reject") == pytest.approx(0.03 * factor, rel=0.15)
    assert before.latency_p99_ms == pytest.approx(40, rel=0.2)
    assert before.healthy == 10
    publish(sim, make_package)
    sim.create_deployment(request(demo_plant, "canary", NEW))
    sim.clock.sleep(30 * 60)
    t = sim.now
    sim.clock.sleep(3600)
    after = sim.ring_health("demo", "canary", target, t, sim.now, "2.0.0")
    assert after.rate("reject") == pytest.approx(min(1.0, 0.5 * factor), rel=0.1)
    assert after.latency_p99_ms == pytest.approx(120, rel=0.2)
    with pytest.raises(ValueError, match="future"):
        sim.ring_health("demo", "canary", target, t, sim.now + 60, "2.0.0")


def test_same_seed_same_fleet(demo_plant) -> None:
    a = fleet(demo_plant, n=50, seed=7, offline_share=0.3)
    b = fleet(demo_plant, n=50, seed=7, offline_share=0.3)
    c = fleet(demo_plant, n=50, seed=8, offline_share=0.3)
    assert [d.offline for d in a.devices.values()] == [d.offline for d in b.devices.values()]
    assert [d.offline for d in a.devices.values()] != [d.offline for d in c.devices.values()]


def test_a_device_joining_the_group_gets_the_continuous_job(demo_plant, make_package) -> None:
    sim = fleet(demo_plant, n=3)
    publish(sim, make_package)
    target = demo_plant.ring_group_arn("canary")
    dep = sim.create_deployment(request(demo_plant, "canary", NEW))
    sim.clock.sleep(60 * 10)
    assert sim.deployment_progress(dep).count("SUCCEEDED") == 3
    name = sim.add_device(target)
    assert sim.ring_members(target)[-1] == name
    # not a core device of the group before it deployed successfully (ListCoreDevices)
    assert name not in {d.name for d in sim.core_devices(target)}
    assert sim.deployment_progress(dep).executions[name] == "QUEUED"
    sim.clock.sleep(60 * 5)
    assert sim.deployment_progress(dep).executions[name] == "SUCCEEDED"
    assert sim.devices[name].components[MODEL_COMPONENT] == "2.0.0"
    assert name in {d.name for d in sim.core_devices(target)}


def test_decision_counts_by_ring_line_station_and_version(demo_plant, make_package) -> None:
    stations = [("line-1", "press-out"), ("line-1", "final-check"), ("line-2", "pack")]
    sim = fleet(
        demo_plant,
        n=6,
        stations=stations,
        behaviours={"1.0.0": ModelBehaviour(reject_rate=0.02), "2.0.0": ModelBehaviour()},
    )
    # devices are spread over the stations in turn: each ring has some at every station
    at = {(d.ring, d.line, d.station) for d in sim.devices.values()}
    assert at == {(r.name, line, st) for r in demo_plant.rings for line, st in stations}
    # stations differ in their reject rate (a factor per station, shared by its devices)
    assert len({round(f, 6) for f in sim.station_factor.values()}) == 3
    publish(sim, make_package)
    sim.create_deployment(request(demo_plant, "canary", NEW))
    sim.clock.sleep(3600)
    t = sim.now
    sim.clock.sleep(3600)
    counts = sim.decision_counts("demo", t, sim.now)
    keys = {(c.ring, c.version) for c in counts}
    assert keys == {("canary", "2.0.0"), ("fleet", "1.0.0")}
    assert len(counts) == 6 and all(c.frames == 2 * 3600 for c in counts)
    target = demo_plant.ring_group_arn("fleet")
    health = sim.ring_health("demo", "fleet", target, t, sim.now, "1.0.0")
    fleet_counts = [c for c in counts if c.ring == "fleet"]
    assert sum(c.reject for c in fleet_counts) == health.decisions["reject"]
    assert sum(c.manual for c in fleet_counts) == health.decisions["manual"]
    # one ring asked for: only its strata; the same window twice: the same counts
    assert sim.decision_counts("demo", t, sim.now, ring="fleet") == fleet_counts


def test_a_shadow_carrier_reports_the_shadow_in_the_inspectors_shape(demo_plant, make_package):
    from inspector.health import HealthReporter  # noqa: F401  (the real reporter's shape)

    from .test_health import feed, reporter

    real = feed(reporter("dev-a", "tiny@1.1.0", 0.9), ["pass"] * 10, 20)
    sim = fleet(
        demo_plant,
        n=4,
        behaviours={
            "1.0.0": ModelBehaviour(reject_rate=0.05),
            "1.2.0": ModelBehaviour(reject_rate=0.0),
        },
    )
    carrier = sim.publish_shadow("1.0.0", make_package("1.2.0"))
    assert carrier.version == "1.0.2"
    components = {**OLD, "com.lineguard.Model": "1.0.2"}
    sim.create_deployment(request(demo_plant, "canary", components))
    sim.clock.sleep(3600)
    target = demo_plant.ring_group_arn("canary")
    messages = sim.health_messages("demo", target, sim.now - 1800, sim.now)
    assert messages
    for message in messages:
        assert message["model"] == "sim@1.0.0"  # the served model decides
        assert set(message["shadow"]) == set(real["shadow"])
        assert set(message["shadow"]["reject"]) == set(real["shadow"]["reject"])
    counts = sim.shadow_counts("demo", "canary", "1.2.0", sim.now - 1800, sim.now)
    served = sum(m["counts"]["reject"] for m in messages)
    # a shadow that rejects nothing shares none of the served rejects
    assert counts.frames == sum(m["frames"] for m in messages)
    assert counts.both == counts.shadow_only == 0 and counts.served_only == served > 0

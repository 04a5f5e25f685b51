"""The controller drives rings in order, gates each, rolls back on failure and resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rollout.controller import Controller
from rollout.errors import BadInputError, StateError
from rollout.fleet import MODEL_COMPONENT
from rollout.simulator import FleetSimulator, simulated_fleet
from stacks.config import PlantConfig, load_plant, load_plant_release, release_path
from stacks.deployment_spec import deployment_spec

from .conftest import REPO, without_shadow


@pytest.fixture
def demo_plant(demo_plant: PlantConfig) -> PlantConfig:
    """The committed demo plant without its canary's shadow phase: the tests here are about the
    rest (the shadow phase has its own tests at the end)."""
    return without_shadow(demo_plant)


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the controller may catch it."""


def controller(plant, sim, releases_dir: Path, state_dir: Path, lines=None) -> Controller:
    log = lines.append if lines is not None else (lambda _m: None)
    return Controller(
        plant=plant,
        fleet=sim,
        clock=sim.clock,
        releases_dir=releases_dir,
        state_dir=state_dir,
        log=log,
    )


def sim_for(plant, releases_dir, scenario, devices=20, seed=3, version="1.1.0") -> FleetSimulator:
    release = load_plant_release(plant, releases_dir)
    return simulated_fleet(
        plant, release, new_version=version, scenario=scenario, devices=devices, seed=seed
    )


def deployments(sim: FleetSimulator) -> list[dict[str, Any]]:
    """The deployment requests sent, without their clientToken (checked on its own)."""
    return [
        {k: v for k, v in req.items() if k != "clientToken"}
        for name, req in sim.calls
        if name == "create_deployment"
    ]


def test_good_model_is_promoted_to_every_ring(
    demo_plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package
) -> None:
    committed = (REPO / "releases" / "demo.json").read_text()
    sim = sim_for(demo_plant, releases_dir, "good")
    lines: list[str] = []
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state", lines).promote(
        make_package("1.1.0")
    )
    assert report.status == "completed" and report.ok
    release = load_plant_release(demo_plant, releases_dir)
    assert {r: e.components[MODEL_COMPONENT] for r, e in release.rings.items()} == {
        "canary": "1.1.0",
        "fleet": "1.1.0",
    }
    assert release.rings["canary"].components["com.lineguard.Inspector"] == "1.0.0"
    sent = deployments(sim)
    assert [req["targetArn"] for req in sent] == [
        demo_plant.ring_group_arn("canary"),
        demo_plant.ring_group_arn("fleet"),
    ]
    # what was sent is exactly deployment_spec of the release file that was written
    for ring, req in zip(demo_plant.ring_names, sent, strict=True):
        assert req == deployment_spec(demo_plant, ring, release)
    assert {d.components[MODEL_COMPONENT] for d in sim.devices.values()} == {"1.1.0"}
    # the canary baked for its 10 minutes before the fleet ring was deployed
    assert sim.now - sim.deployments["sim-0001"].created >= 10 * 60
    assert any("canary: every gate passed" in line for line in lines)
    state = json.loads((tmp_path / "state" / "demo.json").read_text())
    assert state["status"] == "completed"
    # the copy was written, the committed release file was not
    assert (REPO / "releases" / "demo.json").read_text() == committed
    assert (REPO / "releases" / "demo.json").read_text() != release_path(
        "demo", releases_dir
    ).read_text()


def _join_canary_when_deployed(sim: FleetSimulator, plant: PlantConfig, **kw: Any) -> list[str]:
    """A device joins the canary group right after the canary's deployment is created."""
    canary, joined = plant.ring_group_arn("canary"), []
    create = sim.create_deployment

    def create_then_join(request: dict[str, Any]) -> str:
        deployment_id = create(request)
        if request["targetArn"] == canary and not joined:
            joined.append(sim.add_device(canary, **kw))
        return deployment_id

    sim.create_deployment = create_then_join  # type: ignore[method-assign]
    return joined


def test_a_ring_is_done_when_every_member_has_a_result_though_the_job_never_ends(
    demo_plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    joined = _join_canary_when_deployed(sim, demo_plant)
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(
        make_package("1.1.0")
    )
    assert report.status == "completed", report.message
    canary, fleet = sim.deployments["sim-0001"], sim.deployments["sim-0002"]
    assert canary.job_status == fleet.job_status == "IN_PROGRESS"  # continuous jobs
    # the device that joined mid-rollout got the continuous job and was waited for
    assert sim.devices[joined[0]].components[MODEL_COMPONENT] == "1.1.0"
    # the canary's wait ended with its members' results, not at its 30 + 11 + 15 min deadline
    bake = 60 * demo_plant.ring("canary").bake_minutes
    assert fleet.created - canary.created < bake + 15 * 60
    assert report.rings["canary"]["gates"][0]["detail"].startswith("0/11 devices failed")


def test_a_member_that_never_reports_counts_as_failed_after_the_deadline(
    demo_plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    joined = _join_canary_when_deployed(sim, demo_plant, online_from=sim.now + 48 * 3600)
    lines: list[str] = []
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state", lines).promote(
        make_package("1.1.0")
    )
    assert report.status == "rolled-back"
    gate = report.failed[0]
    assert gate.gate == "deployment_failure_ratio" and "without a result" in gate.detail
    assert any(joined[0] in line and "count as failed" in line for line in lines)
    # waited out the deadline once (30 min in-progress timeout + release + 15 min), no longer
    canary = sim.deployments["sim-0001"]
    rollback = sim.deployments["sim-0002"]
    assert 45 * 60 <= rollback.created - canary.created <= 60 * 60


def test_promotion_keeps_each_rings_configuration_merges(
    demo_plant: PlantConfig, releases_dir: Path, tmp_path: Path, make_package
) -> None:
    """The nucleus merge (interpolateComponentConfiguration) travels with every deployment the
    controller sends, as the Plant stack's deployment from the same release file has it."""
    sim = sim_for(demo_plant, releases_dir, "good")
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(
        make_package("1.1.0")
    )
    assert report.status == "completed"
    sent = deployments(sim)
    assert len(sent) == len(demo_plant.ring_names)
    for request in sent:
        nucleus = request["components"]["aws.greengrass.Nucleus"]
        assert json.loads(nucleus["configurationUpdate"]["merge"]) == {
            "interpolateComponentConfiguration": True
        }


@pytest.mark.parametrize(
    ("scenario", "gates"),
    [
        ("crash", {"deployment_failure_ratio", "healthy_share"}),
        ("reject-all", {"reject_rate"}),
        ("reject-none", {"reject_rate"}),
        ("slow", {"p99_regression"}),
        ("manual-heavy", {"manual_rate", "manual_ceiling"}),
    ],
)
def test_bad_model_stops_at_canary_and_rolls_back(
    demo_plant, releases_dir, tmp_path, make_package, scenario, gates
) -> None:
    before = load_plant_release(demo_plant, releases_dir)
    sim = sim_for(demo_plant, releases_dir, scenario)
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(
        make_package("1.1.0")
    )
    assert report.status == "rolled-back" and not report.ok
    failed = {g.gate for g in report.failed}
    assert failed & gates, failed
    assert {g.ring for g in report.failed} == {"canary"}
    assert report.failed[0].gate in report.message and "canary" in report.message
    # the fleet ring was never deployed; canary got the new version, then the previous again
    sent = deployments(sim)
    assert [req["targetArn"] for req in sent] == [demo_plant.ring_group_arn("canary")] * 2
    # the previous release, the model's configuration reset (keys 1.1.0 added do not stay)
    assert sent[1] == deployment_spec(
        demo_plant, "canary", before, abort=False, reset={MODEL_COMPONENT}
    )
    assert "abortConfig" not in sent[1]["iotJobConfiguration"]  # a rollback is never cancelled
    assert sent[1]["components"][MODEL_COMPONENT]["configurationUpdate"]["reset"] == [""]
    assert "every device checked is back" in report.message
    after = load_plant_release(demo_plant, releases_dir)
    assert {r: dict(e.components) for r, e in after.rings.items()} == {
        r: dict(e.components) for r, e in before.rings.items()
    }
    assert {d.components[MODEL_COMPONENT] for d in sim.devices.values()} == {"1.0.0"}


def test_a_rollback_names_the_devices_that_are_not_back(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "reject-all")
    canary = demo_plant.ring_group_arn("canary")
    create, calls = sim.create_deployment, []

    def create_then_lose_a_device(request: dict[str, Any]) -> str:
        calls.append(request["targetArn"])
        if calls.count(canary) == 2:  # the rollback: one device drops off the network for 2 days
            device = sim.devices[sim.targets[canary][0]]
            device.offline.append((sim.now, sim.now + 48 * 3600))
        return create(request)

    sim.create_deployment = create_then_lose_a_device  # type: ignore[method-assign]
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(
        make_package("1.1.0")
    )
    lost = sim.targets[canary][0]
    assert report.status == "rolled-back"
    assert f"1 device(s) NOT back on the previous version: {lost}" in report.message
    assert report.rings["canary"]["rollback_status"]["not_back"] == [lost]
    assert sim.devices[lost].components[MODEL_COMPONENT] == "1.1.0"


def test_previous_is_what_the_ring_runs_not_a_lagging_release_file(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "reject-all")
    before = load_plant_release(demo_plant, releases_dir)
    # the canary was deployed 0.9.0 outside this controller; the release file still says 1.0.0
    runs = {**before.rings["canary"].components, MODEL_COMPONENT: "0.9.0"}
    sim.known_versions.add((MODEL_COMPONENT, "0.9.0"))
    sim.create_deployment(
        deployment_spec(
            demo_plant,
            "canary",
            before.with_ring("canary", runs, configuration=before.rings["canary"].configuration),
        )
    )
    sim.clock.sleep(15 * 60)
    lines: list[str] = []
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state", lines).promote(
        make_package("1.1.0")
    )
    assert report.status == "rolled-back"
    assert any("canary: runs deployment sim-0001" in line for line in lines)
    # the rollback returned the canary to what it ran, and the release file says so now
    canary = [d for d in sim.devices.values() if d.ring == "canary"]
    assert {d.components[MODEL_COMPONENT] for d in canary} == {"0.9.0"}
    after = load_plant_release(demo_plant, releases_dir)
    assert after.rings["canary"].components[MODEL_COMPONENT] == "0.9.0"


def test_failed_gate_in_a_later_ring_rolls_back_every_touched_ring(
    releases_dir, tmp_path, make_package
) -> None:
    plant = without_shadow(load_plant(REPO / "plants" / "example-large.yaml"))
    sim = sim_for(plant, releases_dir, "good", devices=300)
    sim.behaviours["1.1.0"] = sim.behaviours["1.0.0"]
    ctl = controller(plant, sim, releases_dir, tmp_path / "state")
    original = sim.ring_health

    def health(plant_name, ring, target, start, end, version):  # the early ring misbehaves
        h = original(plant_name, ring, target, start, end, version)
        if ring == "early" and version == "1.1.0":
            return type(h)(**{**h.__dict__, "latency_p99_ms": 500.0})
        return h

    sim.ring_health = health  # type: ignore[method-assign]
    report = ctl.promote(make_package("1.1.0"))
    assert report.status == "rolled-back"
    assert {g.ring for g in report.failed} == {"early"}
    assert "p99_budget" in {g.gate for g in report.failed}
    targets = [req["targetArn"] for req in deployments(sim)]
    arn = plant.ring_group_arn
    assert targets == [arn("canary"), arn("early"), arn("early"), arn("canary")]
    # both rollbacks were created before either was waited for: the rings go back at once
    rollback_early, rollback_canary = list(sim.deployments.values())[2:]
    assert rollback_early.created == rollback_canary.created
    release = load_plant_release(plant, releases_dir)
    assert {e.components[MODEL_COMPONENT] for e in release.rings.values()} == {"1.0.0"}


@pytest.mark.parametrize("kill_at", ["early-bake", "early-wait", "broad-deploy"])
def test_killed_controller_resumes_without_redeploying_finished_rings(
    releases_dir, tmp_path, make_package, kill_at
) -> None:
    plant = without_shadow(load_plant(REPO / "plants" / "example-large.yaml"))
    sim = sim_for(plant, releases_dir, "good", devices=300)
    package = make_package("1.1.0")
    real_sleep, real_deploy = sim.clock.sleep, sim.create_deployment
    calls = {"sleep": 0}

    def sleep(seconds: float) -> None:
        early = [r for r in deployments(sim) if r["targetArn"] == plant.ring_group_arn("early")]
        if early:
            calls["sleep"] += 1
            if kill_at == "early-wait" and calls["sleep"] == 2:
                raise Killed
            if kill_at == "early-bake" and seconds >= 300:  # a bake step, not a 60 s poll
                raise Killed
        real_sleep(seconds)

    def deploy(request: dict[str, Any]) -> str:
        if kill_at == "broad-deploy" and request["targetArn"] == plant.ring_group_arn("broad"):
            raise Killed
        return real_deploy(request)

    sim.clock.sleep = sleep  # type: ignore[method-assign]
    sim.create_deployment = deploy  # type: ignore[method-assign]
    with pytest.raises(Killed):
        controller(plant, sim, releases_dir, tmp_path / "state").promote(package)
    state = json.loads((tmp_path / "state" / "example-large.json").read_text())
    assert state["status"] == "in_progress"
    sim.clock.sleep, sim.create_deployment = real_sleep, real_deploy  # type: ignore[method-assign]
    lines: list[str] = []
    report = controller(plant, sim, releases_dir, tmp_path / "state", lines).promote(package)
    assert report.status == "completed", report.message
    targets = [req["targetArn"] for req in deployments(sim)]
    assert targets == [plant.ring_group_arn(r) for r in plant.ring_names]  # each ring once
    assert [c for c in sim.calls if c[0] == "publish_model"] == [("publish_model", "1.1.0")]
    assert any("resuming" in line for line in lines)
    assert any("canary: already passed, not redeployed" in line for line in lines)
    release = load_plant_release(plant, releases_dir)
    assert {e.components[MODEL_COMPONENT] for e in release.rings.values()} == {"1.1.0"}


def test_release_file_follows_each_ring(demo_plant, releases_dir, tmp_path, make_package) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    seen: list[dict[str, str]] = []
    real = sim.create_deployment

    def deploy(request: dict[str, Any]) -> str:
        release = load_plant_release(demo_plant, releases_dir)
        seen.append({r: e.components[MODEL_COMPONENT] for r, e in release.rings.items()})
        return real(request)

    sim.create_deployment = deploy  # type: ignore[method-assign]
    controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(make_package("1.1.0"))
    assert seen == [
        {"canary": "1.0.0", "fleet": "1.0.0"},
        {"canary": "1.1.0", "fleet": "1.0.0"},
    ]
    doc = json.loads(release_path("demo", releases_dir).read_text())
    assert doc["rings"]["canary"]["updated_at"].endswith("Z")


def test_rollback_command_restores_the_previous_release(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    ctl = controller(demo_plant, sim, releases_dir, tmp_path / "state")
    assert ctl.promote(make_package("1.1.0")).status == "completed"
    report = ctl.rollback()
    assert report.status == "rolled-back-on-request" and report.ok
    release = load_plant_release(demo_plant, releases_dir)
    assert {e.components[MODEL_COMPONENT] for e in release.rings.values()} == {"1.0.0"}
    sim.clock.sleep(3600)
    assert {d.components[MODEL_COMPONENT] for d in sim.devices.values()} == {"1.0.0"}
    assert ctl.rollback().message == "the last promotion is already rolled back"


def test_rollback_without_a_promotion_is_an_error(demo_plant, releases_dir, tmp_path) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    with pytest.raises(StateError, match="no promotion"):
        controller(demo_plant, sim, releases_dir, tmp_path / "state").rollback()


def test_other_version_in_progress_is_refused(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    real = sim.create_deployment

    def deploy(request: dict[str, Any]) -> str:
        if request["targetArn"].endswith("ring-fleet"):
            raise Killed
        return real(request)

    sim.create_deployment = deploy  # type: ignore[method-assign]
    with pytest.raises(Killed):
        controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(make_package("1.1.0"))
    with pytest.raises(StateError, match=r"1\.1\.0 is in progress"):
        controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(make_package("1.2.0"))


def test_dry_run_changes_nothing(demo_plant, releases_dir, tmp_path, make_package) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    before = release_path("demo", releases_dir).read_text()
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(
        make_package("1.1.0"), dry_run=True
    )
    assert report.status == "dry-run"
    request = report.rings["canary"]["request"]
    assert request["components"][MODEL_COMPONENT] == {"componentVersion": "1.1.0"}
    assert sim.calls == [] and not (tmp_path / "state").exists()
    assert release_path("demo", releases_dir).read_text() == before


def test_already_released_version_is_a_no_op(demo_plant, releases_dir, tmp_path, make_package):
    sim = sim_for(demo_plant, releases_dir, "good")
    package = make_package("1.0.0")
    sim.released_sha256["1.0.0"] = package.manifest.sha256  # what the rings run
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(package)
    assert report.status == "already-released" and sim.calls == []


def test_a_version_reused_for_other_bytes_is_refused_before_any_upload(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    sim.released_sha256["1.0.0"] = "0" * 64  # the rings run another model under 1.0.0
    with pytest.raises(BadInputError, match="already published from another model"):
        controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(make_package("1.0.0"))
    assert sim.calls == []  # nothing published, nothing deployed


def test_a_rollback_marks_the_registry_package_rejected(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "reject-all")
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/lineguard-inspection/4"
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(
        make_package("1.1.0"), model_package_arn=arn
    )
    assert report.status == "rolled-back"
    assert list(sim.rejected) == [arn] and "rolled back: gate" in sim.rejected[arn]
    # the rollback command afterwards does not reject it twice
    controller(demo_plant, sim, releases_dir, tmp_path / "state").rollback()
    assert [c for c in sim.calls if c[0] == "reject_model_package"] == [
        ("reject_model_package", {"arn": arn, "reason": sim.rejected[arn]})
    ]


def test_interrupted_rollback_is_finished_by_the_rollback_command(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "reject-all")
    real = sim.create_deployment

    def deploy(request: dict[str, Any]) -> str:
        if len(deployments(sim)) == 1:  # the rollback's deployment: killed before it is sent
            raise Killed
        return real(request)

    sim.create_deployment = deploy  # type: ignore[method-assign]
    with pytest.raises(Killed):
        controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(make_package("1.1.0"))
    sim.create_deployment = real  # type: ignore[method-assign]
    again = controller(demo_plant, sim, releases_dir, tmp_path / "state")
    with pytest.raises(StateError, match="rollback of 1.1.0 was interrupted"):
        again.promote(make_package("1.1.0"))
    assert again.rollback().status == "rolled-back-on-request"
    sim.clock.sleep(3600)
    assert {d.components[MODEL_COMPONENT] for d in sim.devices.values()} == {"1.0.0"}
    release = load_plant_release(demo_plant, releases_dir)
    assert {e.components[MODEL_COMPONENT] for e in release.rings.values()} == {"1.0.0"}


# -- one owner: the lease, compare-and-swap checkpoints, resume after a kill anywhere ---------


class _KillAt:
    """Counts the controller's steps (checkpoints, publish, deployments); raises at one."""

    def __init__(self, ctl: Controller, sim: FleetSimulator, at: int | None) -> None:
        self.at, self.count = at, 0
        for obj, name in ((ctl.store, "save"), (sim, "create_deployment"), (sim, "publish_model")):
            setattr(obj, name, self._wrap(getattr(obj, name)))

    def _step(self) -> None:
        self.count += 1
        if self.count == self.at:
            raise Killed

    def _wrap(self, fn: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            self._step()  # killed before the step...
            out = fn(*args, **kwargs)
            self._step()  # ...or right after it, before the controller saw the result
            return out

        return step


def _promote_killed_at(
    plant: PlantConfig, releases_dir: Path, tmp: Path, package: Any, at: int | None
) -> tuple[FleetSimulator, Any, int]:
    import shutil

    shutil.copytree(releases_dir, tmp / "releases")
    sim = sim_for(plant, tmp / "releases", "good", devices=6)
    first = controller(plant, sim, tmp / "releases", tmp / "state")
    counter = _KillAt(first, sim, at)
    try:
        report = first.promote(package)
    except Killed:
        # a new controller (same CI job retried: same owner) resumes from the checkpoint
        sim.create_deployment = type(sim).create_deployment.__get__(sim)  # type: ignore[method-assign]
        sim.publish_model = type(sim).publish_model.__get__(sim)  # type: ignore[method-assign]
        second = Controller(plant=plant, fleet=sim, clock=sim.clock,
                            releases_dir=tmp / "releases", state_dir=tmp / "state",
                            owner=first.owner, log=lambda _m: None)  # fmt: skip
        report = second.promote(package)
    return sim, report, counter.count


@pytest.mark.parametrize("shadow", [False, True], ids=["plain", "with-shadow-phase"])
def test_a_kill_at_any_step_resumes_to_the_same_final_state(
    demo_plant, releases_dir, tmp_path, make_package, shadow
) -> None:
    if shadow:
        demo_plant = load_plant(REPO / "plants" / "demo.yaml")  # its canary has a shadow phase
    package = make_package("1.1.0")
    clean, clean_report, steps = _promote_killed_at(
        demo_plant, releases_dir, tmp_path / "clean", package, None
    )
    assert clean_report.status == "completed" and steps > 20

    def rings(release_dir: Path) -> dict[str, Any]:  # what each ring runs (not when written)
        release = load_plant_release(demo_plant, release_dir)
        return {r: (dict(e.components), e.configuration) for r, e in release.rings.items()}

    final = rings(tmp_path / "clean" / "releases")
    for at in range(1, steps + 1):
        tmp = tmp_path / f"kill-{at}"
        sim, report, _ = _promote_killed_at(demo_plant, releases_dir, tmp, package, at)
        # killed after the last checkpoint, the promotion is done: promoting again is a no-op
        done = "already-released" if at == steps else "completed"
        assert report.status == done, (at, report.message)
        assert rings(tmp / "releases") == final, at
        # each ring deployed once: a request repeated after a kill reuses its clientToken
        targets = [d.target for d in sim.deployments.values()]
        assert sorted(targets) == sorted(
            [demo_plant.ring_group_arn(r) for r in demo_plant.ring_names]
            + ([demo_plant.ring_group_arn("canary")] if shadow else [])
        )
        assert {d.model() for d in sim.devices.values()} == {"1.1.0"}
        state = json.loads((tmp / "state" / "demo.json").read_text())
        assert state["status"] == "completed" and state["lease"] is None


def test_a_second_controller_is_refused_while_the_first_holds_the_lease(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    package = make_package("1.1.0")
    first = controller(demo_plant, sim, releases_dir, tmp_path / "state")
    real_sleep = sim.clock.sleep
    seen: list[str] = []

    def sleep_and_meet_a_rival(seconds: float) -> None:
        real_sleep(seconds)
        if not seen:  # mid-promotion, another approval starts a second controller
            rival = Controller(plant=demo_plant, fleet=sim, clock=sim.clock,
                               releases_dir=releases_dir, state_dir=tmp_path / "state",
                               owner="codebuild:other-build", log=lambda _m: None)  # fmt: skip
            with pytest.raises(StateError, match="holds this promotion until") as err:
                rival.promote(package)
            seen.append(str(err.value))

    sim.clock.sleep = sleep_and_meet_a_rival  # type: ignore[method-assign]
    assert first.promote(package).status == "completed"
    assert seen and first.owner in seen[0]
    assert len(deployments(sim)) == 2  # the rival deployed nothing


def test_a_lapsed_lease_is_taken_over_and_a_stale_controller_stops(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    from rollout.state import StateConflict

    sim = sim_for(demo_plant, releases_dir, "good")
    package = make_package("1.1.0")
    first = controller(demo_plant, sim, releases_dir, tmp_path / "state")
    real_sleep, met = sim.clock.sleep, []

    def stall_then_lose_the_promotion(seconds: float) -> None:
        real_sleep(seconds)
        if not met:  # the first controller hangs past its lease; a second one takes over
            met.append(True)
            real_sleep(first.lease_s + 1)
            rival = Controller(plant=demo_plant, fleet=sim, clock=sim.clock,
                               releases_dir=releases_dir, state_dir=tmp_path / "state",
                               owner="codebuild:other-build", log=met.append)  # fmt: skip
            assert rival.promote(package).status == "completed"

    sim.clock.sleep = stall_then_lose_the_promotion  # type: ignore[method-assign]
    with pytest.raises(StateConflict, match="changed by another controller"):
        first.promote(package)  # its next checkpoint fails: it stops before another step
    assert any("taking over from controller" in str(m) for m in met)
    assert len({d.target for d in sim.deployments.values()}) == 2


def test_a_deployment_replaced_from_outside_stops_the_promotion_without_a_rollback(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    before = load_plant_release(demo_plant, releases_dir)
    real_sleep, done = sim.clock.sleep, []

    def sleep_then_cdk_deploy(seconds: float) -> None:
        real_sleep(seconds)
        if not done:  # mid-wait, someone deploys the repository's copy to the canary
            done.append(sim.create_deployment(deployment_spec(demo_plant, "canary", before)))

    sim.clock.sleep = sleep_then_cdk_deploy  # type: ignore[method-assign]
    with pytest.raises(StateError, match="replaced by another deployment"):
        controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(make_package("1.1.0"))
    # only the promotion's own deployment and the outside one: no rollback was sent
    assert [d.deployment_id for d in sim.deployments.values()] == ["sim-0001", done[0]]


def test_client_tokens_differ_for_rings_sharing_a_long_prefix(
    demo_plant, releases_dir, tmp_path
) -> None:
    ctl = controller(demo_plant, sim_for(demo_plant, releases_dir, "good"), releases_dir,
                     tmp_path / "state")  # fmt: skip
    state: dict[str, Any] = {"promotion_id": "p" * 32}
    a = ctl._token(state, "press-line-north-building-7-station-a", "rollback")
    b = ctl._token(state, "press-line-north-building-7-station-b", "rollback")
    assert a != b and len(a) <= 64 and len(b) <= 64


def test_a_kill_between_asking_for_a_deployment_and_recording_it_is_still_rolled_back(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "good")
    create = sim.create_deployment

    def create_then_die(request: dict[str, Any]) -> str:
        create(request)
        raise Killed  # the deployment exists; its id never reached the checkpoint

    sim.create_deployment = create_then_die  # type: ignore[method-assign]
    with pytest.raises(Killed):
        controller(demo_plant, sim, releases_dir, tmp_path / "state").promote(make_package("1.1.0"))
    sim.create_deployment = create  # type: ignore[method-assign]
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state").rollback()
    assert "canary" in report.message
    canary = [d for d in sim.devices.values() if d.ring == "canary"]
    sim.clock.sleep(3600)
    assert {d.components[MODEL_COMPONENT] for d in canary} == {"1.0.0"}


def test_a_changed_rate_rolls_back_at_the_first_look_that_shows_it(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    sim = sim_for(demo_plant, releases_dir, "reject-all")
    lines: list[str] = []
    report = controller(demo_plant, sim, releases_dir, tmp_path / "state", lines).promote(
        make_package("1.1.0")
    )
    assert report.status == "rolled-back" and report.failed[0].gate == "reject_rate"
    canary = sim.deployments["sim-0001"]
    rollback = sim.deployments["sim-0002"]
    bake = 60 * demo_plant.ring("canary").bake_minutes
    # judged at a look during the bake (every 15 min), not after the whole 60 min bake
    assert rollback.created - canary.created < bake
    assert any("log-LR" in line and "changed" in line for line in lines)


def test_undecided_gates_extend_the_bake_then_wait_for_a_person(
    demo_plant, releases_dir, tmp_path, make_package
) -> None:
    # a plant asking for more parts than its canary judges in the bake and both extensions
    strict = demo_plant.model_copy(
        update={"gates": demo_plant.gates.model_copy(update={"min_inspections": 10**6})}
    )
    sim = sim_for(strict, releases_dir, "good")
    lines: list[str] = []
    package = make_package("1.1.0")
    report = controller(strict, sim, releases_dir, tmp_path / "state", lines).promote(package)
    assert report.status == "inconclusive" and report.ok
    assert {g.gate for g in report.failed} >= {"reject_rate", "manual_rate"}
    assert all(g.inconclusive for g in report.failed)
    assert "A person decides" in report.message
    extended = [line for line in lines if "bake extended" in line]
    assert len(extended) == strict.gates.max_bake_extensions
    # nothing rolled back, the fleet ring not touched, the state waits with no lease held
    assert [r["targetArn"] for r in deployments(sim)] == [strict.ring_group_arn("canary")]
    state = json.loads((tmp_path / "state" / "demo.json").read_text())
    assert state["status"] == "in_progress" and state["lease"] is None
    assert state["rings"]["canary"]["phase"] == "inconclusive"
    # a person lowers the minimum and promotes again: another bake decides, and it goes on
    again = controller(demo_plant, sim, releases_dir, tmp_path / "state", lines).promote(package)
    assert again.status == "completed", again.message
    assert any("baking 60 min more, as asked" in line for line in lines)


# -- the shadow phase (the committed demo plant: its canary runs the candidate as a shadow) ---


def test_the_candidate_runs_as_a_shadow_before_it_decides_anything(
    releases_dir, tmp_path, make_package
) -> None:
    plant = load_plant(REPO / "plants" / "demo.yaml")
    assert plant.ring("canary").shadow_minutes == 30
    sim = sim_for(plant, releases_dir, "good")
    lines: list[str] = []
    report = controller(plant, sim, releases_dir, tmp_path / "state", lines).promote(
        make_package("1.1.0")
    )
    assert report.status == "completed", report.message
    sent = deployments(sim)
    arn = plant.ring_group_arn
    assert [
        (r["targetArn"], r["components"][MODEL_COMPONENT]["componentVersion"]) for r in sent
    ] == [
        (arn("canary"), "1.0.1"),  # the carrier: 1.0.0 decides, 1.1.0 scores beside it
        (arn("canary"), "1.1.0"),
        (arn("fleet"), "1.1.0"),
    ]
    assert sim.carriers == {"1.0.1": ("1.0.0", "1.1.0")}
    # during the shadow phase the canary's decisions were the previous model's, and its
    # health messages carried the candidate's figures under the candidate's own version
    shadow = sim.deployments["sim-0001"]
    messages = sim.health_messages(
        "demo", arn("canary"), shadow.created + 600, shadow.created + 1800
    )
    assert messages and {m["model"] for m in messages} == {"sim@1.0.0"}
    assert {m["shadow"]["model"] for m in messages} == {"sim@1.1.0"}
    gate = next(line for line in lines if "shadow_reject_rate" in line)
    assert gate.startswith("[") and "shadow ok   canary: shadow_reject_rate: shadow rejects" in gate
    # the candidate decided nothing until its shadow passed
    shadow_passed = next(i for i, line in enumerate(lines) if "the shadow passed" in line)
    deploying = next(i for i, line in enumerate(lines) if "deploying com.lineguard.Model" in line)
    assert shadow_passed < deploying


@pytest.mark.parametrize("scenario", ["reject-none", "reject-all", "crash"])
def test_a_bad_candidate_is_stopped_in_its_shadow_phase(
    releases_dir, tmp_path, make_package, scenario
) -> None:
    plant = load_plant(REPO / "plants" / "demo.yaml")
    sim = sim_for(plant, releases_dir, scenario)
    report = controller(plant, sim, releases_dir, tmp_path / "state").promote(make_package("1.1.0"))
    assert report.status == "rolled-back" and {g.ring for g in report.failed} == {"canary"}
    expected = {"shadow_reject_rate"} if scenario != "crash" else {"deployment_failure_ratio"}
    assert expected <= {g.gate for g in report.failed}, report.failed
    versions = [r["components"][MODEL_COMPONENT]["componentVersion"] for r in deployments(sim)]
    assert versions == ["1.0.1", "1.0.0"]  # the carrier, then back: 1.1.0 never decided a part
    assert all(v != "1.1.0" for d in sim.devices.values() for _t, v in d.history)
    assert {d.model() for d in sim.devices.values()} == {"1.0.0"}

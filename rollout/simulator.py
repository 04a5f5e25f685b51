"""A seeded fleet simulator that implements :class:`rollout.fleet.FleetApi` on a simulated clock.

Greengrass v2 semantics it keeps: one deployment per target (a new one replaces the previous and
cancels its pending job executions); a thing-group deployment is a continuous IoT job, IN_PROGRESS
for as long as it is active and sent to devices that join the group later; the IoT job's
exponential rollout rate, abort criteria and in-progress timeout; failure handling ROLLBACK; a
component that errors three times within an hour goes BROKEN (core device UNHEALTHY); devices
offline for periods; ``list_core_devices`` of a group lists the devices that have deployed to it
successfully, not its members. Each rule cites its source where it is implemented. Each model version behaves as
set (reject and manual rates, latency, crash probability, agreement with the previous model) and
the ring's health is aggregated from the same quantities the inspector's health message carries.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inspector.model_package import ModelPackage
from rollout.errors import BadInputError
from rollout.fleet import (
    MODEL_COMPONENT,
    TERMINAL_EXECUTION_STATES,
    CoreDevice,
    DeploymentProgress,
    PublishedModel,
    RingHealth,
    RunningDeployment,
    ShadowCounts,
    StratumCounts,
    shadow_carrier_version,
)
from rollout.health import aggregate
from stacks.config import PlantConfig, Release

HOUR = 3600.0
BROKEN_AFTER_ERRORS = 3


@dataclass(frozen=True)
class ModelBehaviour:
    """How one model version behaves on every device that runs it."""

    reject_rate: float = 0.03
    manual_rate: float = 0.01
    latency_p99_ms: float = 45.0
    crash_per_start: float = 0.0
    crash_per_hour: float = 0.0
    agreement: float | None = None
    reject_precision: float = 0.9
    """The true share of its rejects that are defective (what operators find, reviewing)."""
    manual_defect_share: float = 0.3
    """The true share of its manual parts that are defective."""


def _good(base: ModelBehaviour, rng: random.Random) -> ModelBehaviour:
    return replace(
        base,
        reject_rate=base.reject_rate * (1 + rng.uniform(-0.15, 0.15)),
        manual_rate=base.manual_rate * (1 + rng.uniform(-0.15, 0.15)),
        latency_p99_ms=base.latency_p99_ms * (1 + rng.uniform(-0.1, 0.1)),
        agreement=rng.uniform(0.96, 0.995),
    )


SCENARIOS: dict[str, Callable[[ModelBehaviour, random.Random], ModelBehaviour]] = {
    "good": _good,
    "crash": lambda b, r: replace(_good(b, r), crash_per_start=0.95, crash_per_hour=60.0),
    "reject-all": lambda b, r: replace(_good(b, r), reject_rate=0.97, agreement=0.05),
    "reject-none": lambda b, r: replace(_good(b, r), reject_rate=0.0, agreement=0.97),
    "slow": lambda b, r: replace(_good(b, r), latency_p99_ms=b.latency_p99_ms * 3),
    "manual-heavy": lambda b, r: replace(_good(b, r), manual_rate=max(4 * b.manual_rate, 0.08)),
    # rejects as often as the served model, but half of them are good parts: only operators'
    # verdicts tell (the reject_precision gate)
    "false-rejects": lambda b, r: replace(_good(b, r), reject_precision=b.reject_precision / 2),
}
"""Behaviour of the new model version relative to the fleet's current one, per scenario."""


class SimClock:
    """A simulated clock; ``sleep`` advances the simulation."""

    def __init__(self, start: float, on_advance: Callable[[float], None]) -> None:
        self._now = start
        self._on_advance = on_advance

    def now(self) -> float:
        """Simulated seconds since the epoch."""
        return self._now

    def sleep(self, seconds: float) -> None:
        """Advance simulated time (the simulator runs every tick in between)."""
        target = self._now + max(0.0, seconds)
        self._on_advance(target)
        self._now = target

    def _set(self, value: float) -> None:
        self._now = value


@dataclass
class _Device:
    name: str
    ring: str
    offline: list[tuple[float, float]]
    latency_factor: float
    rate_factor: float
    components: dict[str, str]
    line: str = "sim"
    station: str = "sim"
    broken: bool = False
    errors: list[float] = field(default_factory=list)
    deployed_to: set[str] = field(default_factory=set)  # targets it deployed successfully
    # (time, model version running or None when broken) — for health aggregation
    history: list[tuple[float, str | None]] = field(default_factory=list)

    def online(self, t: float) -> bool:
        return all(not start <= t < end for start, end in self.offline)

    def model(self) -> str | None:
        return None if self.broken else self.components.get(MODEL_COMPONENT)

    def record(self, t: float) -> None:
        self.history.append((t, self.model()))


@dataclass
class _Execution:
    device: str
    status: str = "QUEUED"
    released: bool = False
    started: float = 0.0
    finish_at: float = 0.0


@dataclass
class _Deployment:
    deployment_id: str
    target: str
    components: dict[str, str]
    rollback: bool
    created: float
    base_rate: float
    factor: float
    increase_every: int
    max_rate: float
    timeout_s: float | None
    abort: list[dict[str, Any]]
    executions: dict[str, _Execution]
    configuration: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "ACTIVE"
    job_status: str = "IN_PROGRESS"
    rate: float = 1.0
    budget: float = 0.0
    last_increase_at: int = 0


class FleetSimulator:
    """A fleet of simulated core devices in rings, driven through the ``FleetApi`` calls."""

    def __init__(
        self,
        rings: Iterable[tuple[str, str, int]],
        components: Mapping[str, str],
        *,
        seed: int = 0,
        behaviours: Mapping[str, ModelBehaviour] | None = None,
        default_behaviour: ModelBehaviour | None = None,
        offline_share: float = 0.02,
        parts_per_second: float = 1.0,
        start: float = 1_767_225_600.0,
        tick_s: float = 60.0,
        horizon_s: float = 14 * 24 * HOUR,
        ring_components: Mapping[str, Mapping[str, str]] | None = None,
        stations: Iterable[tuple[str, str]] | None = None,
        station_spread: float = 0.3,
        report_s: float = 300.0,
        review_share: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """Create the fleet.

        Args:
            rings: ``(ring name, thing group ARN, device count)`` per ring.
            components: component name → version every device runs at the start.
            seed: seeds every random choice (offline periods, crashes, counts).
            behaviours: model version → behaviour; other versions get ``default_behaviour``.
            offline_share: share of devices that go offline for a period (1–6 h) in the horizon.
            parts_per_second: frames each device judges per second while running.
            start: simulated epoch seconds at the start.
            tick_s: simulation step.
            horizon_s: span over which offline periods are drawn.
            ring_components: per-ring overrides of ``components``.
            stations: ``(line, station)`` pairs; devices are spread over them in turn, so each
                ring has devices at many stations (and each station devices of many rings).
            station_spread: sd of the log of each station's reject-rate factor (stations
                differ more than devices: what they make, how they light it).
            report_s: the health interval; counts are drawn once per device and interval and
                kept, so a window read twice reads the same parts.
            review_share: the shares of rejects and of manual parts operators give a verdict
                at a review station; the verdicts (``labels`` of the health message) find
                defective the model's ``reject_precision`` / ``manual_defect_share`` of them.
                Drawn from a random stream of their own, so they change no other count.
        """
        self.rng = random.Random(seed)
        self.seed = seed
        self.behaviours = dict(behaviours or {})
        self.default_behaviour = default_behaviour or ModelBehaviour()
        self.parts_per_second = parts_per_second
        self.tick_s = tick_s
        self.now = start
        self.clock = SimClock(start, self._advance_to)
        self.targets: dict[str, list[str]] = {}
        self.ring_of_target: dict[str, str] = {}
        self.devices: dict[str, _Device] = {}
        self.published: dict[tuple[str, str], PublishedModel] = {}
        ring_components = ring_components or {}
        self.known_versions = {(name, version) for name, version in components.items()}
        for overrides in ring_components.values():
            self.known_versions |= set(overrides.items())
        self.deployments: dict[str, _Deployment] = {}
        self.active: dict[str, str] = {}
        # graph sha256 of versions the fleet ran before the simulation (set by tests/callers)
        self.released_sha256: dict[str, str] = {}
        self.rejected: dict[str, str] = {}  # model package ARN -> reason
        self.tokens: dict[str, str] = {}  # CreateDeployment clientToken -> deployment id
        self.carriers: dict[str, tuple[str, str]] = {}  # carrier version -> (served, shadow)
        self.calls: list[tuple[str, Any]] = []
        self.report_s = report_s
        self.review_share = review_share
        self.label_rng = random.Random(seed + 7919)
        self.stations = list(stations or [("sim", "sim")])
        self.station_factor = {
            key: math.exp(self.rng.gauss(0, station_spread)) for key in self.stations
        }
        self._reports: dict[tuple[str, int], list[dict[str, Any]]] = {}
        # decision_counts sums by (plant, ring, first interval): (last interval, sums)
        self._sums: dict[tuple[str, str | None, int], tuple[int, dict[Any, list[int]]]] = {}
        for ring, target, count in rings:
            names = []
            for i in range(count):
                name = f"sim-{ring}-{i:05d}"
                offline: list[tuple[float, float]] = []
                if self.rng.random() < offline_share:
                    begin = start + self.rng.uniform(0, horizon_s)
                    offline.append((begin, begin + self.rng.uniform(1 * HOUR, 6 * HOUR)))
                device = self._new_device(
                    name, ring, offline, dict(ring_components.get(ring, components))
                )
                device.record(start - horizon_s)
                device.deployed_to.add(target)  # it runs the group's release already
                self.devices[name] = device
                names.append(name)
            self.targets[target] = names
            self.ring_of_target[target] = ring

    def _new_device(
        self,
        name: str,
        ring: str,
        offline: list[tuple[float, float]],
        components: dict[str, str],
    ) -> _Device:
        """A device at the next station in turn, with its own (seeded) latency and reject-rate
        spread."""
        line, station = self.stations[len(self.devices) % len(self.stations)]
        return _Device(
            name=name,
            ring=ring,
            offline=offline,
            latency_factor=math.exp(self.rng.gauss(0, 0.05)),
            rate_factor=math.exp(self.rng.gauss(0, 0.1)) * self.station_factor[(line, station)],
            components=components,
            line=line,
            station=station,
        )

    # -- behaviour -----------------------------------------------------------------------------

    def behaviour(self, version: str) -> ModelBehaviour:
        """The behaviour of a model component version. A shadow carrier decides as its served
        model and crashes as its shadow would (the shadow scores in the inspector's process)."""
        if version in self.carriers:
            served, shadow = self.carriers[version]
            return replace(
                self.behaviour(served),
                crash_per_start=self.behaviour(shadow).crash_per_start,
                crash_per_hour=self.behaviour(shadow).crash_per_hour,
            )
        return self.behaviours.get(version, self.default_behaviour)

    # -- FleetApi ------------------------------------------------------------------------------

    def publish_model(self, package: ModelPackage) -> PublishedModel:
        """Record the model component version (as Greengrass would after CreateComponentVersion).

        Component versions are immutable: CreateComponentVersion of an existing version fails
        with ConflictException (API reference); the same bytes again stand for a resumed
        publish and return the existing version, as :class:`rollout.aws.AwsFleet` does.
        """
        version = package.manifest.version
        key = (MODEL_COMPONENT, version)
        self.calls.append(("publish_model", version))
        existing = self.published.get(key)
        if existing is not None and existing.sha256 != package.manifest.sha256:
            raise BadInputError(
                f"{MODEL_COMPONENT} {version} already exists with a different artifact"
            )
        if key not in self.published:
            self._record(version, package.manifest.sha256)
        return self.published[key]

    def _record(self, version: str, sha256: str) -> PublishedModel:
        """A model component version as CreateComponentVersion leaves it (here, immediately)."""
        key = (MODEL_COMPONENT, version)
        self.known_versions.add(key)
        self.published[key] = PublishedModel(
            component=MODEL_COMPONENT,
            version=version,
            arn=f"arn:aws:greengrass:sim:000000000000:components:{MODEL_COMPONENT}:versions:{version}",
            artifact_uri=f"s3://sim-artifacts/{MODEL_COMPONENT}/{version}/model-package.zip",
            sha256=sha256,
        )
        return self.published[key]

    def publish_shadow(self, served_version: str, package: ModelPackage) -> PublishedModel:
        """Record the shadow carrier of ``package`` on ``served_version`` (which must exist)."""
        if (MODEL_COMPONENT, served_version) not in self.known_versions:
            raise BadInputError(
                f"simulator: {MODEL_COMPONENT} {served_version} was never published"
            )
        self.publish_model(package)  # the candidate's behaviour is looked up by its version
        version = shadow_carrier_version(served_version, package.manifest.version)
        self.calls.append(("publish_shadow", version))
        self.carriers[version] = (served_version, package.manifest.version)
        return self._record(version, package.manifest.sha256)

    def create_deployment(self, request: dict[str, Any]) -> str:
        """Create a deployment; it replaces the target's previous one (one per target).

        A request with a ``clientToken`` seen before returns the deployment it created:
        "Idempotency means that the request is successfully processed only once, even if you
        send the request multiple times" (API reference, CreateDeployment ``clientToken``).
        """
        token = request.get("clientToken")
        if token and token in self.tokens:
            return self.tokens[token]
        target = request["targetArn"]
        if target not in self.targets:
            raise BadInputError(f"simulator: no thing group {target}")
        components = {
            name: spec["componentVersion"] for name, spec in request.get("components", {}).items()
        }
        for name, version in components.items():
            if (name, version) not in self.known_versions:
                raise BadInputError(f"simulator: component {name} {version} was never published")
        previous = self.active.get(target)
        if previous:
            old = self.deployments[previous]
            old.status = "INACTIVE"
            if old.job_status == "IN_PROGRESS":
                old.job_status = "CANCELED"
            for ex in old.executions.values():
                if ex.status == "QUEUED" or (ex.status == "IN_PROGRESS" and not ex.released):
                    ex.status = "CANCELED"
        job = request.get("iotJobConfiguration", {})
        rollout = job.get("jobExecutionsRolloutConfig", {})
        exp = rollout.get("exponentialRate")
        policies = request.get("deploymentPolicies", {})
        timeout = job.get("timeoutConfig", {}).get("inProgressTimeoutInMinutes")
        deployment_id = f"sim-{len(self.deployments) + 1:04d}"
        dep = _Deployment(
            deployment_id=deployment_id,
            target=target,
            components=components,
            rollback=policies.get("failureHandlingPolicy", "ROLLBACK") == "ROLLBACK",
            created=self.now,
            base_rate=float(exp["baseRatePerMinute"]) if exp else 1000.0,
            factor=float(exp["incrementFactor"]) if exp else 1.0,
            increase_every=int(
                exp.get("rateIncreaseCriteria", {}).get("numberOfSucceededThings", 0) or 0
            )
            if exp
            else 0,
            max_rate=float(rollout.get("maximumPerMinute", 1000)),
            timeout_s=float(timeout) * 60 if timeout else None,
            abort=list(job.get("abortConfig", {}).get("criteriaList", [])),
            executions={name: _Execution(name) for name in self.targets[target]},
            configuration={
                name: json.loads(spec["configurationUpdate"]["merge"])
                for name, spec in request.get("components", {}).items()
                if (spec.get("configurationUpdate") or {}).get("merge")
            },
        )
        dep.rate = dep.base_rate
        self.deployments[deployment_id] = dep
        self.active[target] = deployment_id
        if token:
            self.tokens[token] = deployment_id
        self.calls.append(("create_deployment", request))
        return deployment_id

    def deployment_progress(self, deployment_id: str) -> DeploymentProgress:
        """Deployment status, job status and each thing's execution status."""
        dep = self.deployments[deployment_id]
        counts: dict[str, int] = {}
        for ex in dep.executions.values():
            counts[ex.status] = counts.get(ex.status, 0) + 1
        executions = {name: ex.status for name, ex in dep.executions.items()}
        return DeploymentProgress(deployment_id, dep.status, dep.job_status, counts, executions)

    def core_devices(self, target_arn: str) -> list[CoreDevice]:
        """``list_core_devices(thingGroupArn=...)``: "only core devices that have successfully
        deployed a deployment that targets the thing group. When you remove a core device from a
        thing group, the list continues to include that core device" (API reference,
        ListCoreDevices). Status UNHEALTHY when a component is BROKEN (API_CoreDevice)."""
        return [
            CoreDevice(name, "UNHEALTHY" if device.broken else "HEALTHY")
            for name, device in self.devices.items()
            if target_arn in device.deployed_to
        ]

    def ring_deployment(self, target_arn: str) -> RunningDeployment | None:
        """The target's latest deployment (``list_deployments`` LATEST_ONLY + get_deployment)."""
        dep_id = self.active.get(target_arn)
        if dep_id is None:
            return None
        dep = self.deployments[dep_id]
        return RunningDeployment(dep_id, dict(dep.components), dict(dep.configuration))

    def ring_members(self, target_arn: str) -> list[str]:
        """The things in the ring's group now (``iot.list_things_in_thing_group``)."""
        return list(self.targets[target_arn])

    def add_device(self, target_arn: str, *, online_from: float | None = None) -> str:
        """A new core device joins a ring's group (provisioned now, nothing deployed yet).

        The active deployment's continuous job is sent to it: "It continues to run and is sent
        to any new devices (things) that are added to the target group" (IoT developer guide,
        key-concepts-jobs, Continuous job). ``online_from``: offline until then.
        """
        ring = self.ring_of_target[target_arn]
        name = f"sim-{ring}-{len(self.targets[target_arn]):05d}-joined"
        offline = [(self.now, online_from)] if online_from and online_from > self.now else []
        device = self._new_device(name, ring, offline, {})
        device.record(self.now)
        self.devices[name] = device
        self.targets[target_arn].append(name)
        dep_id = self.active.get(target_arn)
        if dep_id and self.deployments[dep_id].job_status == "IN_PROGRESS":
            self.deployments[dep_id].executions[name] = _Execution(name)
        return name

    def installed_components(self, device: str) -> dict[str, str]:
        """What the device runs (``list_installed_components``)."""
        self.calls.append(("installed_components", device))
        return dict(self.devices[device].components)

    def effective_deployments(self, device: str) -> list[dict[str, Any]]:
        """The deployment that applies to a device (its ring's active one)."""
        ring_target = next(t for t, names in self.targets.items() if device in names)
        dep_id = self.active.get(ring_target)
        if not dep_id:
            return []
        ex = self.deployments[dep_id].executions[device]
        return [
            {
                "deploymentId": dep_id,
                "targetArn": ring_target,
                "coreDeviceExecutionStatus": ex.status,
            }
        ]

    def published_as(self, package: ModelPackage) -> bool | None:
        """Whether the package's version was published from these bytes (None: never)."""
        version = package.manifest.version
        found = self.published.get((MODEL_COMPONENT, version))
        sha = found.sha256 if found is not None else self.released_sha256.get(version)
        return None if sha is None else sha == package.manifest.sha256

    def reject_model_package(self, arn: str, reason: str) -> None:
        """Record the registry update (UpdateModelPackage ModelApprovalStatus=Rejected)."""
        self.calls.append(("reject_model_package", {"arn": arn, "reason": reason}))
        self.rejected[arn] = reason

    def fetch_model_package(self, arn: str, workdir: Path) -> Path:
        """The simulator has no SageMaker: pass a package directory instead."""
        raise BadInputError(f"--simulate needs a model package directory, not {arn}")

    def ring_health(
        self, plant: str, ring: str, target_arn: str, start: float, end: float, model_version: str
    ) -> RingHealth:
        """Aggregate the ring's health messages over ``[start, end)`` as the gates read them;
        the healthy devices as AWS gives them: the group's ``list_core_devices`` whose status
        is HEALTHY (:meth:`core_devices`), by name."""
        names = self.targets[target_arn]
        well = tuple(sorted(d.name for d in self.core_devices(target_arn) if d.status == "HEALTHY"))
        health = aggregate(
            self.health_messages(plant, target_arn, start, end),
            devices=len(names),
            healthy=len(well),
            version=model_version,
        )
        return replace(health, healthy_devices=well)

    def health_messages(
        self, plant: str, target_arn: str, start: float, end: float
    ) -> list[dict[str, Any]]:
        """Inspector-format (v1) health messages of a ring's devices over ``[start, end)``.

        One message per device, health interval and model version run in it; a window holds
        the intervals that ended in ``(start, end]`` (as CloudWatch sums datapoints by
        timestamp). An interval's counts are drawn once and kept.
        """
        if end > self.now + 1e-6:
            raise ValueError(f"simulator: health asked for the future ({end} > {self.now})")
        first = math.floor(start / self.report_s) + 1
        last = math.floor(end / self.report_s)
        messages: list[dict[str, Any]] = []
        for name in self.targets[target_arn]:
            for k in range(first, last + 1):
                messages += self._report(plant, name, k)
        return messages

    def _report(self, plant: str, name: str, k: int) -> list[dict[str, Any]]:
        """The messages of device ``name`` for health interval ``k`` (ending at k·report_s)."""
        key = (name, k)
        if key in self._reports:
            return self._reports[key]
        device = self.devices[name]
        t0, t1 = (k - 1) * self.report_s, k * self.report_s
        messages: list[dict[str, Any]] = []
        for version, seconds in self._running(device, t0, t1).items():
            frames = int(seconds * self.parts_per_second)
            if frames <= 0:
                continue
            served, shadow_version = self.carriers.get(version, (version, None))
            model = self.behaviour(served)
            p_served = min(1.0, model.reject_rate * device.rate_factor)
            rejects = _binomial(self.rng, frames, p_served)
            manual = _binomial(self.rng, frames - rejects, model.manual_rate)
            p99 = model.latency_p99_ms * device.latency_factor
            shadow = None
            if shadow_version is not None:
                shadow = self._shadow_figures(shadow_version, device, frames, rejects, p_served)
            labels = self._labels(served, rejects, manual)
            messages.append(
                {
                    "v": 1,
                    "plant": plant,
                    "line": device.line,
                    "station": device.station,
                    "device": name,
                    "ring": device.ring,
                    "ts": _rfc3339(t1),
                    "seq": k,
                    "interval_s": self.report_s,
                    "healthy": not device.broken,
                    "model": f"sim@{served}",
                    "frames": frames,
                    "counts": {
                        "pass": frames - rejects - manual,
                        "reject": rejects,
                        "manual": manual,
                    },
                    "reasons": {},
                    "latency_ms": {
                        "p50": round(p99 / 2.5, 3),
                        "p99": round(p99, 3),
                        "max": round(p99 * 1.2, 3),
                    },
                    "score_hist": {"edges": [], "counts": []},
                    "backlog": 0,
                    "last_error": "component errored" if device.errors else None,
                    "shadow": shadow,
                    "labels": labels,
                    "uploads": None,  # the simulated devices upload no samples
                }
            )
        self._reports[key] = messages
        return messages

    def _labels(self, served: str, rejects: int, manual: int) -> dict[str, Any] | None:
        """The health message's ``labels``: operators' verdicts on a share of the interval's
        rejects and manual parts, as the inspector counts them (inspector.quality)."""
        share_reject, share_manual = self.review_share
        if share_reject <= 0 and share_manual <= 0:
            return None
        model = self.behaviour(served)
        entry: dict[str, Any] = {"model": f"sim@{served}"}
        for decision, parts, share, p in (
            ("reject", rejects, share_reject, model.reject_precision),
            ("manual", manual, share_manual, model.manual_defect_share),
        ):
            reviewed = _binomial(self.label_rng, parts, share)
            defect = _binomial(self.label_rng, reviewed, p)
            entry[decision] = {"good": reviewed - defect, "defect": defect}
        if not any(sum(entry[d].values()) for d in ("reject", "manual")):
            return None
        return entry

    def _shadow_figures(
        self, version: str, device: _Device, frames: int, rejects: int, p_served: float
    ) -> dict[str, Any]:
        """The shadow part of a health message: the shadow's rejects against the served ones.

        ``agreement`` of the shadow's behaviour is the share of the smaller reject set the two
        models share (a good retrain flags mostly the same parts; one that rejects nothing
        shares none): of the served rejects, ``both`` are the shadow's too, and the shadow
        rejects the rest of its own among the parts the served model passed.
        """
        model = self.behaviour(version)
        p_shadow = min(1.0, model.reject_rate * device.rate_factor)
        overlap = model.agreement if model.agreement is not None else 1.0
        share = overlap * min(p_served, p_shadow) / p_served if p_served > 0 else 0.0
        both = _binomial(self.rng, rejects, min(1.0, share))
        own = max(0.0, p_shadow * frames - both)
        shadow_only = _binomial(
            self.rng, frames - rejects, min(1.0, own / max(1, frames - rejects))
        )
        agree = frames - (rejects - both) - shadow_only
        return {
            "model": f"sim@{version}",
            "frames": frames,
            "agreement": round(agree / frames, 4),
            "errors": 0,
            "reject": {"both": both, "served_only": rejects - both, "shadow_only": shadow_only},
        }

    def decision_counts(
        self, plant: str, start: float, end: float, ring: str | None = None
    ) -> list[StratumCounts]:
        """The plant's health messages over ``[start, end)`` summed by ring, line, station and
        served model version (what the rollout metrics' dimensions give on AWS).

        The controller asks again at every look with the same start and a later end: a window
        that extends the last one asked adds only its new intervals (intervals never change
        once drawn)."""
        first = math.floor(start / self.report_s) + 1
        last = math.floor(end / self.report_s)
        cache_key = (plant, ring, first)
        cached = self._sums.get(cache_key)
        if cached is not None and cached[0] <= last:
            done, sums = cached[0], {k: list(v) for k, v in cached[1].items()}
        else:
            done, sums = first - 1, {}
        for target, names in self.targets.items():
            if ring is not None and self.ring_of_target[target] != ring:
                continue
            for name in names:
                for k in range(done + 1, last + 1):
                    for message in self._report(plant, name, k):
                        version = message["model"].rsplit("@", 1)[1]
                        key = (message["ring"], message["line"], message["station"], version)
                        acc = sums.setdefault(key, [0, 0, 0])
                        counts = message["counts"]
                        acc[0] += counts["pass"] + counts["reject"] + counts["manual"]
                        acc[1] += counts["reject"]
                        acc[2] += counts["manual"]
        self._sums[cache_key] = (last, {k: list(v) for k, v in sums.items()})
        return [StratumCounts(*key, *acc) for key, acc in sorted(sums.items())]

    def shadow_counts(
        self, plant: str, ring: str, version: str, start: float, end: float
    ) -> ShadowCounts:
        """The ring's shadow figures for shadow model ``version`` over ``[start, end)``."""
        total = ShadowCounts()
        for target, name in self.ring_of_target.items():
            if name != ring:
                continue
            for message in self.health_messages(plant, target, start, end):
                shadow = message.get("shadow")
                if not shadow or shadow["model"].rsplit("@", 1)[1] != version:
                    continue
                r = shadow["reject"]
                total += ShadowCounts(
                    shadow["frames"], r["both"], r["served_only"], r["shadow_only"]
                )
        return total

    # -- simulation ----------------------------------------------------------------------------

    def _running(self, device: _Device, start: float, end: float) -> dict[str, float]:
        """Seconds per model version the device was online and running in ``[start, end)``."""
        out: dict[str, float] = {}
        hist = device.history
        idx = max(0, bisect.bisect_right([t for t, _ in hist], start) - 1)
        for i in range(idx, len(hist)):
            seg_start = max(start, hist[i][0])
            seg_end = min(end, hist[i + 1][0] if i + 1 < len(hist) else end)
            version = hist[i][1]
            if seg_end <= seg_start or version is None:
                continue
            seconds = seg_end - seg_start
            for off_start, off_end in device.offline:
                overlap = min(seg_end, off_end) - max(seg_start, off_start)
                if overlap > 0:
                    seconds -= overlap
            if seconds > 0:
                out[version] = out.get(version, 0.0) + seconds
        return out

    def _advance_to(self, target: float) -> None:
        while self.now + self.tick_s <= target + 1e-9:
            self._tick(self.now + self.tick_s)
        if target > self.now:
            self._tick(target)

    def _tick(self, t: float) -> None:
        dt = t - self.now
        self.now = t
        self.clock._set(t)
        for dep_id in list(self.active.values()):
            dep = self.deployments[dep_id]
            if dep.job_status == "IN_PROGRESS":
                self._step_job(dep, dt)
            elif dep.job_status == "CANCELED" and dep.status == "ACTIVE":
                # cancelled by its abort criteria: queued executions were cancelled, but one in
                # progress is cancelled only with force (CancelJob ``force``: "If false, only
                # job executions that are QUEUED are canceled"), so its device finishes it and
                # reports the result
                self._finish_in_progress(dep)
        self._runtime_crashes(dt)

    def _step_job(self, dep: _Deployment, dt: float) -> None:
        t = self.now
        dep.budget = min(dep.budget + dep.rate * dt / 60.0, max(dep.rate, 1.0))
        for ex in dep.executions.values():
            if ex.status == "QUEUED" and not ex.released and dep.budget >= 1.0:
                ex.released = True
                dep.budget -= 1.0
            device = self.devices[ex.device]
            if ex.released and ex.status == "QUEUED" and device.online(t):
                ex.status = "IN_PROGRESS"
                ex.started = t
                ex.finish_at = t + self.rng.uniform(20.0, 90.0)
            if ex.status == "IN_PROGRESS":
                if dep.timeout_s is not None and t - ex.started > dep.timeout_s:
                    ex.status = "TIMED_OUT"
                elif t >= ex.finish_at and device.online(t):
                    ex.status = self._install(device, dep, t)
        succeeded = sum(1 for ex in dep.executions.values() if ex.status == "SUCCEEDED")
        if dep.increase_every and succeeded >= dep.last_increase_at + dep.increase_every:
            dep.last_increase_at = succeeded - succeeded % dep.increase_every
            dep.rate = min(dep.max_rate, dep.rate * dep.factor)
        dep.rate = min(dep.rate, dep.max_rate)
        self._check_abort(dep)
        # no COMPLETED: "A continuous job is always in progress and continues to run for any new
        # devices that are added to the target group" (IoT developer guide, iot-jobs-lifecycle);
        # a Greengrass deployment's job stays IN_PROGRESS while the deployment is active
        # (Greengrass developer guide, check-deployment-status)

    def _finish_in_progress(self, dep: _Deployment) -> None:
        t = self.now
        for ex in dep.executions.values():
            device = self.devices[ex.device]
            if ex.status != "IN_PROGRESS":
                continue
            if dep.timeout_s is not None and t - ex.started > dep.timeout_s:
                ex.status = "TIMED_OUT"
            elif t >= ex.finish_at and device.online(t):
                ex.status = self._install(device, dep, t)

    def _install(self, device: _Device, dep: _Deployment, t: float) -> str:
        status = self._apply(device, dep, t)
        if status == "SUCCEEDED":
            device.deployed_to.add(dep.target)
        return status

    def _apply(self, device: _Device, dep: _Deployment, t: float) -> str:
        previous = dict(device.components)
        device.components = dict(dep.components)
        device.broken = False
        device.errors = []
        version = device.components.get(MODEL_COMPONENT)
        model = self.behaviour(version) if version else self.default_behaviour
        starts = 0
        while starts < BROKEN_AFTER_ERRORS and self.rng.random() < model.crash_per_start:
            starts += 1
            device.errors.append(t)
        if starts >= BROKEN_AFTER_ERRORS:
            if dep.rollback:
                device.components = previous
                device.errors = []
            else:
                device.broken = True
            device.record(t)
            return "FAILED"
        device.record(t)
        return "SUCCEEDED"

    def _check_abort(self, dep: _Deployment) -> None:
        executed = [ex for ex in dep.executions.values() if ex.status in TERMINAL_EXECUTION_STATES]
        for criteria in dep.abort:
            failure = criteria.get("failureType", "FAILED")
            states = ("FAILED", "REJECTED", "TIMED_OUT") if failure == "ALL" else (failure,)
            failed = sum(1 for ex in executed if ex.status in states)
            if len(executed) >= int(criteria.get("minNumberOfExecutedThings", 1)) and (
                100.0 * failed / max(1, len(executed)) >= float(criteria["thresholdPercentage"])
            ):
                dep.job_status = "CANCELED"
                for ex in dep.executions.values():
                    if ex.status == "QUEUED":
                        ex.status = "CANCELED"
                return

    def _runtime_crashes(self, dt: float) -> None:
        t = self.now
        rates = [b.crash_per_hour for b in self.behaviours.values()]
        if max([self.default_behaviour.crash_per_hour, *rates]) <= 0:
            return
        for device in self.devices.values():
            version = device.model()
            if version is None:
                continue
            rate = self.behaviour(version).crash_per_hour
            if rate <= 0 or not device.online(t):
                continue
            if self.rng.random() < 1 - math.exp(-rate * dt / HOUR):
                device.errors = [e for e in device.errors if e > t - HOUR] + [t]
                if len(device.errors) >= BROKEN_AFTER_ERRORS:
                    device.broken = True
                    device.record(t)


def _rfc3339(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(ts * 1000) % 1000:03d}Z"
    )


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw; normal approximation for large n (counts of frames are large)."""
    if p <= 0 or n <= 0:
        return 0
    if p >= 1:
        return n
    if n < 50:
        return sum(1 for _ in range(n) if rng.random() < p)
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return max(0, min(n, round(rng.gauss(mean, sd))))


def ring_sizes(plant: PlantConfig, devices: int) -> dict[str, int]:
    """Devices per ring by the ring percentages (largest remainder; at least one per ring)."""
    exact = [(r.name, devices * r.percent / 100.0) for r in plant.rings]
    sizes = {name: max(1, math.floor(x)) for name, x in exact}
    order = sorted(exact, key=lambda item: item[1] - math.floor(item[1]), reverse=True)
    for name, _ in order[: max(0, devices - sum(sizes.values()))]:
        sizes[name] += 1
    return sizes


def simulated_fleet(
    plant: PlantConfig,
    release: Release,
    *,
    new_version: str,
    scenario: str = "good",
    devices: int | None = None,
    seed: int = 0,
    offline_share: float = 0.02,
    base: ModelBehaviour | None = None,
    review_share: tuple[float, float] = (0.3, 0.9),
) -> FleetSimulator:
    """A simulator of ``plant`` running ``release``, where ``new_version`` behaves per scenario;
    operators review ``review_share`` of the rejects and of the manual parts."""
    if scenario not in SCENARIOS:
        raise BadInputError(f"unknown scenario {scenario!r} (scenarios: {', '.join(SCENARIOS)})")
    base = base or ModelBehaviour()
    count = devices if devices is not None else plant.expected_devices
    sizes = ring_sizes(plant, count)
    ring_components = {name: dict(entry.components) for name, entry in release.rings.items()}
    behaviours = {
        entry.components[MODEL_COMPONENT]: base
        for entry in release.rings.values()
        if MODEL_COMPONENT in entry.components
    }
    behaviours[new_version] = SCENARIOS[scenario](base, random.Random(seed))
    first = next(iter(ring_components.values()))
    return FleetSimulator(
        [(r.name, plant.ring_group_arn(r.name), sizes[r.name]) for r in plant.rings],
        first,
        seed=seed,
        behaviours=behaviours,
        default_behaviour=base,
        offline_share=offline_share,
        ring_components=ring_components,
        stations=[(line.name, st.name) for line in plant.lines for st in line.stations],
        review_share=review_share,
    )

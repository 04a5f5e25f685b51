"""The narrow interface between the rollout controller and the fleet, and the values it returns.

Two implementations: :class:`rollout.aws.AwsFleet` (boto3) and
:class:`rollout.simulator.FleetSimulator` (seeded, simulated clock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from inspector.model_package import ModelPackage
from stacks.deployment_spec import release_configuration

MODEL_COMPONENT = "com.lineguard.Model"
"""The Greengrass component whose artifact is the model package; its version is the package's."""

TERMINAL_EXECUTION_STATES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "CANCELED", "REMOVED")
FAILED_EXECUTION_STATES = ("FAILED", "TIMED_OUT", "REJECTED")


@dataclass(frozen=True)
class PublishedModel:
    """A model component version created from a model package."""

    component: str
    version: str
    arn: str
    artifact_uri: str
    sha256: str


@dataclass(frozen=True)
class DeploymentProgress:
    """Where a ring's deployment stands: Greengrass status plus its IoT job's executions.

    A deployment to a thing group is a *continuous* IoT job: "While a deployment is active, the
    AWS IoT job's status is IN_PROGRESS" (Greengrass developer guide, check-deployment-status),
    and "a continuous job is always in progress and continues to run for any new devices that
    are added to the target group" (IoT developer guide, iot-jobs-lifecycle). ``job_status``
    therefore never says the ring is done; ``executions`` (thing name → the status of its job
    execution) does, read against the ring's membership (:class:`RingRollout`).
    """

    deployment_id: str
    status: str
    job_status: str
    counts: dict[str, int] = field(default_factory=dict)
    executions: dict[str, str] = field(default_factory=dict)

    def count(self, *states: str) -> int:
        """Sum of the job executions in the given states."""
        return sum(self.counts.get(s, 0) for s in states)

    @property
    def total(self) -> int:
        """All job executions of the deployment."""
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        """Executions that reached a terminal state."""
        return self.count(*TERMINAL_EXECUTION_STATES)

    @property
    def failed(self) -> int:
        """Executions that failed, timed out or were rejected."""
        return self.count(*FAILED_EXECUTION_STATES)

    @property
    def superseded(self) -> bool:
        """Another deployment to the target replaced this one: "After you create a new revision
        of a deployment, the status of the previous revision's AWS IoT job changes to
        CANCELLED" (check-deployment-status), and the replaced deployment is INACTIVE."""
        return self.status == "INACTIVE"

    @property
    def aborted(self) -> bool:
        """The IoT job was cancelled by its abort criteria, or the deployment failed or was
        cancelled; not a deployment that another one replaced (:attr:`superseded`)."""
        if self.superseded:
            return False
        return self.job_status in ("CANCELED", "DELETION_IN_PROGRESS") or self.status in (
            "CANCELED",
            "FAILED",
        )


@dataclass(frozen=True)
class RunningDeployment:
    """The deployment a ring's group has now: the latest for its target (one per target).

    ``configuration`` holds its merges as the ring's release records them: the inspector's
    ``ring``, which ``deployment_spec`` adds to every ring's deployment, is left out
    (:func:`stacks.deployment_spec.release_configuration`), so what a ring runs compares equal
    to the release it was deployed from.
    """

    deployment_id: str
    components: dict[str, str]
    configuration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "configuration", release_configuration(self.configuration))


@dataclass(frozen=True)
class RingRollout:
    """A ring's deployment measured against the ring's members now.

    The ring is deployed when every member has a terminal execution for this deployment;
    ``stalled`` are the members that had none when the controller's wait ran out (offline,
    stuck, never reached): they count as failures, not as waiting.
    """

    progress: DeploymentProgress
    members: tuple[str, ...]
    stalled: tuple[str, ...] = ()

    def status(self, thing: str) -> str:
        """The member's execution status; ``NONE`` when the job has not reached it yet."""
        return self.progress.executions.get(thing, "NONE")

    @property
    def total(self) -> int:
        """Members of the ring."""
        return len(self.members)

    @property
    def succeeded(self) -> int:
        """Members whose execution succeeded."""
        return sum(1 for m in self.members if self.status(m) == "SUCCEEDED")

    @property
    def failed(self) -> int:
        """Members whose execution failed, timed out or was rejected, plus the stalled."""
        stalled = set(self.stalled)
        return sum(
            1
            for m in self.members
            if self.status(m) in FAILED_EXECUTION_STATES
            or (m in stalled and self.status(m) not in TERMINAL_EXECUTION_STATES)
        )

    @property
    def pending(self) -> list[str]:
        """Members without a terminal execution (stalled ones included)."""
        return [m for m in self.members if self.status(m) not in TERMINAL_EXECUTION_STATES]

    @property
    def done(self) -> bool:
        """Every member has a terminal execution, or the job was aborted."""
        return self.progress.aborted or not self.pending

    @property
    def aborted(self) -> bool:
        """The deployment's IoT job was cancelled by its abort criteria (or the deployment)."""
        return self.progress.aborted

    def remeasured(self, progress: DeploymentProgress, members: list[str]) -> RingRollout:
        """The same rollout read again later: members still pending from the wait stay stalled,
        members that joined since are pending, not failed."""
        return RingRollout(progress, tuple(members), self.stalled)


@dataclass(frozen=True)
class RingHealth:
    """What a ring's devices reported over a time window (health messages + device status)."""

    devices: int
    healthy: int
    reporting: int
    """``healthy``: devices healthy on the version asked for; ``reporting``: sent health."""
    decisions: dict[str, int] = field(default_factory=dict)
    latency_p99_ms: float | None = None
    shadow_agreement: float | None = None
    healthy_devices: tuple[str, ...] | None = None
    """The healthy devices by name, where known: the gate then counts the ring's members that
    are healthy *and* whose execution succeeded, not a number of devices that may include
    removed ones or ones the deployment failed on."""
    labels: dict[str, int] = field(default_factory=dict)
    """Operators' verdicts on parts the version judged (review station): ``reviewed_rejects``,
    ``defective_rejects``, ``reviewed_manual``, ``defective_manual`` (standing verdicts: the
    device counts a replaced verdict -1 / +1)."""

    @property
    def frames(self) -> int:
        """Frames judged in the window."""
        return sum(self.decisions.values())

    def rate(self, decision: str) -> float | None:
        """Share of frames with this decision, or None with no frames."""
        return self.decisions.get(decision, 0) / self.frames if self.frames else None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the persisted state and the report."""
        return {
            "devices": self.devices,
            "healthy": self.healthy,
            "reporting": self.reporting,
            "decisions": dict(self.decisions),
            "latency_p99_ms": self.latency_p99_ms,
            "shadow_agreement": self.shadow_agreement,
            "healthy_devices": None if self.healthy_devices is None else list(self.healthy_devices),
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RingHealth:
        """Inverse of :meth:`to_json`."""
        return cls(
            devices=int(doc["devices"]),
            healthy=int(doc["healthy"]),
            reporting=int(doc["reporting"]),
            decisions={k: int(v) for k, v in doc.get("decisions", {}).items()},
            latency_p99_ms=doc.get("latency_p99_ms"),
            shadow_agreement=doc.get("shadow_agreement"),
            healthy_devices=None
            if doc.get("healthy_devices") is None
            else tuple(doc["healthy_devices"]),
            labels={k: int(v) for k, v in (doc.get("labels") or {}).items()},
        )


@dataclass(frozen=True)
class StratumCounts:
    """Decisions of one ring's devices at one line and station, on one served model version,
    over a time window: the unit the rollout's comparison gates match candidate and control by
    (same line, same station, same shift)."""

    ring: str
    line: str
    station: str
    version: str
    frames: int
    reject: int
    manual: int


@dataclass(frozen=True)
class ShadowCounts:
    """A shadow model's reject decisions against the served model's on the same frames.

    ``both``: frames both rejected; ``served_only`` / ``shadow_only``: frames only one of them
    rejected; the rest of ``frames`` neither rejected. Enough for Cohen's kappa and positive
    agreement on rejects (raw agreement is about 1 - prevalence and tells nothing)."""

    frames: int = 0
    both: int = 0
    served_only: int = 0
    shadow_only: int = 0

    def __add__(self, other: ShadowCounts) -> ShadowCounts:
        return ShadowCounts(
            self.frames + other.frames,
            self.both + other.both,
            self.served_only + other.served_only,
            self.shadow_only + other.shadow_only,
        )


@dataclass(frozen=True)
class CoreDevice:
    """A Greengrass core device and its reported status (HEALTHY or UNHEALTHY)."""

    name: str
    status: str


class Clock(Protocol):
    """Time source of the controller: wall clock in production, simulated in the simulator."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait (or advance simulated time) this many seconds."""
        ...


class WallClock:
    """The real clock."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        time.sleep(seconds)


class FleetApi(Protocol):
    """Everything the controller needs from AWS (or from the simulator)."""

    def publish_model(self, package: ModelPackage) -> PublishedModel:
        """Copy the package to the artifact prefix and create the model component version."""
        ...

    def publish_shadow(self, served_version: str, package: ModelPackage) -> PublishedModel:
        """Publish the shadow carrier (:func:`shadow_carrier_version`): the published model
        component ``served_version``'s model, with ``package`` riding along as its shadow."""
        ...

    def create_deployment(self, request: dict[str, Any]) -> str:
        """Send a ``greengrassv2.create_deployment`` request; return the deployment id."""
        ...

    def deployment_progress(self, deployment_id: str) -> DeploymentProgress:
        """Status of a deployment and its IoT job executions."""
        ...

    def core_devices(self, target_arn: str) -> list[CoreDevice]:
        """``list_core_devices`` of a ring: the core devices that have *successfully deployed*
        a deployment to the group (removed ones included), with their status."""
        ...

    def ring_members(self, target_arn: str) -> list[str]:
        """The things in a ring's thing group now (``iot.list_things_in_thing_group``)."""
        ...

    def ring_deployment(self, target_arn: str) -> RunningDeployment | None:
        """What the ring's group is deployed with now (None: no deployment yet)."""
        ...

    def ring_health(
        self, plant: str, ring: str, target_arn: str, start: float, end: float, model_version: str
    ) -> RingHealth:
        """Aggregate the ring's health over ``[start, end)``; ``healthy`` counts devices on
        ``model_version``."""
        ...

    def installed_components(self, device: str) -> dict[str, str]:
        """Component name → version installed on one core device, as it last reported."""
        ...

    def decision_counts(
        self, plant: str, start: float, end: float, ring: str | None = None
    ) -> list[StratumCounts]:
        """Decisions over ``[start, end)`` of every (ring, line, station, served model version)
        of the plant that judged frames then (health messages carry ring and model); only
        ``ring``'s when given."""
        ...

    def shadow_counts(
        self, plant: str, ring: str, version: str, start: float, end: float
    ) -> ShadowCounts:
        """Reject decisions of the shadow model ``version`` on ``ring``'s devices over
        ``[start, end)``, against the served model's decisions on the same frames."""
        ...

    def effective_deployments(self, device: str) -> list[dict[str, Any]]:
        """The deployments that apply to one core device (for ``status``)."""
        ...

    def fetch_model_package(self, arn: str, workdir: Path) -> Path:
        """Download an approved SageMaker model package's artifact; return the package dir,
        its manifest's version set from the registry (:func:`registry_version`)."""
        ...

    def published_as(self, package: ModelPackage) -> bool | None:
        """Whether ``com.lineguard.Model`` at the package's version was published from this
        package (True), from other bytes (False), or never (None)."""
        ...

    def reject_model_package(self, arn: str, reason: str) -> None:
        """Mark a registry model package Rejected (after its rollout was rolled back)."""
        ...


def shadow_carrier_version(served: str, candidate: str) -> str:
    """The Model component version that serves ``served`` and runs ``candidate`` as a shadow.

    ``<served major>.<served minor>.<candidate minor>``: registry versions always have patch 0
    (:func:`registry_version`), so a carrier never takes a released model's version, sorts
    between the served version and the next, and satisfies the inspector's plain
    ``>=1.0.0 <2.0.0`` requirement on the Model component under every semver reading (a
    pre-release tag would be read differently: npm ranges leave pre-releases out, the nucleus'
    semver4j compares them plainly).
    """
    try:
        major, minor, patch = (int(x) for x in served.split("."))
        cand_minor = int(candidate.split(".")[1])
    except (ValueError, IndexError):
        raise ValueError(f"cannot carry {candidate!r} as a shadow of {served!r}") from None
    if patch != 0 or cand_minor == 0:
        raise ValueError(
            f"cannot carry {candidate!r} as a shadow of {served!r}: the served version needs "
            "patch 0 and the candidate a minor version above 0 (registry versions have both)"
        )
    return f"{major}.{minor}.{cand_minor}"


def registry_version(trained_version: str, package_version: int) -> str:
    """The component version of a registered model: ``<major>.<registry version>.0``.

    The registry numbers the packages of a group 1, 2, 3, ... (SageMaker
    ``ModelPackageVersion``), so a retrain with default parameters still gets a new version;
    the trained version contributes only its major number (a breaking input change).
    """
    major = trained_version.split(".", 1)[0]
    if not major.isdigit() or package_version < 1:
        raise ValueError(f"cannot derive a version from {trained_version!r} / {package_version}")
    return f"{int(major)}.{package_version}.0"

"""The rollout controller: drive a model version through a plant's rings, gate, roll back."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inspector.model_package import ModelPackage
from rollout.errors import BadInputError, StateError
from rollout.fleet import (
    MODEL_COMPONENT,
    Clock,
    FleetApi,
    RingHealth,
    RingRollout,
    StratumCounts,
)
from rollout.gates import (
    Comparison,
    GateResult,
    compare,
    comparison_gates,
    deployment_gates,
    health_gates,
    quality_gates,
    shadow_gate,
    strata_for,
)
from rollout.state import S3StateStore, StateStore
from stacks.config import (
    PlantConfig,
    Release,
    ReleaseError,
    load_plant_release,
    parse_release,
    release_path,
    write_release,
)
from stacks.deployment_spec import deployment_spec

LEASE_S = 900.0
"""A controller's lease on a promotion lapses this long after its last checkpoint."""

MIN_BASELINE_S = 1800.0
"""The ring's baseline is measured over the bake time before deploying, at least this long."""

BEFORE_COUNTS_S = 24 * 3600.0
"""Where a ring's devices are their own control (no other ring's devices on the previous
version at the same line and station), their parts over this long before the deployment count:
a whole day, every shift, so the control side is never what keeps the test from deciding."""

LOOK_S = 900.0
"""During a bake the comparison gates look at the figures this often; a changed rate rolls back
at once (the sequential test's error rates hold at every look)."""


@dataclass
class Report:
    """The outcome of a promotion or rollback; ``status`` decides the exit code."""

    plant: str
    model_version: str
    status: str
    message: str
    rings: dict[str, Any] = field(default_factory=dict)
    failed: list[GateResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was rolled back and nothing failed."""
        return self.status in (
            "completed",
            "paused",
            "inconclusive",
            "already-released",
            "dry-run",
            "rolled-back-on-request",
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (the CLI prints it with ``--json`` and writes it beside the state)."""
        return {
            "plant": self.plant,
            "model_version": self.model_version,
            "status": self.status,
            "message": self.message,
            "failed_gates": [g.to_json() for g in self.failed],
            "rings": self.rings,
        }


def _with_components(release: Release, ring: str, components: dict[str, str]) -> Release:
    """``release`` with ``ring`` on ``components``, keeping the ring's configuration merges (the
    nucleus's among them), exactly as ``_write_ring`` writes it to the release file."""
    entry = release.ring(ring)
    configuration = {k: dict(v) for k, v in entry.configuration.items()} if entry else None
    return release.with_ring(ring, components, configuration=configuration)


def _not_back(devices: list[str]) -> str:
    if not devices:
        return "; every device checked is back"
    shown = ", ".join(devices[:10]) + (" ..." if len(devices) > 10 else "")
    return f"; {len(devices)} device(s) NOT back on the previous version: {shown}"


def default_owner() -> str:
    """Who this controller is: the CodeBuild build, else host and process."""
    build = os.environ.get("CODEBUILD_BUILD_ID")
    return build or f"{socket.gethostname()}:{os.getpid()}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controller:
    """Promotes one model version ring by ring; state lives in a :class:`StateStore`."""

    def __init__(
        self,
        *,
        plant: PlantConfig,
        fleet: FleetApi,
        clock: Clock,
        releases_dir: Path | str,
        state_dir: Path | str | None = None,
        store: StateStore | S3StateStore | None = None,
        release_sink: Callable[[Path], None] | None = None,
        owner: str | None = None,
        lease_s: float = LEASE_S,
        log: Callable[[str], None] = print,
        poll_s: float = 60.0,
    ) -> None:
        if store is None and state_dir is None:
            raise ValueError("a Controller needs a state_dir or a store")
        self.plant = plant
        self.fleet = fleet
        self.clock = clock
        self.releases_dir = Path(releases_dir)
        self.store = store if store is not None else StateStore(state_dir or ".", plant.name)
        self.release_sink = release_sink  # also puts each rewritten release file elsewhere
        self.owner = owner or default_owner()
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._log = log
        self._t0 = clock.now()

    # -- the state and its lease ------------------------------------------------------------

    def _save(self, state: dict[str, Any], *, release: bool = False) -> None:
        """Checkpoint the state (compare-and-swap) and renew this controller's lease."""
        state["lease"] = (
            None if release else {"owner": self.owner, "until": self.clock.now() + self.lease_s}
        )
        self.store.save(state)

    def _claim(self, state: dict[str, Any]) -> None:
        """Take the lease of an unfinished promotion, unless another live controller holds it."""
        lease = state.get("lease") or {}
        holder, until = lease.get("owner"), float(lease.get("until") or 0.0)
        if holder and holder != self.owner and until > self.clock.now():
            raise StateError(
                f"{self.store.where}: controller {holder} holds this promotion until "
                f"{_iso(until)} (renewed with every step; it lapses {self.lease_s / 60:.0f} min "
                "after that controller's last step): run again after that"
            )
        if holder and holder != self.owner:
            self.log(f"taking over from controller {holder} (its lease lapsed at {_iso(until)})")
        self._save(state)

    def _sleep(self, state: dict[str, Any], seconds: float) -> None:
        """Sleep, renewing the lease at least three times per lease period."""
        end = self.clock.now() + seconds
        while (left := end - self.clock.now()) > 0:
            self.clock.sleep(min(left, self.lease_s / 3))
            self._save(state)

    def _token(self, state: dict[str, Any], ring: str, kind: str) -> str:
        """CreateDeployment ``clientToken``: the same request after a crash is idempotent."""
        promotion = state.setdefault("promotion_id", uuid.uuid4().hex)  # older state files
        # a digest of the ring, not its name cut to fit 64 characters: rings sharing a long
        # prefix must not share a token (the second would get the first's deployment back)
        digest = hashlib.sha256(ring.encode("utf-8")).hexdigest()[:16]
        return f"{promotion[:32]}-{kind}-{digest}"

    # -- helpers ------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """Progress line prefixed with the elapsed (possibly simulated) time."""
        elapsed = int(self.clock.now() - self._t0)
        self._log(
            f"[+{elapsed // 3600:02d}:{elapsed % 3600 // 60:02d}:{elapsed % 60:02d}] {message}"
        )

    def _release(self) -> Release:
        return load_plant_release(self.plant, self.releases_dir)

    def _what_rings_run(self, release: Release) -> Release:
        """The release as the rings actually run it: each ring's latest deployment wins over
        the release file, which may lag (a failed sync, a manual deployment); that is what a
        rollback returns to."""
        for ring in self.plant.ring_names:
            running = self.fleet.ring_deployment(self._target(ring))
            if running is None:
                continue  # no deployment yet: the release file is all there is
            entry = release.ring(ring)
            recorded = (dict(entry.components), dict(entry.configuration)) if entry else None
            if recorded != (running.components, running.configuration):
                model = running.components.get(MODEL_COMPONENT, "none")
                self.log(
                    f"{ring}: runs deployment {running.deployment_id} ({MODEL_COMPONENT} "
                    f"{model}), not what the release file says; a rollback returns to what runs"
                )
            try:
                release = release.with_ring(
                    ring,
                    running.components,
                    configuration=running.configuration,
                    updated_at=entry.updated_at if entry else None,
                )
            except ValueError as exc:
                raise BadInputError(
                    f"{ring}: its deployment {running.deployment_id} is not a release this "
                    f"controller can return to: {exc}"
                ) from None
        return release

    def _write_ring(self, ring: str, components: dict[str, str], base: Release) -> Release:
        current = self._release()
        entry = base.ring(ring)
        release = current.with_ring(
            ring,
            components,
            configuration={k: dict(v) for k, v in entry.configuration.items()} if entry else None,
            updated_at=_iso(self.clock.now()),
        )
        path = release_path(self.plant.name, self.releases_dir)
        write_release(path, release)
        if self.release_sink is not None:
            self.release_sink(path)
        return release

    def _target(self, ring: str) -> str:
        return self.plant.ring_group_arn(ring)

    def _wait(
        self, state: dict[str, Any], ring: str, deployment_id: str, started: float
    ) -> RingRollout:
        """Poll until every member of the ring has a terminal execution for this deployment,
        the job is aborted, or the deadline passes (then the members still pending are
        ``stalled`` and count as failures).

        Not the job's status: a thing-group deployment is a continuous job and stays
        IN_PROGRESS for as long as the deployment is active (check-deployment-status).
        Membership is read on every poll, so a device that joins the ring mid-rollout is
        waited for too (a continuous job is sent to devices added to the group).
        """
        policy = self.plant.deployment
        target = self._target(ring)
        devices = max(1, len(self.fleet.ring_members(target)))
        release_minutes = math.ceil(devices / policy.rollout.base_rate_per_minute)
        deadline = started + 60.0 * (policy.in_progress_timeout_minutes + release_minutes + 15)
        last = ""
        while True:
            members = self.fleet.ring_members(target)
            rollout = RingRollout(self.fleet.deployment_progress(deployment_id), tuple(members))
            if rollout.progress.superseded:
                # someone else deployed to the ring (a `cdk deploy` from a lagging copy, a
                # console deployment): not a gate result, so no rollback on our own
                self._save(state, release=True)
                raise StateError(
                    f"{ring}: deployment {deployment_id} was replaced by another deployment to "
                    f"{target} outside this promotion; stopping without rolling back. Check what "
                    "the ring runs, then run `rollout rollback` or promote again"
                )
            summary = (
                f"{ring}: deployment {deployment_id}: {rollout.succeeded} succeeded, "
                f"{rollout.failed} failed, {len(rollout.pending)} pending of "
                f"{rollout.total} devices in the ring"
            )
            if rollout.aborted:
                summary += f" (IoT job {rollout.progress.job_status.lower()})"
            if summary != last:
                self.log(summary)
                last = summary
            if rollout.done:
                return rollout
            if self.clock.now() >= deadline:
                stalled = tuple(rollout.pending)
                self.log(
                    f"{ring}: {len(stalled)} device(s) without a result after the deadline "
                    f"count as failed: {', '.join(stalled[:5])}{' ...' if len(stalled) > 5 else ''}"
                )
                return RingRollout(rollout.progress, rollout.members, stalled)
            self._sleep(state, min(self.poll_s, max(1.0, deadline - self.clock.now())))

    # -- promotion ----------------------------------------------------------------------------

    def promote(
        self,
        package: ModelPackage,
        *,
        dry_run: bool = False,
        stop_after: str | None = None,
        model_package_arn: str | None = None,
    ) -> Report:
        """Publish the package as the model component and roll it out ring by ring.

        ``stop_after`` pauses once that ring passed (status ``paused``); promoting the same
        package again continues with the next ring. ``model_package_arn``: the registry entry
        the package came from; a rollback marks it Rejected.
        """
        if stop_after is not None and stop_after not in self.plant.ring_names:
            raise BadInputError(
                f"plant {self.plant.name!r} has no ring {stop_after!r} "
                f"(rings: {', '.join(self.plant.ring_names)})"
            )
        version = package.manifest.version
        release = self._release()
        state = self.store.load()
        if state and state["status"] == "rolling_back":
            raise StateError(
                f"{self.store.where}: the rollback of {state['model_version']} was interrupted; "
                f"run `rollout rollback --plant {self.plant.name}` first"
            )
        if state and state["status"] == "in_progress":
            if state["model_version"] != version:
                raise StateError(
                    f"{self.store.where}: a promotion of {MODEL_COMPONENT} {state['model_version']} "
                    f"is in progress; finish it or run `rollout rollback --plant {self.plant.name}`"
                )
            if dry_run:
                raise StateError(f"{self.store.where}: a promotion is in progress; no --dry-run")
            self._claim(state)  # before any step: another live controller may own it
            self.log(f"resuming the promotion of {version} from {self.store.where}")
        else:
            if not dry_run:
                release = self._what_rings_run(release)
            missing = [r for r in self.plant.ring_names if release.ring(r) is None]
            if missing:
                raise BadInputError(
                    f"{release_path(self.plant.name, self.releases_dir)}: ring(s) "
                    f"{', '.join(missing)} have no release to roll back to"
                )
            running = {r: release.rings[r].components[MODEL_COMPONENT] for r in release.rings}
            # a dry run without a fleet compares versions only
            same = None if dry_run else self.fleet.published_as(package)
            if same is False:
                # refused before anything is uploaded or deployed: same version, other bytes
                raise BadInputError(
                    f"{MODEL_COMPONENT} {version} was already published from another model "
                    f"than {package.root} (graph sha256 {package.manifest.sha256[:12]}...); a "
                    "version is released once: register the model again for a new version"
                )
            if all(v == version for v in running.values()) and (dry_run or same):
                return Report(
                    self.plant.name,
                    version,
                    "already-released",
                    f"every ring already runs {MODEL_COMPONENT} {version} with this package's "
                    "model",
                )
            state = {
                "plant": self.plant.name,
                "model_version": version,
                "package_sha256": package.manifest.sha256,
                "status": "in_progress",
                "started_at": _iso(self.clock.now()),
                "previous": release.to_json(),
                "rings": {},
                "promotion_id": uuid.uuid4().hex,
            }
            if model_package_arn:
                state["model_package_arn"] = model_package_arn
            if not dry_run:
                self._save(state)  # the lease: a second controller now conflicts or waits
        if dry_run:
            return self._dry_run(release, version)
        previous = parse_release(state["previous"], self.store.where, self.plant)
        if "component_arn" not in state:
            self.log(f"publishing {MODEL_COMPONENT} {version} from {package.root}")
            published = self.fleet.publish_model(package)
            state["component_arn"] = published.arn
            state["artifact_uri"] = published.artifact_uri
            self._save(state)
            self.log(f"published {published.arn} ({published.artifact_uri})")
        for ring in self.plant.ring_names:
            failed = self._promote_ring(ring, version, previous, state, package)
            if failed:
                return self._roll_back(state, previous, failed)
            if state["rings"][ring]["phase"] == "inconclusive":
                self._save(state, release=True)
                undecided = [
                    GateResult(**g) for g in state["rings"][ring]["gates"] if g.get("inconclusive")
                ]
                return Report(
                    self.plant.name,
                    version,
                    "inconclusive",
                    f"{ring}: the gates could not decide after "
                    f"{self.plant.gates.max_bake_extensions} extension(s) "
                    f"({', '.join(g.gate for g in undecided)}); the ring stays on {version}. "
                    "A person decides: promote again to wait longer, or `rollout rollback "
                    f"--plant {self.plant.name}`",
                    rings=state["rings"],
                    failed=undecided,
                )
            if ring == stop_after and ring != self.plant.ring_names[-1]:
                self._save(state, release=True)
                self.log(f"paused after {ring}; promote {version} again to continue")
                return Report(
                    self.plant.name,
                    version,
                    "paused",
                    f"{MODEL_COMPONENT} {version} passed rings up to {ring}; run promote again "
                    "to continue",
                    rings=state["rings"],
                )
        state["status"] = "completed"
        state["finished_at"] = _iso(self.clock.now())
        self._save(state, release=True)
        self.log(f"every ring runs {MODEL_COMPONENT} {version}")
        return Report(
            self.plant.name,
            version,
            "completed",
            f"{MODEL_COMPONENT} {version} promoted to rings {', '.join(self.plant.ring_names)}",
            rings=state["rings"],
        )

    def _dry_run(self, release: Release, version: str) -> Report:
        rings: dict[str, Any] = {}
        for ring in self.plant.ring_names:
            components = dict(release.rings[ring].components)
            components[MODEL_COMPONENT] = version
            spec = deployment_spec(self.plant, ring, _with_components(release, ring, components))
            bake = self.plant.ring(ring).bake_minutes
            self.log(f"would deploy {MODEL_COMPONENT} {version} to {ring}, bake {bake} min")
            rings[ring] = {"request": spec}
        return Report(
            self.plant.name, version, "dry-run", "dry run: nothing published or deployed", rings
        )

    def _promote_ring(
        self,
        ring: str,
        version: str,
        previous: Release,
        state: dict[str, Any],
        package: ModelPackage,
    ) -> list[GateResult]:
        """Shadow (if the ring has shadow minutes), deploy, wait, bake and gate one ring;
        return the failed gates (empty: passed, or paused when the phase is inconclusive)."""
        rs = state["rings"].setdefault(ring, {"phase": "pending"})
        if rs["phase"] == "passed":
            self.log(f"{ring}: already passed, not redeployed")
            return []
        target = self._target(ring)
        old = previous.rings[ring].components
        old_version = old[MODEL_COMPONENT]
        bake_s = 60.0 * self.plant.ring(ring).bake_minutes
        shadow_s = 60.0 * self.plant.ring(ring).shadow_minutes
        if (
            shadow_s > 0
            and old_version != version
            and rs["phase"] == "pending"
            and rs.get("shadow", {}).get("phase") not in ("passed", "undecided")
        ):
            failed = self._shadow(ring, version, previous, state, package, shadow_s)
            if failed:
                return failed
        if rs["phase"] == "pending":
            now = self.clock.now()
            if "baseline" not in rs:  # measured before the shadow phase, if the ring has one
                self._measure_baseline(ring, rs, old_version, bake_s)
            components = dict(old)
            components[MODEL_COMPONENT] = version
            spec = deployment_spec(self.plant, ring, _with_components(previous, ring, components))
            if old_version == version:
                self.log(f"{ring}: already on {version}; checking it anyway")
            self.log(f"{ring}: deploying {MODEL_COMPONENT} {old_version} -> {version}")
            spec["clientToken"] = self._token(state, ring, "promote")
            rs["requested"] = True  # checkpointed first: a rollback after a kill here covers it
            state["rings"][ring] = rs
            self._save(state)
            rs["deployment_id"] = self.fleet.create_deployment(spec)
            # the release file before the checkpoint: a kill in between repeats both (the
            # deployment by its clientToken), never leaves the file behind what the ring runs
            self._write_ring(ring, components, previous)
            rs["deployed_at"] = now
            rs["phase"] = "deploying"
            state["rings"][ring] = rs
            self._save(state)
        if rs["phase"] == "deploying":
            rollout = self._wait(state, ring, rs["deployment_id"], rs["deployed_at"])
            rs["reached_at"] = self.clock.now()
            rs["stalled"] = list(rollout.stalled)
            rs["phase"] = "baking"
            self._save(state)
            if self._lost(rollout):
                # failed and stalled devices are final: judge now, do not bake a lost ring
                health = self.fleet.ring_health(
                    self.plant.name, ring, target, rs["reached_at"], self.clock.now(), version
                )
                return [
                    r
                    for r in self._judge(ring, state, rollout, None, health, baked=False)
                    if not r.passed
                ]
        if rs["phase"] == "inconclusive":
            # a person asked to go on: another round of bake and extensions
            rs.update(phase="baking", extensions=0, bake_until=self.clock.now() + bake_s)
            self._save(state)
            self.log(f"{ring}: baking {bake_s / 60:.0f} min more, as asked")
        rs.setdefault("bake_until", rs["reached_at"] + bake_s)
        while True:
            failed = self._bake(ring, rs, state, version, old_version)
            if failed:
                return failed
            rollout = self._reread(target, rs["deployment_id"], rs)
            health = self.fleet.ring_health(
                self.plant.name, ring, target, rs["reached_at"], self.clock.now(), version
            )
            baseline = RingHealth.from_json(rs["baseline"])
            results = self._judge(
                ring,
                state,
                rollout,
                baseline,
                health,
                baked=bake_s > 0,
                comparisons=self._comparisons(ring, rs, version, old_version) if bake_s else None,
            )
            failed = [r for r in results if r.failed]
            if failed:
                return failed
            if not any(r.inconclusive for r in results):
                rs["phase"] = "passed"
                self._save(state)
                self.log(f"{ring}: every gate passed")
                return []
            if rs.get("extensions", 0) >= self.plant.gates.max_bake_extensions:
                rs["phase"] = "inconclusive"
                self._save(state)
                self.log(f"{ring}: still undecided after the bake and its extensions: pausing")
                return []
            self._extend(state, rs, "bake_until", bake_s, f"{ring}: not enough evidence yet: bake")

    def _measure_baseline(
        self, ring: str, rs: dict[str, Any], old_version: str, bake_s: float
    ) -> None:
        """The ring on its previous release, before anything of the candidate runs there (the
        shadow carrier scores two models a frame, so its latency is no baseline): health over
        the bake time (at least :data:`MIN_BASELINE_S`), and the parts of the last
        :data:`BEFORE_COUNTS_S`, the control where no other ring's devices on the previous
        version share a line and station."""
        now = self.clock.now()
        window = max(bake_s, MIN_BASELINE_S)
        baseline = self.fleet.ring_health(
            self.plant.name, ring, self._target(ring), now - window, now, old_version
        )
        rs["baseline"] = baseline.to_json()
        rs["baseline_counts"] = (
            [
                asdict(c)
                for c in self.fleet.decision_counts(
                    self.plant.name, now - BEFORE_COUNTS_S, now, ring=ring
                )
                if c.ring == ring and c.version == old_version
            ]
            if bake_s > 0  # a ring without a bake is not compared
            else []
        )

    def _shadow(
        self,
        ring: str,
        version: str,
        previous: Release,
        state: dict[str, Any],
        package: ModelPackage,
        shadow_s: float,
    ) -> list[GateResult]:
        """Run the candidate as a shadow on the ring's devices before it decides anything.

        The ring gets the shadow carrier (:func:`rollout.fleet.shadow_carrier_version`): the
        previous model still decides and signals the line, the candidate scores every frame
        beside it and only reports. Gated on the deployment and on the shadow's reject rate against
        the served model's on the same frames (``shadow_reject_rate``): failed rolls back;
        undecided extends like a bake, and then hands over to the bake (an early stop, not a
        pass: the bake's gates must still decide).
        """
        rs = state["rings"][ring]
        sh = rs.setdefault("shadow", {"phase": "pending"})
        target = self._target(ring)
        old = previous.rings[ring].components
        gates = self.plant.gates
        if sh["phase"] == "pending":
            if "baseline" not in rs:
                self._measure_baseline(
                    ring, rs, old[MODEL_COMPONENT], 60.0 * self.plant.ring(ring).bake_minutes
                )
                self._save(state)
            if "carrier" not in sh:
                carrier = self.fleet.publish_shadow(old[MODEL_COMPONENT], package)
                sh["carrier"] = carrier.version
                self._save(state)
                self.log(f"published the shadow carrier {carrier.arn}")
            components = {**old, MODEL_COMPONENT: sh["carrier"]}
            spec = deployment_spec(self.plant, ring, _with_components(previous, ring, components))
            spec["clientToken"] = self._token(state, ring, "shadow")
            self.log(
                f"{ring}: {MODEL_COMPONENT} {sh['carrier']}: {old[MODEL_COMPONENT]} decides, "
                f"{version} runs as a shadow for {shadow_s / 60:.0f} min"
            )
            rs["requested"] = True
            self._save(state)
            sh["deployment_id"] = self.fleet.create_deployment(spec)
            self._write_ring(ring, components, previous)
            sh["deployed_at"] = self.clock.now()
            sh["phase"] = "deploying"
            self._save(state)
        if sh["phase"] == "deploying":
            rollout = self._wait(state, ring, sh["deployment_id"], sh["deployed_at"])
            sh.update(
                phase="running",
                reached_at=self.clock.now(),
                stalled=list(rollout.stalled),
                until=self.clock.now() + shadow_s,
            )
            self._save(state)
        while True:
            while (left := sh["until"] - self.clock.now()) > 0:
                self._sleep(state, min(left, LOOK_S))
                # a carrier that crashes or fails to deploy is judged at once, as in a bake
                if self._lost(self._reread(target, sh["deployment_id"], sh)):
                    break
            rollout = self._reread(target, sh["deployment_id"], sh)
            health = self.fleet.ring_health(
                self.plant.name, ring, target, sh["reached_at"], self.clock.now(), sh["carrier"]
            )
            counts = self.fleet.shadow_counts(
                self.plant.name, ring, version, sh["reached_at"], self.clock.now()
            )
            results = deployment_gates(ring, gates, rollout, health)
            if not rollout.aborted:
                cameras = max(st.cameras for ln in self.plant.lines for st in ln.stations)
                results.append(shadow_gate(ring, gates, counts, cameras))
            for result in results:
                self.log(f"shadow {result.line()}")
            sh["gates"] = rs["gates"] = [r.to_json() for r in results]
            failed = [r for r in results if r.failed]
            if failed:
                self._save(state)
                return failed
            if not any(r.inconclusive for r in results):
                sh["phase"] = "passed"
                self._save(state)
                self.log(f"{ring}: the shadow passed; {version} decides next")
                return []
            if sh.get("extensions", 0) >= gates.max_bake_extensions:
                # the shadow is an early stop, not a pass: undecided, the candidate goes on to
                # the ring's bake, whose gates must still decide (or pause) before it passes
                sh["phase"] = "undecided"
                self._save(state)
                self.log(
                    f"{ring}: the shadow could not decide after its extensions; the bake's "
                    "gates decide"
                )
                return []
            self._extend(state, sh, "until", shadow_s, f"{ring}: not enough shadow evidence yet:")

    def _reread(self, target: str, deployment_id: str, phase: dict[str, Any]) -> RingRollout:
        """A phase's deployment read again against the ring's members now; the members stalled
        at the end of its wait stay stalled."""
        return RingRollout(
            self.fleet.deployment_progress(deployment_id),
            tuple(self.fleet.ring_members(target)),
            tuple(phase.get("stalled", ())),
        )

    def _lost(self, rollout: RingRollout) -> bool:
        """The deployment is beyond saving: aborted, or more failed and stalled members than
        the plant allows. Judged at once: waiting out a bake would change nothing."""
        return rollout.aborted or (
            rollout.failed / max(1, rollout.total) > self.plant.gates.max_deployment_failure_ratio
        )

    def _extend(
        self, state: dict[str, Any], phase: dict[str, Any], key: str, length_s: float, what: str
    ) -> None:
        """Extend a bake or shadow phase by its length (at least :data:`LOOK_S`), checkpointed."""
        extension = max(length_s, LOOK_S)
        phase["extensions"] = phase.get("extensions", 0) + 1
        phase[key] = self.clock.now() + extension
        self._save(state)
        self.log(
            f"{what} extended by {extension / 60:.0f} min (extension {phase['extensions']} of "
            f"{self.plant.gates.max_bake_extensions})"
        )

    def _bake(
        self, ring: str, rs: dict[str, Any], state: dict[str, Any], version: str, old: str
    ) -> list[GateResult]:
        """Sleep until the bake ends, looking at the comparisons every :data:`LOOK_S`; return
        the failed gates if a rate changed on the evidence (a rollback now), else nothing."""
        while (remaining := rs["bake_until"] - self.clock.now()) > 0:
            self._sleep(state, min(remaining, LOOK_S))
            comparisons = self._comparisons(ring, rs, version, old)
            results = comparison_gates(ring, self.plant.gates, comparisons, final=False)
            changed = [r for r in results if r.failed]
            if changed:
                for result in results:
                    self.log(result.line())
                rs["gates"] = [r.to_json() for r in results]
                self._save(state)
                return changed
            left = max(0.0, rs["bake_until"] - self.clock.now())
            self.log(
                f"{ring}: baking, {left / 60:.0f} min left; "
                + "; ".join(
                    f"{c.decision} x{c.ratio:.2f}" if c.ratio else f"{c.decision} n/a"
                    for c in comparisons
                )
            )
        return []

    def _comparisons(
        self, ring: str, rs: dict[str, Any], version: str, old: str
    ) -> list[Comparison]:
        """The reject and manual comparisons of ``ring`` since it reached ``version``."""
        during = self.fleet.decision_counts(self.plant.name, rs["reached_at"], self.clock.now())
        before = [StratumCounts(**c) for c in rs.get("baseline_counts", [])]
        cameras = {(ln.name, st.name): st.cameras for ln in self.plant.lines for st in ln.stations}
        return [
            compare(
                decision,
                strata_for(decision, ring, version, old, during, before, cameras),
                self.plant.gates,
            )
            for decision in ("reject", "manual")
        ]

    def _judge(
        self,
        ring: str,
        state: dict[str, Any],
        rollout: RingRollout,
        baseline: RingHealth | None,
        health: RingHealth,
        *,
        baked: bool,
        comparisons: list[Comparison] | None = None,
    ) -> list[GateResult]:
        """Every gate of the ring, logged with its figures and checkpointed."""
        gates = self.plant.gates
        results = deployment_gates(ring, gates, rollout, health)
        if baked and not rollout.aborted:
            results += health_gates(ring, gates, baseline, health)
            results += comparison_gates(ring, gates, comparisons or [])
            results += quality_gates(ring, gates, health)
        for result in results:
            self.log(result.line())
        rs = state["rings"][ring]
        rs["gates"] = [r.to_json() for r in results]
        rs["health"] = health.to_json()
        self._save(state)
        return results

    # -- rollback -----------------------------------------------------------------------------

    def _roll_back(
        self, state: dict[str, Any], previous: Release, failed: list[GateResult]
    ) -> Report:
        first = failed[0]
        self.log(f"gate {first.gate} failed on ring {first.ring}: rolling back")
        state["status"] = "rolling_back"
        state["failed_gates"] = [g.to_json() for g in failed]
        self._save(state)
        not_back = self._restore(state, previous)
        self._reject_in_registry(state, f"rolled back: gate {first.gate} failed on {first.ring}")
        state["status"] = "rolled_back"
        state["finished_at"] = _iso(self.clock.now())
        self._save(state, release=True)
        message = (
            f"gate {first.gate} failed on ring {first.ring}: {first.detail}; "
            f"rings {', '.join(self._touched(state))} rolled back to the previous release"
            + _not_back(not_back)
        )
        return Report(
            self.plant.name,
            state["model_version"],
            "rolled-back",
            message,
            rings=state["rings"],
            failed=failed,
        )

    def _reject_in_registry(self, state: dict[str, Any], reason: str) -> None:
        """Mark the registry's model package Rejected, once, so it is not promoted again."""
        arn = state.get("model_package_arn")
        if not arn or state.get("registry_rejected"):
            return
        self.fleet.reject_model_package(arn, f"{state['model_version']}: {reason}")
        state["registry_rejected"] = True
        self._save(state)
        self.log(f"model package {arn} marked Rejected in the registry")

    def _touched(self, state: dict[str, Any]) -> list[str]:
        """Rings deployed, or asked to be (a kill may fall between the request and the id)."""
        return [
            r
            for r in self.plant.ring_names
            if state["rings"].get(r, {}).get("deployment_id")
            or state["rings"].get(r, {}).get("requested")
        ]

    def _restore(self, state: dict[str, Any], previous: Release) -> list[str]:
        """Deploy the previous release to every touched ring at once, wait for all of them,
        and check what each member runs; return the devices that are not back.

        Each rollback deployment resets the configuration of the components it takes back to
        another version (``reset: [""]`` before the ring's merge), so keys the newer version
        added do not stay: a merge alone cannot remove them (update-component-configurations).
        A resumed rollback waits for the deployments it already created.
        """
        rings = [
            r
            for r in reversed(self._touched(state))
            if state["rings"][r].get("phase") != "rolled_back"
        ]
        for ring in rings:
            rs = state["rings"][ring]
            if rs.get("rollback_deployment_id"):
                continue
            components = dict(previous.rings[ring].components)
            candidate = {**components, MODEL_COMPONENT: state["model_version"]}
            changed = {n for n, v in candidate.items() if components.get(n) != v}
            # no abort criteria on the way back: tripping them would cancel the job and leave
            # the devices it had not reached on the rejected model (cancel-deployments)
            spec = deployment_spec(self.plant, ring, previous, abort=False, reset=changed)
            self.log(
                f"{ring}: deploying the previous release ({MODEL_COMPONENT} "
                f"{components[MODEL_COMPONENT]}, configuration of {', '.join(sorted(changed))} "
                "reset)"
            )
            spec["clientToken"] = self._token(state, ring, "rollback")
            rs["rollback_deployment_id"] = self.fleet.create_deployment(spec)
            rs["rollback_started_at"] = self.clock.now()
            self._write_ring(ring, components, previous)
            self._save(state)
        not_back: list[str] = []
        for ring in rings:
            rs = state["rings"][ring]
            rollout = self._wait(
                state,
                ring,
                rs["rollback_deployment_id"],
                rs.get("rollback_started_at", self.clock.now()),
            )
            want = previous.rings[ring].components[MODEL_COMPONENT]
            missing = [
                m
                for m in rollout.members
                if self.fleet.installed_components(m).get(MODEL_COMPONENT) != want
            ]
            rs["phase"] = "rolled_back"
            rs["rollback_status"] = {
                "succeeded": rollout.succeeded,
                "failed": rollout.failed,
                "devices": rollout.total,
                "stalled": list(rollout.stalled),
                "not_back": missing,
            }
            self._save(state)
            if missing:
                self.log(
                    f"{ring}: {len(missing)} of {rollout.total} device(s) not back on "
                    f"{MODEL_COMPONENT} {want}: {', '.join(missing[:10])}"
                    f"{' ...' if len(missing) > 10 else ''}"
                )
            else:
                self.log(f"{ring}: all {rollout.total} device(s) back on {MODEL_COMPONENT} {want}")
            not_back += missing
        return not_back

    def rollback(self) -> Report:
        """Roll every ring the last promotion touched back to the release it started from."""
        state = self.store.load()
        if not state:
            raise StateError(f"{self.store.where}: no promotion to roll back")
        if state["status"] == "rolled_back":
            return Report(
                self.plant.name,
                state["model_version"],
                "rolled-back-on-request",
                "the last promotion is already rolled back",
            )
        try:
            previous = parse_release(state["previous"], self.store.where, self.plant)
        except ReleaseError as exc:
            raise StateError(str(exc)) from None
        self._claim(state)
        state["status"] = "rolling_back"
        self._save(state)
        not_back = self._restore(state, previous)
        self._reject_in_registry(state, "rolled back on request (rollout rollback)")
        state["status"] = "rolled_back"
        state["finished_at"] = _iso(self.clock.now())
        self._save(state, release=True)
        return Report(
            self.plant.name,
            state["model_version"],
            "rollback-incomplete" if not_back else "rolled-back-on-request",
            f"rings {', '.join(self._touched(state)) or '(none)'} back on the previous release"
            + _not_back(not_back),
            rings=state["rings"],
        )

    def status(self) -> dict[str, Any]:
        """The release file and the last promotion's state, as one JSON document."""
        state = self.store.load()
        return {
            "plant": self.plant.name,
            "release": self._release().to_json(),
            "promotion": json.loads(json.dumps(state)) if state else None,
        }

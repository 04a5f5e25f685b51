"""Applying a deployment to the local device as the nucleus does: resolve, notify, validate,
merge, wait, roll back.

Sources (nucleus HEAD a28341c, ``src/main/java/com/aws/greengrass/``):
``deployment/DeploymentConfigMerger.java`` (DCM), ``lifecyclemanager/UpdateSystemPolicyService.java``
(USPS), ``lifecyclemanager/GreengrassService.java`` (GS: dependency readiness and restarts),
``componentmanager/KernelConfigResolver.java`` (KCR), ``deployment/model/DeploymentResult.java``
(status names). Components named ``aws.greengrass.*`` have no recipe in ``build/``: they are
treated as built-in plugins that are simply RUNNING at their requested version.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core_device.layout import Layout
from core_device.lifecycle import Component, LifecycleManager, State, component_environment
from core_device.recipes import (
    NUCLEUS_COMPONENT,
    ConfigurationUpdate,
    Interpolator,
    Recipe,
    RecipeError,
    RunningConfiguration,
    load_recipe,
    resolve_configuration,
    resolve_services,
    should_interpolate_configuration,
)

PLUGIN_PREFIX = "aws.greengrass."
TOKEN_EXCHANGE_SERVICE = "aws.greengrass.TokenExchangeService"  # tes/TokenExchangeService.java:35
# Built-ins the cloud adds when a deployed component depends on them and the deployment does not
# name them (the cloud resolves every dependency, ResolveComponentCandidates): the version it
# would pick (token exchange service: 2.0.3, developer guide token-exchange-service-component,
# changelog). Other plugins stay as before: named by the deployment, or a dependency left out.
RESOLVED_PLUGINS = {TOKEN_EXCHANGE_SERVICE: "2.0.3"}
DEFAULT_UPDATE_TIMEOUT_S = 60  # CreateDeployment componentUpdatePolicy.timeoutInSeconds default

# DeploymentResult.java:22-29
SUCCESSFUL = "SUCCESSFUL"
FAILED_NO_STATE_CHANGE = "FAILED_NO_STATE_CHANGE"
FAILED_ROLLBACK_NOT_REQUESTED = "FAILED_ROLLBACK_NOT_REQUESTED"
FAILED_ROLLBACK_COMPLETE = "FAILED_ROLLBACK_COMPLETE"
FAILED_UNABLE_TO_ROLLBACK = "FAILED_UNABLE_TO_ROLLBACK"
REJECTED = "REJECTED"


class DeploymentError(Exception):
    """A deployment document or its components cannot be resolved (names what and where)."""


class Notifier(Protocol):
    """What the IPC side offers the deployment (SubscribeToComponentUpdates, validation)."""

    def notify_pre_component_update(self, deployment_id: str) -> int | None:
        """Send a PreComponentUpdateEvent to subscribers; return how many were notified (their
        answers come back through ``DeploymentEngine.on_defer``)."""

    def notify_post_component_update(self, deployment_id: str) -> None:
        """Send a PostComponentUpdateEvent to subscribers."""

    def validate_configuration(
        self, component: str, configuration: dict[str, Any], deployment_id: str, timeout_s: float
    ) -> tuple[str, str | None] | None:
        """Ask a subscribed component; ``(status, message)``, or None if nobody subscribed."""


@dataclass(frozen=True)
class DeploymentResult:
    """The outcome, with the nucleus' status name."""

    deployment_id: str
    status: str
    message: str = ""


# ---------------------------------------------------------------- semantic versions (npm style)

_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$")


def _parse(version: str) -> tuple[int, int, int]:
    match = _VERSION.match(version.strip())
    if match is None or any(p is not None and not p.isdigit() for p in match.group(2, 3)):
        raise DeploymentError(f"{version!r} is not a semantic version")
    return int(match.group(1)), int(match.group(2) or 0), int(match.group(3) or 0)


def _comparator(text: str) -> Callable[[tuple[int, int, int]], bool]:
    """One npm comparator (the semver NPM rules the nucleus' Semver library applies)."""
    match = re.match(r"^(>=|<=|>|<|=|\^|~)?\s*(.*)$", text)
    assert match is not None
    op, rest = match.group(1) or "", match.group(2)
    if rest in ("*", "x", "X", ""):
        return lambda v: True
    parts = _VERSION.match(rest)
    if parts is None:
        raise DeploymentError(f"version requirement {text!r} is not valid")
    major = int(parts.group(1))
    minor_raw, patch_raw = parts.group(2), parts.group(3)
    minor = int(minor_raw) if minor_raw and minor_raw.isdigit() else None
    patch = int(patch_raw) if patch_raw and patch_raw.isdigit() else None
    low = (major, minor or 0, patch or 0)
    if op in (">=", ">", "<", "<="):
        cmp = {
            ">=": lambda v: v >= low,
            ">": lambda v: v > low,
            "<": lambda v: v < low,
            "<=": lambda v: v <= low,
        }
        return cmp[op]
    if op == "^":
        high = (
            (major + 1, 0, 0)
            if major
            else ((0, (minor or 0) + 1, 0) if minor else (0, 0, (patch or 0) + 1))
        )
    elif op == "~" or (patch is None):
        high = (major + 1, 0, 0) if minor is None else (major, minor + 1, 0)
    else:
        return lambda v: v == low
    return lambda v: low <= v < high


def satisfies(version: str, requirement: str) -> bool:
    """Whether ``version`` meets an npm-style requirement (``>=1.0.0 <2.0.0``, ``^1``, ``1.x``,
    ``||`` alternatives)."""
    parsed = _parse(version)
    for alternative in requirement.split("||"):
        comparators = re.findall(r"(?:>=|<=|>|<|=|\^|~)?\s*[^\s<>=^~]+", alternative.strip())
        if all(_comparator(c.strip())(parsed) for c in comparators) or not comparators:
            return True
    return False


# --------------------------------------------------------------------------------- the engine


@dataclass
class _Snapshot:
    versions: dict[str, str]
    configurations: dict[str, RunningConfiguration]
    nucleus: dict[str, Any]
    roots: dict[str, str]


@dataclass
class _Plugin:
    """A built-in ``aws.greengrass.*`` component: RUNNING at its requested version."""

    name: str
    version: str
    state: State = State.RUNNING
    state_changed_at: float = field(default=0.0)


class DeploymentEngine:
    """Applies deployment documents to one device laid out under ``layout``."""

    def __init__(
        self,
        *,
        layout: Layout,
        components_dir: Path,
        notifier: Notifier,
        thing_name: str,
        region: str,
        socket_path: Path,
        on_configuration: Callable[[str, dict[str, Any]], None] | None = None,
        root_ca_path: Path | None = None,
        device: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        graceful_shutdown_s: float = 5.0,
        wait_timeout_s: float = 300.0,
        poll_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.layout = layout
        self.components_dir = components_dir
        self.notifier = notifier
        self.thing_name = thing_name
        self.region = region
        self.socket_path = socket_path
        self.on_configuration = on_configuration or (lambda _n, _c: None)
        self.root_ca_path = root_ca_path
        self.device = device
        self.clock = clock
        self.graceful_shutdown_s = graceful_shutdown_s
        self.wait_timeout_s = wait_timeout_s
        self.poll_s = poll_s
        self.sleep = sleep
        self.manager = LifecycleManager()
        self.tokens: dict[str, str] = {}  # SVCUID → component, for the IPC server
        self._svcuid: dict[str, str] = {}
        self._versions: dict[str, str] = {}
        self._roots: dict[str, str] = {}
        self._recipes: dict[str, Recipe] = {}
        self._configurations: dict[str, RunningConfiguration] = {}
        self._lifecycles: dict[str, dict[str, Any]] = {}
        self._plugins: dict[str, _Plugin] = {}
        self._nucleus: dict[str, Any] = {}
        self._deferrals: dict[str, tuple[str, int]] = {}
        self._timestamp = 1
        # AWS_CONTAINER_CREDENTIALS_FULL_URI of the device's token exchange service once it runs
        # (a root-level setenv: every component started after it gets it, TokenExchangeService
        # .java:192-196); set by the device that runs one (core_device/tes.py)
        self.credentials_uri: str | None = None

    # ------------------------------------------------------------------ public interface

    def token_for(self, component: str) -> str:
        """The component's SVCUID (made once per component, kept across deployments)."""
        if component not in self._svcuid:
            token = secrets.token_urlsafe(24)
            self._svcuid[component] = token
            self.tokens[token] = component
        return self._svcuid[component]

    def component(self, name: str) -> Component | None:
        """The running lifecycle of a component, if any."""
        return self.manager.get(name)

    def state(self, name: str) -> State | None:
        """A component's state (plugins are RUNNING)."""
        if name in self._plugins:
            return self._plugins[name].state
        component = self.manager.get(name)
        return None if component is None else component.state

    @property
    def versions(self) -> dict[str, str]:
        """What the device runs: component → version."""
        return dict(self._versions)

    def configuration(self, name: str) -> dict[str, Any]:
        """A component's current configuration."""
        running = self._configurations.get(name)
        return {} if running is None else running.to_dict()

    def on_defer(self, component: str, deployment_id: str, recheck_after_ms: int) -> None:
        """DeferComponentUpdate from IPC: ask again after ``recheck_after_ms`` (USPS:211-223)."""
        self._deferrals[component] = (deployment_id, int(recheck_after_ms))

    def close(self) -> None:
        """Stop every component; no process is left."""
        self.manager.close_all()

    def apply(self, document: Mapping[str, Any]) -> DeploymentResult:
        """Apply a CreateDeployment-like document: ``components``, ``componentUpdatePolicy``,
        ``failureHandlingPolicy`` (and an optional ``deploymentId``). The policies may also sit
        under ``deploymentPolicies``, as in a CreateDeployment request (greengrassv2 API,
        DeploymentPolicies: failureHandlingPolicy, componentUpdatePolicy,
        configurationValidationPolicy)."""
        policies = document.get("deploymentPolicies")
        if isinstance(policies, Mapping):
            document = {**policies, **document}
        deployment_id = str(document.get("deploymentId") or uuid.uuid4())
        try:
            roots = self._roots_of(document)
            plan = self._resolve(roots)
        except (DeploymentError, RecipeError) as exc:
            return DeploymentResult(deployment_id, FAILED_NO_STATE_CHANGE, str(exc))
        policy = document.get("componentUpdatePolicy") or {}
        timeout_s = float(policy.get("timeoutInSeconds", DEFAULT_UPDATE_TIMEOUT_S))
        validation = document.get("configurationValidationPolicy") or {}
        # the document's configurationValidationPolicy.timeoutInSeconds; without one the nucleus
        # waits 20 s (DynamicComponentConfigurationValidator.java DEFAULT_TIMEOUT)
        validate_s = float(validation.get("timeoutInSeconds", 20))
        if str(policy.get("action", "NOTIFY_COMPONENTS")) == "NOTIFY_COMPONENTS":
            self._wait_for_deferrals(deployment_id, timeout_s)
        self._timestamp = max(self._timestamp + 1, int(time.time() * 1000))
        try:
            configurations, nucleus = self._configure(document, plan, roots)
        except RecipeError as exc:
            return DeploymentResult(deployment_id, FAILED_NO_STATE_CHANGE, str(exc))
        # DCM:150-153 — components that validate their own configuration may refuse it; only a
        # running component whose version this deployment keeps is asked
        # (DynamicComponentConfigurationValidator.java:91-129: a version change skips it)
        for name, running in configurations.items():
            if name not in self._versions or self.state(name) not in (
                State.RUNNING,
                State.STARTING,
            ):
                continue
            recipe = plan.get(name)
            if recipe is not None and recipe.version != self._versions.get(name):
                continue
            new = running.to_dict()
            if new == self.configuration(name):
                continue
            try:
                answer = self.notifier.validate_configuration(name, new, deployment_id, validate_s)
            except TimeoutError as exc:  # DynamicComponentConfigurationValidator: fails it
                self.notifier.notify_post_component_update(deployment_id)
                return DeploymentResult(deployment_id, FAILED_NO_STATE_CHANGE, str(exc))
            if answer is not None and answer[0] != "ACCEPTED":
                message = f"{name} rejected its configuration: {answer[1] or answer[0]}"
                self.notifier.notify_post_component_update(deployment_id)
                return DeploymentResult(deployment_id, FAILED_NO_STATE_CHANGE, message)
        snapshot = _Snapshot(
            dict(self._versions),
            {n: c.copy() for n, c in self._configurations.items()},
            dict(self._nucleus),
            dict(self._roots),
        )
        merge_time = self.clock()
        # every deployment reinstalls BROKEN services (DefaultActivator.java:79-87,
        # DeploymentConfigMerger.java:431-438), not only a rollback
        self._activate(plan, configurations, nucleus, roots, reinstall_broken=True)
        self.notifier.notify_post_component_update(deployment_id)  # USPS:95-96
        broken = self._wait_for_services(merge_time)
        if broken is None:
            return DeploymentResult(deployment_id, SUCCESSFUL)
        message = f"Service {broken} in broken state after deployment"  # DCM:284-288
        handling = str(document.get("failureHandlingPolicy", "ROLLBACK"))
        if handling != "ROLLBACK":
            return DeploymentResult(deployment_id, FAILED_ROLLBACK_NOT_REQUESTED, message)
        merge_time = self.clock()
        previous: dict[str, Recipe | None] = {
            n: None if n.startswith(PLUGIN_PREFIX) else self._load(n, v)
            for n, v in snapshot.versions.items()
        }
        self._activate(
            previous,
            snapshot.configurations,
            snapshot.nucleus,
            snapshot.roots,
            versions=snapshot.versions,
            reinstall_broken=True,
        )
        if self._wait_for_services(merge_time) is not None:
            return DeploymentResult(deployment_id, FAILED_UNABLE_TO_ROLLBACK, message)
        return DeploymentResult(deployment_id, FAILED_ROLLBACK_COMPLETE, message)

    # --------------------------------------------------------------------- resolution

    def _roots_of(self, document: Mapping[str, Any]) -> dict[str, str]:
        components = document.get("components")
        if not isinstance(components, Mapping) or not components:
            raise DeploymentError("deployment: components must be a non-empty mapping")
        roots = {}
        for name, spec in components.items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("componentVersion"), str):
                raise DeploymentError(f"deployment: components.{name}.componentVersion missing")
            roots[str(name)] = spec["componentVersion"]
        return roots

    def _load(self, name: str, version: str) -> Recipe:
        directory = self.components_dir / name / version
        path = directory / "recipe.yaml"
        if not path.is_file() and (directory / "recipe.json").is_file():
            path = directory / "recipe.json"
        if not path.is_file():
            raise DeploymentError(f"{name}@{version}: no recipe at {path} (build it first)")
        recipe = load_recipe(path, device=self.device)
        if (recipe.name, recipe.version) != (name, version):
            raise DeploymentError(f"{path}: declares {recipe.name}@{recipe.version}")
        return recipe

    def _available(self, name: str) -> list[str]:
        directory = self.components_dir / name
        found = []
        for child in directory.iterdir() if directory.is_dir() else []:
            try:
                found.append((_parse(child.name), child.name))
            except DeploymentError:
                continue
        return [v for _, v in sorted(found, reverse=True)]

    def _resolve(self, roots: Mapping[str, str]) -> dict[str, Recipe | None]:
        """Every component with its version: roots as requested, dependencies at the highest
        local version meeting every requirement (DependencyResolver); None for plugins."""
        chosen: dict[str, str] = dict(roots)
        recipes: dict[str, Recipe | None] = {}
        requirements: dict[str, list[tuple[str, str]]] = {}
        pending = list(roots)
        while pending:
            name = pending.pop()
            if name in recipes:
                continue
            version = chosen[name]
            recipe = None if name.startswith(PLUGIN_PREFIX) else self._load(name, version)
            recipes[name] = recipe
            for dep in recipe.dependencies.values() if recipe else []:
                requirements.setdefault(dep.name, []).append((name, dep.version_requirement))
                if dep.name not in chosen:
                    if dep.name.startswith(PLUGIN_PREFIX):
                        resolved = RESOLVED_PLUGINS.get(dep.name)
                        if resolved is not None and satisfies(resolved, dep.version_requirement):
                            chosen[dep.name] = resolved  # the cloud brings it in
                            recipes[dep.name] = None
                        continue  # else a plugin dependency that is not deployed
                    candidates = [
                        v
                        for v in self._available(dep.name)
                        if all(satisfies(v, r) for _, r in requirements[dep.name])
                    ]
                    if not candidates:
                        raise DeploymentError(
                            f"{name}@{version}: no version of {dep.name} meets"
                            f" {dep.version_requirement!r} in {self.components_dir}"
                        )
                    chosen[dep.name] = candidates[0]
                    pending.append(dep.name)
        for dep_name, reqs in requirements.items():
            if dep_name not in chosen:
                continue
            for who, req in reqs:
                if not satisfies(chosen[dep_name], req):
                    raise DeploymentError(
                        f"{who}: requires {dep_name} {req!r}, the deployment has {chosen[dep_name]}"
                    )
        return {name: recipes[name] for name in chosen}

    def _configure(
        self,
        document: Mapping[str, Any],
        plan: Mapping[str, Recipe | None],
        roots: Mapping[str, str],
    ) -> tuple[dict[str, RunningConfiguration], dict[str, Any]]:
        components = document["components"]
        configurations = {}
        nucleus_update = ConfigurationUpdate.parse(
            (components.get(NUCLEUS_COMPONENT) or {}).get("configurationUpdate"),
            where=f"components.{NUCLEUS_COMPONENT}.configurationUpdate",
        )
        nucleus_running = RunningConfiguration()
        nucleus_running.merge(self._timestamp - 1, self._nucleus)
        nucleus = resolve_configuration(
            {}, nucleus_running, nucleus_update, timestamp=self._timestamp
        )
        for name, recipe in plan.items():
            if recipe is None:
                continue
            # KCR:255-261 — only root components take a configuration update
            update = None
            if name in roots:
                update = ConfigurationUpdate.parse(
                    (components.get(name) or {}).get("configurationUpdate"),
                    where=f"components.{name}.configurationUpdate",
                )
            configurations[name] = resolve_configuration(
                recipe.default_configuration,
                self._configurations.get(name),
                update,
                timestamp=self._timestamp,
            )
        return configurations, nucleus.to_dict()

    def _wait_for_deferrals(self, deployment_id: str, timeout_s: float) -> None:
        """USPS:140-170, :199-237: notify, collect deferrals for up to the policy timeout, sleep
        the longest ``recheckAfterMs`` and notify again, until nobody defers."""
        while True:
            self._deferrals.clear()
            subscribers = self.notifier.notify_pre_component_update(deployment_id) or 0
            started = self.clock()
            # USPS:204 — wait for every notified subscriber's answer, at most the timeout
            while len(self._deferrals) < subscribers and self.clock() - started < timeout_s:
                self.sleep(self.poll_s)
            recheck_ms = max(
                (ms for did, ms in self._deferrals.values() if did == deployment_id), default=0
            )
            if recheck_ms <= 0:
                return
            self.sleep(recheck_ms / 1000.0)  # USPS:158-160

    # ---------------------------------------------------------------------- activation

    def _dependencies_ready(self, name: str) -> bool:
        """GS:602-625 — SOFT dependencies are always ready; HARD ones when RUNNING, FINISHED or
        STOPPING without an error."""
        recipe = self._recipes.get(name)
        for dep in recipe.dependencies.values() if recipe else []:
            if dep.dependency_type == "SOFT":
                continue
            if not self._hard_ready(dep.name):
                return False
        return True

    def _hard_ready(self, name: str) -> bool:
        if name in self._plugins:
            return True
        component = self.manager.get(name)
        if component is None:
            return False
        state = component.state
        if state == State.STOPPING:
            return State.ERRORED not in component.history[-2:-1]
        return state in (State.RUNNING, State.FINISHED)

    def _on_state(self, name: str, _old: State, _new: State) -> None:
        """GS:527-535 — a HARD dependency that is no longer ready restarts its dependents."""
        if self._hard_ready(name):
            return
        for other, recipe in list(self._recipes.items()):
            dep = recipe.dependencies.get(name)
            component = self.manager.get(other)
            if dep is None or dep.dependency_type != "HARD" or component is None:
                continue
            if component.state in (State.STARTING, State.RUNNING):
                component.request_restart()

    def _activate(
        self,
        plan: Mapping[str, Recipe | None],
        configurations: Mapping[str, RunningConfiguration],
        nucleus: Mapping[str, Any],
        roots: Mapping[str, str],
        *,
        versions: Mapping[str, str] | None = None,
        reinstall_broken: bool = False,
    ) -> None:
        versions = versions or {
            n: (r.version if r else roots.get(n) or RESOLVED_PLUGINS.get(n, ""))
            for n, r in plan.items()
        }
        flag = should_interpolate_configuration(nucleus)
        recipes = [r for r in plan.values() if r is not None]
        services = resolve_services(
            recipes,
            {n: c.to_dict() for n, c in configurations.items()},
            interpolator=Interpolator(paths=self.layout, thing_name=self.thing_name),
            interpolate_configuration=flag,
        )
        # components the new document no longer has go away
        for name in list(self._versions):
            if name not in plan:
                component = self.manager.remove(name)
                if component is not None:
                    component.close()
                self._plugins.pop(name, None)
                self._recipes.pop(name, None)
                self._configurations.pop(name, None)
                self._versions.pop(name, None)
        self._nucleus = dict(nucleus)
        self._roots = dict(roots)
        for name, version in versions.items():
            if name.startswith(PLUGIN_PREFIX) and plan.get(name) is None:
                self._plugins[name] = _Plugin(name, version, State.RUNNING, self.clock())
                self._versions[name] = version
        for recipe in _dependency_order(recipes):
            name = recipe.name
            service = services[name]
            self._recipes[name] = recipe
            self._configurations[name] = configurations[name]
            self.on_configuration(name, service.configuration)
            existing = self.manager.get(name)
            changed = (
                existing is None
                or self._versions.get(name) != recipe.version
                or self._lifecycles.get(name) != service.lifecycle
                or (reinstall_broken and existing.state == State.BROKEN)
            )
            new_version = self._versions.get(name) != recipe.version
            self._versions[name] = recipe.version
            self._lifecycles[name] = service.lifecycle
            if not changed:
                continue
            if existing is None or new_version:
                self.layout.install(recipe, self.components_dir / name / recipe.version)
            if existing is not None:
                # the same service takes the change: a new version or install step reinstalls,
                # any other lifecycle change restarts it (GenericExternalService.java:118-157)
                existing.update(service.lifecycle, version=recipe.version)
                continue
            component = Component(
                name,
                service.lifecycle,
                version=recipe.version,
                work_dir=self.layout.work_path(name),
                log_path=self.layout.log_path(name),
                env=component_environment(
                    svcuid=self.token_for(name),
                    thing_name=self.thing_name,
                    region=self.region,
                    socket_path=self.socket_path,
                    root_ca_path=self.root_ca_path,
                    credentials_uri=(
                        self.credentials_uri if TOKEN_EXCHANGE_SERVICE in self._plugins else None
                    ),
                ),
                clock=self.clock,
                graceful_shutdown_s=self.graceful_shutdown_s,
                dependencies_ready=lambda n=name: self._dependencies_ready(n),  # type: ignore[misc]
            )
            component.add_listener(self._on_state)
            self.manager.add(component)
            component.start()

    def _wait_for_services(self, merge_time: float) -> str | None:
        """DCM:261-298 — wait until every component is RUNNING or FINISHED; a component BROKEN
        since the merge fails the deployment. Returns the broken component's name."""
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            done = True
            for name, component in self.manager.components.items():
                state = component.state
                if state == State.BROKEN and component.state_changed_at >= merge_time:
                    return name
                # DCM:275-292 — a restart or reinstall still asked of it is not done yet
                if state not in (State.RUNNING, State.FINISHED) or not (
                    component.reached_desired_state
                ):
                    done = False
            if done:
                return None
            if time.monotonic() > deadline:
                return next(
                    (n for n, c in self.manager.components.items() if c.state != State.RUNNING),
                    "?",
                )
            time.sleep(self.poll_s)


def _dependency_order(recipes: list[Recipe]) -> list[Recipe]:
    """Dependencies before dependents (the nucleus starts in its ``orderedDependencies``)."""
    by_name = {r.name: r for r in recipes}
    ordered: list[Recipe] = []
    seen: set[str] = set()

    def visit(recipe: Recipe, path: tuple[str, ...]) -> None:
        if recipe.name in seen:
            return
        if recipe.name in path:
            raise DeploymentError(f"dependency cycle: {' -> '.join((*path, recipe.name))}")
        for dep in recipe.dependencies:
            if dep in by_name:
                visit(by_name[dep], (*path, recipe.name))
        seen.add(recipe.name)
        ordered.append(recipe)

    for recipe in recipes:
        visit(recipe, ())
    return ordered

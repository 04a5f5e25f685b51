"""Deployments: dependency order, HARD restarts, BROKEN → rollback, deferral, validation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core_device.deployment import (
    FAILED_NO_STATE_CHANGE,
    FAILED_ROLLBACK_COMPLETE,
    FAILED_ROLLBACK_NOT_REQUESTED,
    SUCCESSFUL,
    DeploymentEngine,
    satisfies,
)
from core_device.layout import Layout
from core_device.lifecycle import State


class FakeNotifier:
    """Records the calls; answers validation as told; defers through the engine as told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.validation: tuple[str, str | None] | None = None
        self.defer_ms: list[int] = []  # one deferral per pre-update notification, then none
        self.engine: DeploymentEngine | None = None
        self.subscribers = 0  # components subscribed to component updates

    def notify_pre_component_update(self, deployment_id: str) -> int:
        self.calls.append(("pre", deployment_id))
        if self.defer_ms and self.engine is not None:
            self.engine.on_defer("A", deployment_id, self.defer_ms.pop(0))
        return self.subscribers

    def notify_post_component_update(self, deployment_id: str) -> None:
        self.calls.append(("post", deployment_id))

    def validate_configuration(
        self, component: str, configuration: dict[str, Any], deployment_id: str, timeout_s: float
    ) -> tuple[str, str | None] | None:
        self.calls.append(("validate", component))
        return self.validation


def write_component(
    root: Path,
    name: str,
    version: str,
    lifecycle: dict[str, Any],
    *,
    dependencies: dict[str, tuple[str, str]] | None = None,
    default: dict[str, Any] | None = None,
) -> None:
    directory = root / name / version
    directory.mkdir(parents=True)
    doc: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentConfiguration": {"DefaultConfiguration": default or {}},
        "ComponentDependencies": {
            dep: {"VersionRequirement": req, "DependencyType": kind}
            for dep, (req, kind) in (dependencies or {}).items()
        },
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": lifecycle}],
    }
    (directory / "recipe.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


@pytest.fixture
def engine(tmp_path: Path, notifier: FakeNotifier) -> Iterator[DeploymentEngine]:
    configurations: dict[str, dict[str, Any]] = {}
    device = DeploymentEngine(
        layout=Layout(tmp_path / "gg"),
        components_dir=tmp_path / "components",
        notifier=notifier,
        thing_name="thing-1",
        region="eu-west-1",
        socket_path=tmp_path / "gg" / "ipc.socket",
        on_configuration=lambda name, config: configurations.__setitem__(name, config),
        device={"os": "linux", "architecture": "amd64"},
        graceful_shutdown_s=0.3,
        wait_timeout_s=20,
        poll_s=0.02,
    )
    notifier.engine = device
    device.configurations_seen = configurations  # type: ignore[attr-defined]
    try:
        yield device
    finally:
        device.close()


def deployment(components: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"components": components, "failureHandlingPolicy": "ROLLBACK", **extra}


@pytest.mark.parametrize(
    ("version", "requirement", "ok"),
    [
        ("1.2.0", ">=1.0.0 <2.0.0", True),
        ("2.0.0", ">=1.0.0 <2.0.0", False),
        ("2.3.1", "2.3", True),
        ("2.4.0", "2.3", False),
        ("1.9.9", "^1.2.0", True),
        ("1.2.9", "~1.2.0", True),
        ("1.3.0", "~1.2.0", False),
        ("3.0.0", "1.x || >=3", True),
        ("2.6.0", ">=2.6.0 <3.0.0", True),
    ],
)
def test_version_requirements(version: str, requirement: str, ok: bool) -> None:
    assert satisfies(version, requirement) is ok


def test_dependencies_start_first_and_plugins_are_running(
    engine: DeploymentEngine, tmp_path: Path
) -> None:
    components = tmp_path / "components"
    order = tmp_path / "order.log"
    write_component(components, "B", "1.0.0", {"startup": f"sleep 0.3; echo B >> {order}"})
    write_component(
        components,
        "A",
        "1.0.0",
        {"run": f"echo A >> {order}; echo $SVCUID > token; sleep 30"},
        dependencies={"B": (">=1.0.0", "HARD"), "aws.greengrass.Nucleus": (">=2.6.0", "SOFT")},
    )
    result = engine.apply(
        deployment(
            {
                "A": {"componentVersion": "1.0.0"},
                "aws.greengrass.Nucleus": {"componentVersion": "2.12.0"},
            }
        )
    )
    assert result.status == SUCCESSFUL, result.message
    assert order.read_text() == "B\nA\n"
    assert engine.state("aws.greengrass.Nucleus") == State.RUNNING
    assert engine.versions == {"A": "1.0.0", "B": "1.0.0", "aws.greengrass.Nucleus": "2.12.0"}
    # the run script writes its token just after its line of the order file: wait for it
    token_file, deadline = tmp_path / "gg/work/A/token", time.monotonic() + 10
    while not (token_file.is_file() and token_file.read_text().endswith("\n")):
        assert time.monotonic() < deadline, "A never wrote its SVCUID"
        time.sleep(0.01)
    assert engine.tokens[token_file.read_text().strip()] == "A"


def test_a_hard_dependency_update_restarts_its_dependent_a_soft_one_does_not(
    engine: DeploymentEngine, tmp_path: Path
) -> None:
    components = tmp_path / "components"
    starts = tmp_path / "starts.log"
    for version in ("1.0.0", "1.1.0"):
        write_component(components, "Hard", version, {"run": "sleep 30"})
        write_component(components, "Soft", version, {"run": "sleep 30"})
    write_component(
        components,
        "A",
        "1.0.0",
        {"run": f"echo A >> {starts}; sleep 30"},
        dependencies={"Hard": ("^1.0.0", "HARD")},
    )
    write_component(
        components,
        "S",
        "1.0.0",
        {"run": f"echo S >> {starts}; sleep 30"},
        dependencies={"Soft": ("^1.0.0", "SOFT")},
    )
    first = {
        "A": {"componentVersion": "1.0.0"},
        "S": {"componentVersion": "1.0.0"},
        "Hard": {"componentVersion": "1.0.0"},
        "Soft": {"componentVersion": "1.0.0"},
    }
    assert engine.apply(deployment(first)).status == SUCCESSFUL
    second = dict(first, Hard={"componentVersion": "1.1.0"}, Soft={"componentVersion": "1.1.0"})
    assert engine.apply(deployment(second)).status == SUCCESSFUL
    assert engine.versions["Hard"] == "1.1.0"
    deadline = time.monotonic() + 5
    while starts.read_text().count("A") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert starts.read_text().count("A") == 2
    assert starts.read_text().count("S") == 1


def test_a_component_that_keeps_failing_is_rolled_back(
    engine: DeploymentEngine, tmp_path: Path
) -> None:
    components = tmp_path / "components"
    write_component(
        components, "A", "1.0.0", {"run": "echo v1 > version; sleep 30"}, default={"mode": "old"}
    )
    write_component(components, "A", "2.0.0", {"run": "exit 1"}, default={"mode": "new"})
    merge = {"merge": json.dumps({"mode": "custom"})}
    first = deployment({"A": {"componentVersion": "1.0.0", "configurationUpdate": merge}})
    assert engine.apply(first).status == SUCCESSFUL
    result = engine.apply(deployment({"A": {"componentVersion": "2.0.0"}}))
    assert result.status == FAILED_ROLLBACK_COMPLETE
    assert "A in broken state" in result.message
    assert engine.versions == {"A": "1.0.0"}
    assert engine.state("A") == State.RUNNING
    assert engine.configuration("A") == {"mode": "custom"}
    assert (tmp_path / "gg/work/A/version").read_text() == "v1\n"


def test_do_nothing_leaves_the_broken_component(engine: DeploymentEngine, tmp_path: Path) -> None:
    components = tmp_path / "components"
    write_component(components, "A", "1.0.0", {"run": "exit 1"})
    result = engine.apply(
        {"components": {"A": {"componentVersion": "1.0.0"}}, "failureHandlingPolicy": "DO_NOTHING"}
    )
    assert result.status == FAILED_ROLLBACK_NOT_REQUESTED
    assert engine.state("A") == State.BROKEN


def test_a_redeployment_reinstalls_a_broken_component(
    engine: DeploymentEngine, tmp_path: Path
) -> None:
    # install counts its runs; run fails until the marker the operator fixes appears
    fixed = tmp_path / "fixed"
    write_component(
        tmp_path / "components", "A", "1.0.0",
        {"install": "echo x >> installs", "run": f"test -f {fixed} && sleep 30"},
    )  # fmt: skip
    document = {"components": {"A": {"componentVersion": "1.0.0"}},
                "failureHandlingPolicy": "DO_NOTHING"}  # fmt: skip
    assert engine.apply(document).status == FAILED_ROLLBACK_NOT_REQUESTED
    assert engine.state("A") == State.BROKEN
    fixed.write_text("ok")
    # the same deployment again: BROKEN services are reinstalled (DefaultActivator.java:79-87)
    assert engine.apply(document).status == SUCCESSFUL
    assert engine.state("A") == State.RUNNING
    assert len((tmp_path / "gg/work/A/installs").read_text().split()) >= 2


def test_a_lifecycle_change_restarts_a_new_version_reinstalls(
    engine: DeploymentEngine, tmp_path: Path
) -> None:
    # GenericExternalService.java:134-156: only a version, install or runWith change reinstalls
    for version in ("1.0.0", "1.1.0"):
        write_component(
            tmp_path / "components", "A", version,
            {"install": "echo x >> installs",
             "run": "echo {configuration:/mode} >> runs; sleep 30"},
            default={"mode": "old"},
        )  # fmt: skip
    work = tmp_path / "gg/work/A"

    def lines(name: str) -> list[str]:
        return (work / name).read_text().split()

    def wait_for(name: str, count: int) -> list[str]:
        deadline = time.monotonic() + 10
        while len(lines(name)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return lines(name)

    assert engine.apply(deployment({"A": {"componentVersion": "1.0.0"}})).status == SUCCESSFUL
    assert wait_for("runs", 1) == ["old"] and lines("installs") == ["x"]
    merge = {"merge": json.dumps({"mode": "new"})}
    changed = deployment({"A": {"componentVersion": "1.0.0", "configurationUpdate": merge}})
    assert engine.apply(changed).status == SUCCESSFUL
    # the deployment waited for the restart: the new run step is what runs now
    assert lines("runs") == ["old", "new"] and engine.state("A") == State.RUNNING
    assert lines("installs") == ["x"]  # restarted, not reinstalled
    upgrade = deployment({"A": {"componentVersion": "1.1.0", "configurationUpdate": merge}})
    assert engine.apply(upgrade).status == SUCCESSFUL
    assert wait_for("runs", 3) == ["old", "new", "new"]
    assert lines("installs") == ["x", "x"]  # a new version installs again


def test_deferral_is_honoured_then_the_update_goes_ahead(
    engine: DeploymentEngine, notifier: FakeNotifier, tmp_path: Path
) -> None:
    write_component(tmp_path / "components", "A", "1.0.0", {"run": "sleep 30"})
    notifier.subscribers = 1  # answers the first round, stays silent in the second
    notifier.defer_ms = [300]
    started = time.monotonic()
    result = engine.apply(
        deployment(
            {"A": {"componentVersion": "1.0.0"}},
            deploymentId="d-1",
            componentUpdatePolicy={"action": "NOTIFY_COMPONENTS", "timeoutInSeconds": 0.2},
        )
    )
    assert result.status == SUCCESSFUL
    assert time.monotonic() - started >= 0.3 + 0.2  # waited the deferral, then a silent round
    assert [c for c in notifier.calls if c[0] != "validate"] == [
        ("pre", "d-1"),
        ("pre", "d-1"),
        ("post", "d-1"),
    ]


def test_a_rejected_configuration_fails_without_change(
    engine: DeploymentEngine, notifier: FakeNotifier, tmp_path: Path
) -> None:
    write_component(tmp_path / "components", "A", "1.0.0", {"run": "sleep 30"}, default={"x": 1})
    assert engine.apply(deployment({"A": {"componentVersion": "1.0.0"}})).status == SUCCESSFUL
    notifier.validation = ("REJECTED", "x must stay 1")
    update = {"componentVersion": "1.0.0", "configurationUpdate": {"merge": '{"x": 2}'}}
    result = engine.apply(deployment({"A": update}))
    assert result.status == FAILED_NO_STATE_CHANGE
    assert "x must stay 1" in result.message
    assert engine.configuration("A") == {"x": 1}
    assert ("validate", "A") in notifier.calls


def test_interpolation_of_configuration_follows_the_nucleus_configuration(
    engine: DeploymentEngine, tmp_path: Path
) -> None:
    write_component(
        tmp_path / "components",
        "A",
        "1.0.0",
        {"run": "sleep 30"},
        default={"who": "{iot:thingName}"},
    )
    seen = engine.configurations_seen  # type: ignore[attr-defined]
    assert engine.apply(deployment({"A": {"componentVersion": "1.0.0"}})).status == SUCCESSFUL
    assert seen["A"] == {"who": "{iot:thingName}"}
    nucleus = {
        "componentVersion": "2.12.0",
        "configurationUpdate": {"merge": '{"interpolateComponentConfiguration": true}'},
    }
    doc = deployment({"A": {"componentVersion": "1.0.0"}, "aws.greengrass.Nucleus": nucleus})
    assert engine.apply(doc).status == SUCCESSFUL
    assert seen["A"] == {"who": "thing-1"}


def test_a_missing_recipe_or_unmet_requirement_fails_without_change(
    engine: DeploymentEngine, tmp_path: Path
) -> None:
    result = engine.apply(deployment({"Nope": {"componentVersion": "1.0.0"}}))
    assert result.status == FAILED_NO_STATE_CHANGE
    assert "Nope@1.0.0: no recipe at" in result.message
    components = tmp_path / "components"
    write_component(components, "M", "2.0.0", {})
    write_component(components, "A", "1.0.0", {}, dependencies={"M": (">=1.0.0 <2.0.0", "HARD")})
    result = engine.apply(deployment({"A": {"componentVersion": "1.0.0"}}))
    assert result.status == FAILED_NO_STATE_CHANGE
    assert "no version of M meets '>=1.0.0 <2.0.0'" in result.message

"""`python app.py`: bad plant files, missing releases, unknown plants fail fast with one line.

In process: the Shared stack synthesises the same whatever ``-c plant`` selects.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
import yaml
from aws_cdk.assertions import Template

from stacks.app import LineGuardStacks, add_stacks, load_selection
from stacks.components import PublishedComponents
from stacks.config import INSPECTOR, MODEL, PlantConfig, PlantConfigError, initial_release

from .conftest import PLANTS, RELEASES, ROOT


def run_app(tmp_path: Path, **context: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        CDK_CONTEXT_JSON=json.dumps(context),
        CDK_OUTDIR=str(tmp_path / "out"),
        CDK_VALIDATION="false",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="1",
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    plants, releases = tmp_path / "plants", tmp_path / "releases"
    plants.mkdir()
    releases.mkdir()
    shutil.copy(PLANTS / "demo.yaml", plants)
    shutil.copy(RELEASES / "demo.json", releases)
    return plants, releases


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_broken_plant_file_exits_naming_file_and_field(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    plants, releases = dirs
    text = (plants / "demo.yaml").read_text().replace("percent: 50\n", "percent: 40\n", 1)
    (plants / "demo.yaml").write_text(text)
    proc = run_app(tmp_path, plants_dir=str(plants), releases_dir=str(releases))
    assert proc.returncode != 0
    line = last_line(proc)
    assert "demo.yaml: rings: ring percents must sum to 100 (they sum to 90)" in line
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_release_file_exits(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    plants, releases = dirs
    (releases / "demo.json").unlink()
    proc = run_app(tmp_path, plants_dir=str(plants), releases_dir=str(releases))
    assert proc.returncode != 0
    assert last_line(proc).endswith("releases/demo.json: release file not found")


def test_unknown_plant_in_context_exits(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    plants, releases = dirs
    proc = run_app(tmp_path, plants_dir=str(plants), releases_dir=str(releases), plant="nope")
    assert proc.returncode != 0
    assert "unknown plant 'nope' (plants: demo)" in last_line(proc)


def test_ring_without_release_synthesises_with_a_message(
    tmp_path: Path, dirs: tuple[Path, Path], components_dir: Path
) -> None:
    plants, releases = dirs
    doc = json.loads((releases / "demo.json").read_text())
    del doc["rings"]["fleet"]
    (releases / "demo.json").write_text(json.dumps(doc))
    proc = run_app(
        tmp_path,
        plants_dir=str(plants),
        releases_dir=str(releases),
        components_dir=str(components_dir),
        nag="false",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LineGuard-Plant-demo: ring 'fleet' has no release" in proc.stderr
    stack = json.loads((tmp_path / "out" / "LineGuard-Plant-demo.template.json").read_text())
    types = [r["Type"] for r in stack["Resources"].values()]
    assert types.count("AWS::GreengrassV2::Deployment") == 1


# ------------------------------------------------------------------ in process: the Shared stack

COMPONENTS = {INSPECTOR: "1.0.0", MODEL: "1.0.0"}


def synth_in_process(
    tmp_path: Path, components: PublishedComponents, **context: str
) -> tuple[LineGuardStacks, cdk.App]:
    """What app.py builds, on an app with validation and cdk-nag off (context as ``-c``)."""
    app = cdk.App(
        context={"nag": "false", **context},
        outdir=str(tmp_path),
        builtin_cloud_formation_validation=False,
    )
    selection = load_selection(app, ROOT)
    stacks = add_stacks(
        app,
        selection.plants,
        selection.releases,
        every_plant=selection.every_plant,
        components=components,
    )
    return stacks, app


@pytest.fixture(scope="module")
def shared_templates(
    tmp_path_factory: pytest.TempPathFactory, published: PublishedComponents
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Selection → (Shared stack name, template) for ``-c plant=demo`` and for every plant."""
    env = ("123456789012", "eu-west-1")  # both shipped plants live here
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for label, context in (("demo", {"plant": "demo"}), ("all", {})):
        stacks, _app = synth_in_process(tmp_path_factory.mktemp(label), published, **context)
        assert set(stacks.shared) == {env}
        shared = stacks.shared[env]
        out[label] = (shared.stack_name, Template.from_stack(shared).to_json())
    return out


def test_shared_template_does_not_depend_on_the_plant_selection(
    shared_templates: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    (demo_name, demo_only), (all_name, every) = shared_templates["demo"], shared_templates["all"]
    assert demo_name == all_name == "LineGuard-Shared-123456789012-eu-west-1"
    assert demo_only == every


def test_shared_promotes_every_plant_of_its_env_when_one_is_selected(
    shared_templates: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    _name, template = shared_templates["demo"]
    (project,) = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::CodeBuild::Project"
    ]
    variables = {
        v["Name"]: v["Value"] for v in project["Properties"]["Environment"]["EnvironmentVariables"]
    }
    assert variables["PLANTS"] == "demo example-large"


def test_shared_pipeline_calibrates_to_the_strictest_targets_of_its_env(
    shared_templates: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    _name, template = shared_templates["demo"]  # example-large's manual target is the lower
    (pipeline,) = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Pipeline"
    ]
    body, _ = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"]
    defaults = {p["Name"]: p.get("DefaultValue") for p in json.loads(body)["Parameters"]}
    assert (defaults["TargetFalseRejectRate"], defaults["TargetManualRate"]) == (0.005, 0.015)


def test_shared_stack_name_does_not_depend_on_how_many_envs_are_selected(
    demo: PlantConfig,
) -> None:
    elsewhere = demo.model_copy(update={"name": "elsewhere", "account": "210987654321"})
    names = {}
    for label, selected in (("one env", (demo,)), ("two envs", (demo, elsewhere))):
        app = cdk.App(builtin_cloud_formation_validation=False)
        releases = {p.name: initial_release(p, COMPONENTS) for p in selected}
        stacks = add_stacks(app, selected, releases, every_plant=(demo, elsewhere))
        names[label] = {env: s.stack_name for env, s in stacks.shared.items()}
    assert names["one env"] == {
        ("123456789012", "eu-west-1"): "LineGuard-Shared-123456789012-eu-west-1"
    }
    assert names["two envs"] == {
        ("123456789012", "eu-west-1"): "LineGuard-Shared-123456789012-eu-west-1",
        ("210987654321", "eu-west-1"): "LineGuard-Shared-210987654321-eu-west-1",
    }


def test_selected_plant_must_be_among_every_plant(demo: PlantConfig, large: PlantConfig) -> None:
    app = cdk.App(builtin_cloud_formation_validation=False)
    with pytest.raises(ValueError, match="not among every_plant"):
        add_stacks(app, (demo,), {"demo": initial_release(demo, COMPONENTS)}, every_plant=(large,))


def test_plant_with_more_lines_than_deploy_exits_before_synthesis(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    plants, releases = dirs
    doc = yaml.safe_load((plants / "demo.yaml").read_text())
    doc["lines"] = [{"name": f"line-{i}", "stations": [{"name": "check"}]} for i in range(3000)]
    (plants / "demo.yaml").write_text(yaml.safe_dump(doc))
    proc = run_app(tmp_path, plants_dir=str(plants), releases_dir=str(releases))
    assert proc.returncode != 0
    line = last_line(proc)
    assert "plants/demo.yaml: lines: 3000 lines, at most 2000 can deploy: " in line
    assert "cloudformation-limits.html" in line
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_component_build_exits_naming_make_component(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    plants, releases = dirs
    empty = tmp_path / "no-build"
    proc = run_app(
        tmp_path, plants_dir=str(plants), releases_dir=str(releases), components_dir=str(empty)
    )
    assert proc.returncode != 0
    assert last_line(proc).endswith("is not built (run `make component`)")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_release_naming_an_unbuilt_code_version_exits(
    tmp_path: Path, dirs: tuple[Path, Path], components_dir: Path
) -> None:
    plants, releases = dirs
    doc = json.loads((releases / "demo.json").read_text())
    doc["rings"]["canary"]["components"]["com.lineguard.LineBridge"] = "9.9.9"
    (releases / "demo.json").write_text(json.dumps(doc))
    proc = run_app(
        tmp_path,
        plants_dir=str(plants),
        releases_dir=str(releases),
        components_dir=str(components_dir),
    )
    assert proc.returncode != 0
    line = last_line(proc)
    assert "demo.json: rings.canary.components.com.lineguard.LineBridge: 9.9.9 is not" in line
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize(
    "url",
    [
        "s3://lineguard-artifacts-123456789012-eu-west-1/rollout/release/",  # a typo'd prefix
        "s3://some-other-bucket/rollout/releases/",
    ],
)
def test_an_s3_releases_dir_must_be_where_the_controller_writes(url: str) -> None:
    app = cdk.App(context={"plant": "demo", "releases_dir": url})
    with pytest.raises(PlantConfigError) as err:
        load_selection(app, ROOT)
    message = str(err.value)
    assert "s3://lineguard-artifacts-123456789012-eu-west-1/rollout/releases/" in message
    assert url in message


def test_s3_releases_before_the_artifact_bucket_exists_are_the_bootstrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto import mock_aws

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    url = "s3://lineguard-artifacts-123456789012-eu-west-1/rollout/releases"  # no slash: fine
    with mock_aws():  # no bucket: the Shared stack is not deployed yet, nothing was promoted
        selection = load_selection(cdk.App(context={"plant": "demo", "releases_dir": url}), ROOT)
    bootstrap = json.loads((ROOT / "releases" / "demo.json").read_text())
    assert selection.releases["demo"].to_json()["rings"] == bootstrap["rings"]

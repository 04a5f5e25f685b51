"""`python app.py`: bad plant files, missing releases, unknown plants fail fast with one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    plants, releases = dirs
    doc = json.loads((releases / "demo.json").read_text())
    del doc["rings"]["fleet"]
    (releases / "demo.json").write_text(json.dumps(doc))
    proc = run_app(tmp_path, plants_dir=str(plants), releases_dir=str(releases), nag="false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LineGuard-Plant-demo: ring 'fleet' has no release" in proc.stderr
    stack = json.loads((tmp_path / "out" / "LineGuard-Plant-demo.template.json").read_text())
    types = [r["Type"] for r in stack["Resources"].values()]
    assert types.count("AWS::GreengrassV2::Deployment") == 1


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

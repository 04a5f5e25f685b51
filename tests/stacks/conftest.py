"""Shared fixtures for the cloud-side tests: the shipped plant files, their releases, a
component build and one synth with the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stacks.components import PublishedComponents, build_initial_model, load_code_components
from stacks.config import PlantConfig, Release, load_plant, load_plant_release

ROOT = Path(__file__).resolve().parents[2]
PLANTS = ROOT / "plants"
RELEASES = ROOT / "releases"


@pytest.fixture(scope="session")
def demo() -> PlantConfig:
    """The shipped demo plant."""
    return load_plant(PLANTS / "demo.yaml")


@pytest.fixture(scope="session")
def large() -> PlantConfig:
    """The shipped 40-line, 5,000-device plant."""
    return load_plant(PLANTS / "example-large.yaml")


@pytest.fixture(scope="session")
def demo_release(demo: PlantConfig) -> Release:
    """The shipped demo release."""
    return load_plant_release(demo, RELEASES)


@pytest.fixture(scope="session")
def large_release(large: PlantConfig) -> Release:
    """The shipped example-large release."""
    return load_plant_release(large, RELEASES)


def cli_env() -> dict[str, str]:
    """The environment for the CDK CLI: no version check, no metadata, no validation."""
    env = dict(os.environ)
    env.update(
        CDK_DISABLE_VERSION_CHECK="true",
        AWS_EC2_METADATA_DISABLED="true",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="1",
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        CDK_VALIDATION="false",  # cfn-lint below validates the templates
    )
    return env


@pytest.fixture(scope="session")
def components_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A current component build of the code components (small: a stand-in wheel)."""
    from tests.support.components import build_code_components

    return build_code_components(tmp_path_factory.mktemp("component-build"))


@pytest.fixture(scope="session")
def published(
    components_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> PublishedComponents:
    """What the Shared stack publishes, from that build and the shipped initial model."""
    model = build_initial_model(tmp_path_factory.mktemp("initial-model"))
    return PublishedComponents(code=load_code_components(components_dir), model=model)


@pytest.fixture(scope="session")
def cdk_out(tmp_path_factory: pytest.TempPathFactory, components_dir: Path) -> Path:
    """One full synth with the real CDK CLI (cdk-nag on), shared by every test that reads it."""
    if shutil.which("npx") is None:
        pytest.fail("npx not found: the CDK CLI is needed (make setup)")
    out = tmp_path_factory.mktemp("cdk.out")
    proc = subprocess.run(
        [
            "npx",
            "cdk",
            "synth",
            "--quiet",
            "-o",
            str(out),
            "-c",
            f"components_dir={components_dir}",
        ],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out

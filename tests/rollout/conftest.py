"""Fixtures for the rollout tests: a real (tiny) model package, the demo plant, temp dirs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.model_package import ModelPackage
from stacks.config import PlantConfig, load_plant
from tests.support.tiny_model import build_tiny_package

REPO = Path(__file__).resolve().parents[2]


def build_package(root: Path, version: str) -> ModelPackage:
    """A real tiny ONNX model package (B's test model) with the given version."""
    return build_tiny_package(root, version=version)


@pytest.fixture
def make_package(tmp_path: Path) -> Callable[[str], ModelPackage]:
    """Factory: a model package directory of the given version under tmp_path."""

    def make(version: str) -> ModelPackage:
        return build_package(tmp_path / f"package-{version}", version)

    return make


@pytest.fixture
def demo_plant() -> PlantConfig:
    """The committed demo plant."""
    return load_plant(REPO / "plants" / "demo.yaml")


@pytest.fixture
def releases_dir(tmp_path: Path) -> Path:
    """A copy of the committed releases/ (tests never touch the real files)."""
    target = tmp_path / "releases"
    shutil.copytree(REPO / "releases", target)
    return target


def without_shadow(plant: PlantConfig) -> PlantConfig:
    """``plant`` with no ring running a shadow phase (for tests about everything else)."""
    rings = tuple(r.model_copy(update={"shadow_minutes": 0}) for r in plant.rings)
    return plant.model_copy(update={"rings": rings})

"""Shared fixtures for the cloud-side tests: the shipped plant files and their releases."""

from __future__ import annotations

from pathlib import Path

import pytest

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

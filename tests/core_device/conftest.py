"""Fixtures for the nucleus stand-in: the repository's components, really built (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.components import DEVICE_REQUIREMENTS, PLACEHOLDER_BUCKET, component_build_module


@pytest.fixture(scope="session")
def built_components(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/components/<name>/<version>/`` for the Inspector, the LineBridge and the Model
    (the shipped initial model package), built by edge_component/build.py."""
    from tests.support.components import build_code_components

    root = tmp_path_factory.mktemp("core-device-build")
    out = build_code_components(root)
    build = component_build_module()
    for spec in build.load_specs(bucket=PLACEHOLDER_BUCKET):
        if spec.name == build.MODEL_COMPONENT:
            build.build_component(
                spec,
                out,
                requirements=DEVICE_REQUIREMENTS,
                wheel_cache=root / "wheel-cache",
                offline=True,
                model_package=spec.initial_package,
                log=lambda _line: None,
            )
    return out

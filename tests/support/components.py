"""A small component build for tests: the real build of the code components, offline.

``edge_component/build.py`` builds ``com.lineguard.Inspector`` and ``com.lineguard.LineBridge``
from the working tree with the repository's device pins, but from a pre-filled wheel cache holding
one stand-in wheel, so the zips are small and no index is needed. The sources (and so
``build.json``'s source digest) are the real ones: the CDK app accepts the build as current.

    components_dir = build_code_components(tmp_path)      # <tmp>/components/<name>/<version>/
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from stacks.components import (
    CODE_COMPONENTS,
    DEVICE_REQUIREMENTS,
    PLACEHOLDER_BUCKET,
    component_build_module,
)


def stand_in_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel (the build only bundles ``*.whl`` files)."""
    wheel = directory / "lineguard_probe-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("lineguard_probe/__init__.py", "VALUE = 42\n")
    return wheel


def build_code_components(root: Path) -> Path:
    """Build the code components into ``root/components`` (offline); return that directory."""
    build = component_build_module()
    cache_root = root / "wheel-cache"
    cache = build.cache_dir_for(DEVICE_REQUIREMENTS, cache_root)
    cache.mkdir(parents=True, exist_ok=True)
    stand_in_wheel(cache)
    (cache / ".complete").write_text("stand-in\n", encoding="utf-8")
    out = root / "components"
    for spec in build.load_specs(bucket=PLACEHOLDER_BUCKET):
        if spec.name in CODE_COMPONENTS:
            build.build_component(
                spec,
                out,
                requirements=DEVICE_REQUIREMENTS,
                wheel_cache=cache_root,
                offline=True,
                log=lambda _line: None,
            )
    return out

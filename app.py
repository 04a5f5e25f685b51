#!/usr/bin/env python3
"""CDK entry point: every plant in plants/ (or those in ``-c plant=a,b``) becomes its stacks.

Context: ``plant`` (comma-separated names, default all), ``plants_dir`` / ``releases_dir``
(default ``plants/`` and ``releases/`` beside this file), ``nag`` (``false`` skips cdk-nag).

A broken plant file, a missing release file, an unknown plant or a stack CloudFormation would
refuse (too many resources) prints one line on stderr and exits non-zero before anything is
synthesised.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stacks.config import PlantConfigError, load_plant_release, load_plants, release_path

ROOT = Path(__file__).resolve().parent


def main() -> int:
    """Validate the selected plants and their releases, then synthesise the app."""
    import aws_cdk as cdk

    from stacks.app import StackLimitError, add_nag, add_stacks, check_stack_sizes

    app = cdk.App()
    selected = _selected(app.node.try_get_context("plant"))
    try:
        plants_dir = Path(app.node.try_get_context("plants_dir") or ROOT / "plants")
        releases_dir = Path(app.node.try_get_context("releases_dir") or ROOT / "releases")
        plants = load_plants(plants_dir, selected)
        releases = {p.name: load_plant_release(p, releases_dir) for p in plants}
    except PlantConfigError as exc:
        print(f"error: {_relative(str(exc))}", file=sys.stderr)
        return 2

    stacks = add_stacks(app, plants, releases)
    try:
        check_stack_sizes(app)
    except StackLimitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, stack in stacks.plants.items():
        for ring in stack.deployments.rings_without_release:
            print(
                f"{stack.stack_name}: ring {ring!r} has no release in "
                f"{_relative(str(release_path(name, releases_dir)))}; no deployment",
                file=sys.stderr,
            )
    if app.node.try_get_context("nag") not in (False, "false"):
        add_nag(app)
    app.synth()
    return 0


def _selected(value: object) -> list[str] | None:
    if value in (None, "", "all"):
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    return [s.strip() for s in str(value).split(",") if s.strip()]


def _relative(message: str) -> str:
    return message.replace(f"{ROOT}/", "")


if __name__ == "__main__":
    sys.exit(main())

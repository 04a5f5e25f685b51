#!/usr/bin/env python3
"""CDK entry point: every plant in plants/ (or those in ``-c plant=a,b``) becomes its stacks.

Context: ``plant`` (comma-separated names, default all), ``plants_dir`` / ``releases_dir``
(default ``plants/`` and ``releases/`` beside this file), ``components_dir`` (the component
build, default ``build/components/``, made by ``make component``), ``nag`` (``false`` skips
cdk-nag).

Every plant file is read (the Shared stack of an account/region promotes all of its plants, so
it synthesises the same whatever ``-c plant`` selects); releases are read for the selected plants.
A broken plant file, a missing release file, an unknown plant, a missing or stale component build,
a release naming a code component version the build does not publish, or a stack CloudFormation
would refuse (too many resources) prints one line on stderr and exits non-zero before anything is
synthesised.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from stacks.components import (
    ComponentBuildError,
    PublishedComponents,
    build_initial_model,
    check_release_versions,
    load_code_components,
)
from stacks.config import PlantConfigError, release_path

ROOT = Path(__file__).resolve().parent


def main() -> int:
    """Validate the plant files and the selected plants' releases, then synthesise the app."""
    import aws_cdk as cdk

    from stacks.app import StackLimitError, add_nag, add_stacks, check_stack_sizes, load_selection

    app = cdk.App()
    # the initial model's zip is built here; its asset is copied into the cloud assembly at once
    work = tempfile.TemporaryDirectory(prefix="lineguard-initial-model-")
    try:
        selection = load_selection(app, ROOT)
        components_dir = Path(
            app.node.try_get_context("components_dir") or ROOT / "build" / "components"
        )
        components = PublishedComponents(
            code=load_code_components(components_dir), model=build_initial_model(Path(work.name))
        )
        for plant in selection.plants:
            check_release_versions(
                selection.releases[plant.name],
                components,
                release_path(plant.name, selection.releases_dir),
            )
        stacks = add_stacks(
            app,
            selection.plants,
            selection.releases,
            every_plant=selection.every_plant,
            components=components,
        )
    except (PlantConfigError, ComponentBuildError) as exc:
        print(f"error: {_relative(str(exc))}", file=sys.stderr)
        return 2
    finally:
        work.cleanup()
    try:
        check_stack_sizes(app)
    except StackLimitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, stack in stacks.plants.items():
        for ring in stack.deployments.rings_without_release:
            print(
                f"{stack.stack_name}: ring {ring!r} has no release in "
                f"{_relative(str(release_path(name, selection.releases_dir)))}; no deployment",
                file=sys.stderr,
            )
    if app.node.try_get_context("nag") not in (False, "false"):
        add_nag(app)
    app.synth()
    return 0


def _relative(message: str) -> str:
    return message.replace(f"{ROOT}/", "")


if __name__ == "__main__":
    sys.exit(main())

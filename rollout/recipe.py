"""The model component (``com.lineguard.Model``) as the component build makes it.

The recipe template and the artifact layout have one definition: ``edge_component/build.py``
with ``edge_component/recipes/com.lineguard.Model.yaml``. This module runs that build for a model
package (its version is the package's version), places the artifact under the artifact bucket's
``components/`` prefix, and adds the archive's SHA-256 digest to the recipe's artifact.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from inspector.model_package import ModelPackage
from rollout.errors import BadInputError
from rollout.fleet import MODEL_COMPONENT
from stacks.components import ComponentBuildError, component_build_module

COMPONENTS_PREFIX = "components/"
EDGE_COMPONENT = Path(__file__).resolve().parents[1] / "edge_component"


@dataclass(frozen=True)
class BuiltModel:
    """A built model component: recipe (with digest), artifact bytes and where they go."""

    version: str
    recipe: dict[str, Any]
    archive: bytes
    key: str
    uri: str
    digest: str


def digest_b64(data: bytes) -> str:
    """Base64 SHA-256, as Greengrass recipes and S3 checksums spell digests."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _component_build(root: Path = EDGE_COMPONENT) -> ModuleType:
    """``edge_component/build.py`` (stacks.components loads it), as a rollout input error."""
    try:
        return component_build_module(root)
    except ComponentBuildError as exc:
        raise BadInputError(str(exc)) from None


def build_model(
    package: ModelPackage,
    bucket: str,
    root: Path = EDGE_COMPONENT,
    *,
    shadow: ModelPackage | None = None,
    version: str | None = None,
) -> BuiltModel:
    """Build ``com.lineguard.Model`` from ``package`` for ``s3://bucket/components/...``;
    with ``shadow`` riding along under ``shadow/`` and the component at ``version`` (a shadow
    carrier, :func:`rollout.fleet.shadow_carrier_version`)."""
    build = _component_build(root)
    location = f"{bucket}/{COMPONENTS_PREFIX.rstrip('/')}"
    try:
        (spec,) = [
            s
            for s in build.load_specs(root / "gdk-config.json", bucket=location)
            if s.name == MODEL_COMPONENT
        ]
        with tempfile.TemporaryDirectory(prefix="lineguard-model-build-") as out:
            built = build.build_component(
                spec,
                Path(out),
                requirements=root.parent / "requirements-device.txt",
                wheel_cache=Path(out) / "wheels",
                model_package=Path(package.root),
                shadow_package=Path(shadow.root) if shadow is not None else None,
                component_version=version,
                log=lambda _line: None,
            )
            archive = built.artifact.read_bytes()
            text = built.recipe.read_text(encoding="utf-8")
    except build.BuildError as exc:
        raise BadInputError(f"component build: {exc}") from None
    import yaml

    recipe = yaml.safe_load(text)
    digest = digest_b64(archive)
    found = False
    for manifest in recipe.get("Manifests", []):
        for artifact in manifest.get("Artifacts", []):
            if artifact.get("URI") == built.uri:
                artifact["Digest"] = digest
                artifact["Algorithm"] = "SHA-256"
                found = True
    if not found:
        raise BadInputError(f"component build: the recipe has no artifact {built.uri}")
    prefix = f"s3://{bucket}/"
    if not built.uri.startswith(prefix + COMPONENTS_PREFIX):
        raise BadInputError(f"component build: artifact {built.uri} is not under {prefix}")
    return BuiltModel(
        version=built.version,
        recipe=recipe,
        archive=archive,
        key=built.uri[len(prefix) :],
        uri=built.uri,
        digest=digest,
    )


def recipe_bytes(recipe: dict[str, Any]) -> bytes:
    """The recipe as the ``inlineRecipe`` of ``create_component_version`` (JSON)."""
    return json.dumps(recipe, sort_keys=True).encode("utf-8")

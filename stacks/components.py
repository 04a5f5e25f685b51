"""The Greengrass components the Shared stack publishes, read from the component build.

``make component`` (``edge_component/build.py``) builds the code components —
``com.lineguard.Inspector`` and ``com.lineguard.LineBridge``, with their device wheels — into
``build/components/<name>/<version>/`` (recipe, zip, ``build.json``). The CDK app publishes those
builds as they are (no rebuild at synth), after checking that they were built from the working
tree's sources: a stale build would publish old code under the current version. The first model
version, ``com.lineguard.Model`` from the shipped package ``edge_component/initial-model``, is
built at synth (a small, deterministic zip). Later model versions are published by the promotion
job (``rollout/``), never by the stack.

Each published component's artifact goes to ``components/<name>/<version>/<artifact>`` in the
artifact bucket, and its recipe names that URI with the artifact's SHA-256 ``Digest``, so the
recipe of a version changes whenever its bytes do.

No CDK import here (the checks run before anything is synthesised).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from stacks.config import INSPECTOR, LINE_BRIDGE, MODEL, Release, ReleaseError

REPO = Path(__file__).resolve().parents[1]
EDGE_COMPONENT = REPO / "edge_component"
GDK_CONFIG = EDGE_COMPONENT / "gdk-config.json"
DEVICE_REQUIREMENTS = REPO / "requirements-device.txt"
COMPONENTS_DIR = REPO / "build" / "components"
COMPONENTS_PREFIX = "components/"
CODE_COMPONENTS = (INSPECTOR, LINE_BRIDGE)
PLACEHOLDER_BUCKET = "artifact-bucket"  # the build's URIs are replaced by the stack's
SAMPLE_UPLOADS = "sampleUploads"  # the inspector's upload settings (its recipe's bucket "")


class ComponentBuildError(ValueError):
    """A component build is missing, stale or malformed; the message is one line."""


def component_build_module(root: Path = EDGE_COMPONENT) -> ModuleType:
    """``edge_component/build.py``, loaded by path (a top-level ``build`` is a PyPI package)."""
    path = root / "build.py"
    name = "lineguard_component_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ComponentBuildError(f"{path}: the component build script is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class ComponentArtifact:
    """One component version as the stack publishes it: its built recipe and artifact file."""

    name: str
    version: str
    recipe: Mapping[str, Any]
    artifact: Path
    sha256: str

    @property
    def key(self) -> str:
        """Object key of the artifact in the artifact bucket."""
        return f"{COMPONENTS_PREFIX}{self.name}/{self.version}/{self.artifact.name}"

    @property
    def digest(self) -> str:
        """Base64 SHA-256, as recipes spell ``Digest``.

        Greengrass replaces a recipe's ``Digest`` with the one it computes when the component is
        created (recipe reference: "(Read-only)"), so the nucleus checks the service's digest;
        ours is the same bytes' and makes the recipe change whenever the bytes do.
        """
        return base64.b64encode(bytes.fromhex(self.sha256)).decode("ascii")

    def published_recipe(self, bucket: str) -> dict[str, Any]:
        """The recipe with its artifact at ``s3://bucket/<key>`` and that artifact's digest."""
        recipe = copy.deepcopy(dict(self.recipe))
        found = 0
        for manifest in recipe.get("Manifests", []):
            for artifact in manifest.get("Artifacts", []):
                uri = str(artifact.get("URI", ""))
                if uri.rsplit("/", 1)[-1] == self.artifact.name:
                    artifact["URI"] = f"s3://{bucket}/{self.key}"
                    artifact["Digest"] = self.digest
                    artifact["Algorithm"] = "SHA-256"
                    found += 1
        if not found:
            raise ComponentBuildError(
                f"{self.name} {self.version}: the recipe names no artifact {self.artifact.name}"
            )
        # the inspector's samples go to samples/<plant>/<device>/ of this same bucket, the one
        # the token exchange role may write (stacks/constructs/core_device_access.py): a default
        # of the published recipe, so every device of the account and region gets it and no
        # ring's deployment has to carry it (docs/sample-uploads.md)
        defaults = recipe.get("ComponentConfiguration", {}).get("DefaultConfiguration", {})
        uploads = defaults.get(SAMPLE_UPLOADS) if isinstance(defaults, dict) else None
        if isinstance(uploads, dict) and uploads.get("bucket") == "":
            uploads["bucket"] = bucket
        return recipe


@dataclass(frozen=True)
class PublishedComponents:
    """What the Shared stack publishes: the code components and the initial model."""

    code: Mapping[str, ComponentArtifact]
    model: ComponentArtifact

    def all(self) -> tuple[ComponentArtifact, ...]:
        """Every published component version, code first."""
        return (*self.code.values(), self.model)

    def publishes(self, name: str, version: str) -> bool:
        """Whether the stack publishes ``name`` at ``version``."""
        return any(a.name == name and a.version == version for a in self.all())


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (component zips are tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_built(directory: Path, name: str, version: str) -> tuple[ComponentArtifact, str]:
    """The build in ``directory`` and the source digest its ``build.json`` records."""
    import yaml

    build = component_build_module()
    try:
        info = json.loads((directory / build.BUILD_INFO).read_text(encoding="utf-8"))
        recipe = yaml.safe_load((directory / "recipe.yaml").read_text(encoding="utf-8"))
        artifact = directory / str(info["artifact"])
        expected = str(info["artifact_sha256"])
    except FileNotFoundError:
        raise ComponentBuildError(
            f"{directory}: {name} {version} is not built (run `make component`)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ComponentBuildError(f"{directory}: unreadable build ({exc})") from None
    if not isinstance(recipe, dict) or (
        recipe.get("ComponentName"),
        recipe.get("ComponentVersion"),
    ) != (name, version):
        raise ComponentBuildError(f"{directory}/recipe.yaml: not the recipe of {name} {version}")
    if not artifact.is_file():
        raise ComponentBuildError(f"{artifact}: missing (run `make component`)")
    sha = file_sha256(artifact)
    if sha != expected:
        raise ComponentBuildError(f"{artifact}: changed since it was built (run `make component`)")
    return ComponentArtifact(name, version, recipe, artifact, sha), str(info.get("source_sha256"))


def load_code_components(
    components_dir: Path = COMPONENTS_DIR,
    *,
    names: Iterable[str] = CODE_COMPONENTS,
    config: Path = GDK_CONFIG,
    requirements: Path = DEVICE_REQUIREMENTS,
) -> dict[str, ComponentArtifact]:
    """The code components built in ``components_dir``, each checked against the working tree."""
    build = component_build_module()
    try:
        specs = {s.name: s for s in build.load_specs(config, bucket=PLACEHOLDER_BUCKET)}
    except build.BuildError as exc:
        raise ComponentBuildError(str(exc)) from None
    out: dict[str, ComponentArtifact] = {}
    for name in names:
        spec = specs[name]
        directory = Path(components_dir) / name / spec.version
        built, recorded = _load_built(directory, name, spec.version)
        sources = build.source_digest(
            spec,
            version=spec.version,
            package=spec.package,
            requirements=requirements if spec.wheels else None,
        )
        if recorded != sources:
            where = (
                spec.package.relative_to(REPO)
                if spec.package.is_relative_to(REPO)
                else spec.package
            )
            raise ComponentBuildError(
                f"{directory}: built from other sources than the working tree's ({where}, its "
                f"recipe template or the device pins changed since); run `make component`"
            )
        out[name] = built
    return out


def build_initial_model(
    out_dir: Path, *, config: Path = GDK_CONFIG, package: Path | None = None
) -> ComponentArtifact:
    """Build ``com.lineguard.Model`` from the shipped initial package into ``out_dir``."""
    build = component_build_module()
    try:
        (spec,) = [
            s for s in build.load_specs(config, bucket=PLACEHOLDER_BUCKET) if s.name == MODEL
        ]
        source = package or spec.initial_package
        if source is None:
            raise ComponentBuildError(f"{config}: {MODEL} has no lineguard.initial_package")
        built = build.build_component(
            spec,
            Path(out_dir),
            requirements=DEVICE_REQUIREMENTS,
            wheel_cache=Path(out_dir) / "unused",
            model_package=Path(source),
            log=lambda _line: None,
        )
    except build.BuildError as exc:
        raise ComponentBuildError(str(exc)) from None
    return _load_built(built.directory, MODEL, built.version)[0]


def check_release_versions(
    release: Release, components: PublishedComponents, where: Path | str
) -> None:
    """Raise :class:`ReleaseError` if a ring names a code component version the stack does not
    publish: code versions roll out with ``cdk deploy``, so every ring names the built one."""
    for ring, entry in release.rings.items():
        for name, version in entry.components.items():
            built = components.code.get(name)
            if built is not None and version != built.version:
                raise ReleaseError(
                    where,
                    f"rings.{ring}.components.{name}",
                    f"{version} is not the version the Shared stack publishes ({built.version}, "
                    "edge_component/gdk-config.json)",
                )

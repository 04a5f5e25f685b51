"""Build Greengrass components: a recipe template + a package directory → recipe + artifact zip.

``python edge_component/build.py`` (``make component``) builds every component listed in
``edge_component/gdk-config.json`` (the one version source) into
``build/components/<name>/<version>/``: ``recipe.yaml`` with the placeholders filled and
``<artifact>.zip``, whose URI in the recipe is ``s3://<bucket>/<name>/<version>/<artifact>.zip``.

A component with ``"wheels": true`` gets the device requirements (``requirements-device.txt``)
and their wheels for the device platform inside its zip (``pip download``, cached under
``build/wheel-cache/`` so repeated builds are fast and work offline), so its install lifecycle
never needs an index. ``com.lineguard.Model`` is built from a model package directory
(``--model-package``); its version is the package manifest's version. ``lineguard.initial_package``
in ``gdk-config.json`` names the shipped initial model package, which the Shared stack publishes
as the first model version.

Beside the recipe and the zip, ``build.json`` records the build: the SHA-256 of its sources
(recipe template, package files, device pins) and of the artifact. The CDK app publishes only a
build whose sources are still those of the working tree (``stacks/components.py``).

Zip layout (Greengrass unarchives ``<artifact>.zip`` into ``{artifacts:decompressedPath}/<artifact>/``)::

    <package>/...              the Python package (PYTHONPATH={artifacts:decompressedPath}/<artifact>)
    wheels/*.whl               device wheels
    requirements-device.txt    what the install lifecycle installs from wheels/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# the install step of every component with wheels: checks the device's Python and architecture
# against the wheels' and skips a finished install (the nucleus runs install at every start)
INSTALL_SCRIPT = HERE / "install-device.sh"
DEVICE_RUNTIME = "device-runtime.txt"
SHADOW_DIR = "shadow"  # a shadow model package inside the Model component's artifact
GDK_CONFIG = HERE / "gdk-config.json"
MODEL_COMPONENT = "com.lineguard.Model"
BUILD_INFO = "build.json"
MAX_RECIPE_BYTES = 16 * 1024  # Greengrass limit
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+][0-9A-Za-z.-]+)?$")
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
_SKIP = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
# a trained package keeps every candidate model it chose from under candidates/ (training's
# record); the device needs the kept one only
_PACKAGE_SKIP = {"candidates"}
PLATFORMS = {
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"],
    "aarch64": ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"],
}


class BuildError(Exception):
    """A component cannot be built (names the component and the file at fault)."""


@dataclass(frozen=True)
class ComponentSpec:
    """One component: its recipe template, what goes into its artifact, and where it lives."""

    name: str
    version: str
    recipe: Path
    package: Path | None
    artifact: str
    wheels: bool
    bucket: str
    initial_package: Path | None = None


@dataclass(frozen=True)
class Built:
    """What a build produced."""

    name: str
    version: str
    directory: Path
    recipe: Path
    artifact: Path
    uri: str
    source_sha256: str = ""


def load_specs(config_path: Path = GDK_CONFIG, *, bucket: str | None = None) -> list[ComponentSpec]:
    """Read ``gdk-config.json``: every component with its recipe template and package dir."""
    try:
        doc = json.loads(config_path.read_text(encoding="utf-8"))
        components = doc["component"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{config_path}: cannot read the component list ({exc})") from None
    specs = []
    for name, entry in components.items():
        where = f"{config_path}: component.{name}"
        extra = entry.get("lineguard") or {}
        if "recipe" not in extra:
            raise BuildError(f"{where}.lineguard.recipe: missing (the recipe template)")
        package = extra.get("package")
        initial = extra.get("initial_package")
        version = str(entry.get("version", ""))
        if name != MODEL_COMPONENT and not SEMVER.match(version):
            raise BuildError(f"{where}.version: {version!r} is not a semantic version")
        chosen_bucket = bucket or (entry.get("publish") or {}).get("bucket")
        if not chosen_bucket:
            raise BuildError(f"{where}.publish.bucket: missing (or pass --bucket)")
        specs.append(
            ComponentSpec(
                name=name,
                version=version,
                recipe=(config_path.parent / extra["recipe"]).resolve(),
                package=None if package is None else (config_path.parent / package).resolve(),
                artifact=str(extra.get("artifact") or package or name.rsplit(".", 1)[-1].lower()),
                wheels=bool(extra.get("wheels", False)),
                bucket=str(chosen_bucket),
                initial_package=None
                if initial is None
                else (config_path.parent / initial).resolve(),
            )
        )
    return specs


def render_recipe(template: str, *, name: str, version: str, bucket: str) -> str:
    """Fill the GDK placeholders: ``{COMPONENT_NAME}``, ``{COMPONENT_VERSION}``, and
    ``BUCKET_NAME``/``COMPONENT_NAME``/``COMPONENT_VERSION`` inside ``s3://`` URIs."""
    text = template.replace("{COMPONENT_NAME}", name).replace("{COMPONENT_VERSION}", version)

    def uri(match: re.Match[str]) -> str:
        return (
            match.group(0)
            .replace("BUCKET_NAME", bucket)
            .replace("COMPONENT_NAME", name)
            .replace("COMPONENT_VERSION", version)
        )

    return re.sub(r"s3://[^\s\"']+", uri, text)


def check_recipe(text: str, *, where: str, name: str, version: str) -> dict[str, Any]:
    """Parse a rendered recipe and check what the build promises; return the document."""
    import yaml  # build-machine dependency (PyYAML), not needed on devices

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BuildError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise BuildError(f"{where}: a recipe must be a mapping")
    if doc.get("ComponentName") != name or doc.get("ComponentVersion") != version:
        raise BuildError(f"{where}: ComponentName/ComponentVersion not filled in")
    left = re.findall(r"BUCKET_NAME|COMPONENT_NAME|COMPONENT_VERSION", json.dumps(doc))
    if left:
        raise BuildError(f"{where}: placeholder {left[0]} left unfilled")
    size = len(json.dumps(doc, separators=(",", ":")).encode())
    if size > MAX_RECIPE_BYTES:
        raise BuildError(f"{where}: recipe is {size} bytes, Greengrass allows {MAX_RECIPE_BYTES}")
    return doc


def _files(root: Path, skip_top: frozenset[str] | set[str] = frozenset()) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in _SKIP for part in rel.parts) or path.suffix in (".pyc", ".pyo"):
            continue
        if rel.parts[0] in skip_top:
            continue
        if path.is_file():
            out.append(path)
    return out


def source_digest(
    spec: ComponentSpec, *, version: str, package: Path, requirements: Path | None
) -> str:
    """SHA-256 (hex) over what a build is made of: name, version, recipe template, the package's
    files (names and bytes, as they go into the zip) and, with wheels, the device pins."""
    digest = hashlib.sha256()
    for part in (spec.name, version, spec.recipe.read_text(encoding="utf-8")):
        digest.update(part.encode() + b"\0")
    for path in _files(package, _PACKAGE_SKIP if spec.name == MODEL_COMPONENT else frozenset()):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    if requirements is not None:
        digest.update(b"requirements\0" + requirements.read_bytes())
        digest.update(b"install\0" + INSTALL_SCRIPT.read_bytes())
    return digest.hexdigest()


def write_zip(entries: Sequence[tuple[Path, str]], dest: Path) -> Path:
    """A deterministic zip (sorted names, fixed timestamps): same input → same bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for source, arcname in sorted(entries, key=lambda e: e[1]):
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    tmp.replace(dest)
    return dest


def requirement_names(requirements: Path) -> list[str]:
    """The pinned requirement lines of a requirements file (comments dropped)."""
    lines = []
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            if "==" not in line:
                raise BuildError(f"{requirements}: {line!r} is not pinned (use name==version)")
            lines.append(line)
    return lines


def cache_dir_for(
    requirements: Path, cache_root: Path, *, arch: str = "x86_64", python_version: str = "3.11"
) -> Path:
    """Where the wheels of these pins for this platform are cached (the pins' hash names it)."""
    if arch not in PLATFORMS:
        raise BuildError(f"--arch {arch!r}: one of {', '.join(PLATFORMS)}")
    pins = requirement_names(requirements)
    key = hashlib.sha256("\n".join([arch, python_version, *pins]).encode()).hexdigest()[:12]
    return cache_root / f"py{python_version}-{arch}-{key}"


def fetch_wheels(
    requirements: Path,
    cache_root: Path,
    *,
    arch: str = "x86_64",
    python_version: str = "3.11",
    offline: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Wheels of the pinned requirements (and their dependencies) for the device platform.

    Cached in ``cache_root/<python>-<arch>-<hash of the requirements>/``: a second build reuses
    them without network. ``offline`` fails clearly instead of downloading.
    """
    cache = cache_dir_for(requirements, cache_root, arch=arch, python_version=python_version)
    pins = requirement_names(requirements)
    stamp = cache / ".complete"
    if stamp.exists():
        log(f"  wheels: cached in {cache}")
        return cache
    if offline:
        raise BuildError(f"wheels for {requirements} are not cached in {cache} (offline build)")
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
        *[arg for platform in PLATFORMS[arch] for arg in ("--platform", platform)],
        "--dest", str(cache), "-r", str(requirements),
    ]  # fmt: skip
    log(f"  wheels: pip download for cp{python_version} {arch} into {cache} (first build only)")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise BuildError(f"pip download failed for {requirements}: {' | '.join(tail)}")
    stamp.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return cache


def build_component(
    spec: ComponentSpec,
    out_root: Path,
    *,
    requirements: Path,
    wheel_cache: Path,
    arch: str = "x86_64",
    python_version: str = "3.11",
    offline: bool = False,
    model_package: Path | None = None,
    shadow_package: Path | None = None,
    component_version: str | None = None,
    log: Callable[[str], None] = print,
) -> Built:
    """Build one component into ``out_root/<name>/<version>/``.

    ``component_version``: the Model component's version when it is not the model package's
    (a shadow carrier: the served package's model with another as shadow, rollout/fleet.py).
    """
    version, package = spec.version, spec.package
    if spec.name == MODEL_COMPONENT:
        if model_package is None:
            raise BuildError(
                f"{spec.name}: pass --model-package <dir> (its manifest has the version)"
            )
        from inspector.model_package import ModelPackageError, load_package

        try:
            version = load_package(model_package).manifest.version
        except ModelPackageError as exc:
            raise BuildError(f"{spec.name}: {exc}") from None
        package = model_package
        if component_version is not None:
            version = component_version
    elif component_version is not None:
        raise BuildError(f"{spec.name}: a component version override is for {MODEL_COMPONENT}")
    if package is None or not package.is_dir():
        raise BuildError(f"{spec.name}: package directory {package} not found")
    if not spec.recipe.is_file():
        raise BuildError(f"{spec.name}: recipe template {spec.recipe} not found")
    log(f"==> {spec.name} {version}")
    directory = out_root / spec.name / version
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    if spec.name == MODEL_COMPONENT:
        entries = [
            (path, path.relative_to(package).as_posix()) for path in _files(package, _PACKAGE_SKIP)
        ]
        if shadow_package is not None:
            # an optional shadow model rides along (<model>/shadow/): it scores every frame and
            # never decides; the inspector loads it with its recipe's shadowModel: auto
            from inspector.model_package import ModelPackageError, load_package

            try:
                load_package(shadow_package)
            except ModelPackageError as exc:
                raise BuildError(f"--shadow-package {shadow_package}: {exc}") from None
            entries += [
                (path, f"{SHADOW_DIR}/{path.relative_to(shadow_package).as_posix()}")
                for path in _files(shadow_package, _PACKAGE_SKIP)
            ]
    elif shadow_package is not None:
        raise BuildError(f"{spec.name}: --shadow-package is for {MODEL_COMPONENT} only")
    else:
        entries = [
            (path, f"{package.name}/{path.relative_to(package).as_posix()}")
            for path in _files(package)
        ]
    if spec.wheels:
        if not requirements.is_file():
            raise BuildError(f"{spec.name}: device requirements {requirements} not found")
        cache = fetch_wheels(
            requirements, wheel_cache, arch=arch, python_version=python_version,
            offline=offline, log=log,
        )  # fmt: skip
        wheels = sorted(cache.glob("*.whl"))
        if not wheels:
            raise BuildError(f"{spec.name}: no wheels in {cache}")
        entries += [(wheel, f"wheels/{wheel.name}") for wheel in wheels]
        entries.append((requirements, "requirements-device.txt"))
        # what the install step checks the device against, and the marker of a finished install
        installed = hashlib.sha256(requirements.read_bytes())
        for wheel in wheels:
            installed.update(wheel.name.encode() + b"\0")
        runtime = directory / DEVICE_RUNTIME
        runtime.write_text(
            f"python={python_version}\narch={arch}\ndigest={installed.hexdigest()[:16]}\n",
            encoding="utf-8",
        )
        entries += [(runtime, DEVICE_RUNTIME), (INSTALL_SCRIPT, INSTALL_SCRIPT.name)]
    artifact = write_zip(entries, directory / f"{spec.artifact}.zip")
    uri = f"s3://{spec.bucket}/{spec.name}/{version}/{artifact.name}"
    text = render_recipe(
        spec.recipe.read_text(encoding="utf-8"), name=spec.name, version=version, bucket=spec.bucket
    )
    doc = check_recipe(text, where=str(spec.recipe), name=spec.name, version=version)
    uris = [a.get("URI") for m in doc.get("Manifests", []) for a in m.get("Artifacts", [])]
    if uri not in uris:
        raise BuildError(f"{spec.recipe}: no artifact URI {uri} (found {uris})")
    recipe = directory / "recipe.yaml"
    recipe.write_text(text, encoding="utf-8")
    sources = source_digest(
        spec, version=version, package=package, requirements=requirements if spec.wheels else None
    )
    info = {
        "name": spec.name,
        "version": version,
        "source_sha256": sources,
        "artifact": artifact.name,
        "artifact_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
    }
    (directory / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    size_mb = artifact.stat().st_size / 1e6
    log(f"  {recipe}\n  {artifact} ({size_mb:.1f} MB) -> {uri}")
    return Built(spec.name, version, directory, recipe, artifact, uri, sources)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build the listed components (default: all but the model unless a package is given)."""
    parser = argparse.ArgumentParser(
        prog="python edge_component/build.py",
        description="Build Greengrass components into build/components/<name>/<version>/.",
    )
    parser.add_argument("--component", action="append", help="component name (repeatable)")
    parser.add_argument(
        "--bucket", help="artifact bucket (default: gdk-config.json publish.bucket)"
    )
    parser.add_argument("--config", type=Path, default=GDK_CONFIG, help="gdk-config.json to use")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "components")
    parser.add_argument(
        "--requirements", type=Path, default=REPO / "requirements-device.txt", help="device pins"
    )
    parser.add_argument("--wheel-cache", type=Path, default=REPO / "build" / "wheel-cache")
    parser.add_argument("--arch", default="x86_64", choices=sorted(PLATFORMS))
    parser.add_argument("--python-version", default="3.11", help="device Python (default 3.11)")
    parser.add_argument("--offline", action="store_true", help="never download; use the cache")
    parser.add_argument("--model-package", type=Path, help="model package dir for the Model")
    parser.add_argument(
        "--shadow-package", type=Path, help="a shadow model package to ship inside the Model"
    )
    args = parser.parse_args(argv)
    try:
        specs = load_specs(args.config, bucket=args.bucket)
        known = {s.name: s for s in specs}
        names = args.component or [
            s.name for s in specs if s.name != MODEL_COMPONENT or args.model_package
        ]
        for name in names:
            if name not in known:
                raise BuildError(f"--component {name}: not in {args.config} ({', '.join(known)})")
            build_component(
                known[name],
                args.out,
                requirements=args.requirements,
                wheel_cache=args.wheel_cache,
                arch=args.arch,
                python_version=args.python_version,
                offline=args.offline,
                model_package=args.model_package,
                shadow_package=args.shadow_package if name == MODEL_COMPONENT else None,
            )
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The nucleus' directory layout under its root, and installing a built component into it.

Sources (nucleus HEAD a28341c): ``lifecyclemanager/KernelCommandLine.java`` (root sub-paths),
``util/NucleusPaths.java`` (artifact, unarchived and work paths), ``componentmanager/
ComponentStore.java`` (recipe file names), ``componentmanager/ComponentManager.java`` and
``componentmanager/Unarchiver.java`` (download, unzip, permissions), ``util/Permissions.java`` and
``componentmanager/models/Permission.java`` (file modes), ``lifecyclemanager/LogManagerHelper.java``
(per-component log files).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core_device.recipes import Artifact, Recipe

# Permissions.java:22-28
OWNER_RWX_ONLY = 0o700
OWNER_RWX_EVERYONE_RX = 0o755


class LayoutError(Exception):
    """A component cannot be laid out (names the component, the artifact and the path)."""


def artifact_mode(artifact: Artifact, *, superuser: bool | None = None) -> int:
    """The file mode for an artifact file: ``Permission.toFileSystemPermission``
    (models/Permission.java) plus owner-write when not root (Permissions.java:56-62)."""
    read, execute = artifact.read, artifact.execute
    mode = stat.S_IRUSR  # "we always want user to read"
    if execute in ("ALL", "OWNER"):
        mode |= stat.S_IXUSR
    # "user group is considered to be owner"; execute needs read
    if read in ("ALL", "OWNER") or execute in ("OWNER", "ALL"):
        mode |= stat.S_IRGRP
    if execute in ("OWNER", "ALL"):
        mode |= stat.S_IXGRP
    if read == "ALL" or execute == "ALL":
        mode |= stat.S_IROTH
    if execute == "ALL":
        mode |= stat.S_IXOTH
    if superuser is None:
        superuser = os.geteuid() == 0
    if not superuser:
        # so the nucleus (same user) can still delete the file when it cleans up artifacts
        mode |= stat.S_IWUSR
    return mode


def set_artifact_permission(path: Path, artifact: Artifact) -> None:
    """``Permissions.setArtifactPermission`` (Permissions.java:43-66): directories get 755 and
    are walked, files get the artifact's mode."""
    if not path.exists():
        return
    if path.is_dir() and not path.is_symlink():
        path.chmod(OWNER_RWX_EVERYONE_RX)
        for child in path.iterdir():
            set_artifact_permission(child, artifact)
    else:
        path.chmod(artifact_mode(artifact))


def recipe_file_name(name: str, version: str) -> str:
    """``<sha256(name), base64url, no padding>@<version>.recipe.yaml`` (ComponentStore.java:458,
    :661-679; util/Digest.java:61-68)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    encoded = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    return f"{encoded}@{version}.recipe.yaml"


def archive_stem(file_name: str) -> str:
    """The unarchive folder name: the file name up to its last dot, if the dot is not the first
    character (ComponentManager.java:718-725 ``getFileName``)."""
    dot = file_name.rfind(".")
    return file_name[:dot] if file_name.find(".") > 0 else file_name


def _ensure(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def unzip(archive: Path, destination: Path) -> None:
    """``Unarchiver.unzip`` (Unarchiver.java:39-84): refuses entries outside the destination,
    rewrites a file only when missing or of another size, and deletes the destination on error."""
    destination.mkdir(parents=True, exist_ok=True)
    base = destination.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = (destination / info.filename).resolve()
                if not str(target).startswith(str(base) + os.sep):
                    raise LayoutError(
                        f"{archive}: entry {info.filename!r} is outside {destination}"
                    )
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists() and target.stat().st_size == info.file_size:
                    continue
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 64 * 1024)
    except (OSError, zipfile.BadZipFile) as exc:
        shutil.rmtree(destination, ignore_errors=True)
        raise LayoutError(f"{archive}: cannot unarchive into {destination} ({exc})") from None
    except LayoutError:
        shutil.rmtree(destination, ignore_errors=True)
        raise


@dataclass(frozen=True)
class Layout:
    """The nucleus root: ``packages/`` (component store), ``work/``, ``logs/``
    (KernelCommandLine.java:60-66; NucleusPaths.java:111-124)."""

    root: Path

    @property
    def packages(self) -> Path:
        """The component store (``~root/packages``)."""
        return self.root / "packages"

    @property
    def recipes(self) -> Path:
        """``packages/recipes`` (ComponentStore.java:59)."""
        return self.packages / "recipes"

    @property
    def artifacts(self) -> Path:
        """``packages/artifacts`` (ComponentStore.java:60)."""
        return self.packages / "artifacts"

    @property
    def unarchived(self) -> Path:
        """``packages/artifacts-unarchived`` (ComponentStore.java:61)."""
        return self.packages / "artifacts-unarchived"

    @property
    def work(self) -> Path:
        """``~root/work``."""
        return self.root / "work"

    @property
    def logs(self) -> Path:
        """The log directory (``~root/logs``, the nucleus' default log store)."""
        return self.root / "logs"

    def create(self) -> Layout:
        """Create the directories with the nucleus' modes (NucleusPaths.java:96-124)."""
        _ensure(self.root, OWNER_RWX_EVERYONE_RX)
        _ensure(self.packages, OWNER_RWX_EVERYONE_RX)
        _ensure(self.artifacts, OWNER_RWX_EVERYONE_RX)
        _ensure(self.unarchived, OWNER_RWX_EVERYONE_RX)
        _ensure(self.recipes, OWNER_RWX_ONLY)
        _ensure(self.work, OWNER_RWX_EVERYONE_RX)
        _ensure(self.logs, OWNER_RWX_ONLY)
        return self

    def artifacts_path(self, name: str, version: str) -> Path:
        """``{artifacts:path}``: ``packages/artifacts/<name>/<version>`` (NucleusPaths:130-140)."""
        return self.artifacts / name / version

    def decompressed_path(self, name: str, version: str) -> Path:
        """``{artifacts:decompressedPath}``: ``packages/artifacts-unarchived/<name>/<version>``
        (NucleusPaths.java:158-166); each archive unpacks into ``<that>/<stem>``."""
        return self.unarchived / name / version

    def work_path(self, name: str) -> Path:
        """``{work:path}``: ``work/<name>``, kept across versions (NucleusPaths.java:172-177)."""
        return self.work / name

    def recipe_path(self, name: str, version: str) -> Path:
        """Where the component store keeps a recipe."""
        return self.recipes / recipe_file_name(name, version)

    def log_path(self, name: str) -> Path:
        """``logs/<name>.log`` (LogManagerHelper.java:17, :31)."""
        return self.logs / f"{name}.log"

    def install(self, recipe: Recipe, built: Path) -> None:
        """Put a built component in place (recipe, artifacts, unarchived artifacts, work dir) as
        the component manager does after a download (ComponentManager.java:500-553).

        ``built`` is ``build/components/<name>/<version>/`` holding ``recipe.yaml`` and the
        artifacts by file name (edge_component/build.py)."""
        self.create()
        where = f"{recipe.name}@{recipe.version}"
        recipe_file = built / "recipe.yaml"
        if not recipe_file.is_file():
            recipe_file = built / "recipe.json"
        if recipe_file.is_file():
            target = self.recipe_path(recipe.name, recipe.version)
            shutil.copyfile(recipe_file, target)
            target.chmod(0o600)
        _ensure(self.artifacts / recipe.name, OWNER_RWX_EVERYONE_RX)
        store = _ensure(self.artifacts_path(recipe.name, recipe.version), OWNER_RWX_EVERYONE_RX)
        for artifact in recipe.artifacts:
            source = built / artifact.file_name
            if not source.is_file():
                raise LayoutError(
                    f"{where}: artifact {artifact.uri} not found as {source} (build the component"
                    " with edge_component/build.py)"
                )
            target = store / artifact.file_name
            if not target.exists() or target.stat().st_size != source.stat().st_size:
                if target.exists():
                    target.chmod(0o600)
                shutil.copyfile(source, target)
            set_artifact_permission(target, artifact)
            if artifact.unarchive == "ZIP":
                _ensure(self.unarchived / recipe.name, OWNER_RWX_EVERYONE_RX)
                decompressed = _ensure(
                    self.decompressed_path(recipe.name, recipe.version), OWNER_RWX_EVERYONE_RX
                )
                into = decompressed / archive_stem(artifact.file_name)
                unzip(target, into)
                set_artifact_permission(into, artifact)
        # NucleusPaths.workPath(name) creates it with 700 (Permissions.java:90-92)
        _ensure(self.work, OWNER_RWX_EVERYONE_RX)
        _ensure(self.work_path(recipe.name), OWNER_RWX_ONLY)

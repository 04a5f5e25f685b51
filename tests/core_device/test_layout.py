"""Layout: the nucleus' paths, and installing the repository's built components into them."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from core_device.layout import (
    Layout,
    LayoutError,
    archive_stem,
    artifact_mode,
    recipe_file_name,
)
from core_device.recipes import Artifact, load_recipe, parse_recipe

LINUX = {"os": "linux", "architecture": "amd64"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _file(mode: int) -> int:
    """An artifact file's mode: owner-write is added unless the nucleus runs as root."""
    return mode if os.geteuid() != 0 else mode & ~stat.S_IWUSR


def test_recipe_file_name_is_the_component_store_name() -> None:
    # ComponentStore: base64url(sha256(name)) without padding, "@", version, ".recipe.yaml"
    assert recipe_file_name("com.lineguard.Model", "1.0.0").endswith("@1.0.0.recipe.yaml")
    assert recipe_file_name("a", "1.0.0") == (
        "ypeBEsobvcr6wjGzmiPcTaeG7_gUfE5yuYB3ha_uSLs@1.0.0.recipe.yaml"
    )


@pytest.mark.parametrize(
    ("name", "stem"),
    [("model.zip", "model"), ("a.b.zip", "a.b"), (".hidden", ".hidden"), ("plain", "plain")],
)
def test_archive_stem_is_the_name_without_its_last_extension(name: str, stem: str) -> None:
    assert archive_stem(name) == stem


@pytest.mark.parametrize(
    ("read", "execute", "mode"),
    [
        ("OWNER", "NONE", 0o640),
        ("ALL", "NONE", 0o644),
        ("NONE", "NONE", 0o600),
        ("OWNER", "OWNER", 0o750),
        ("NONE", "ALL", 0o755),
    ],
)
def test_artifact_modes_follow_the_recipe_permission(read: str, execute: str, mode: int) -> None:
    artifact = Artifact("s3://b/x", read=read, execute=execute)
    assert artifact_mode(artifact, superuser=False) == mode
    assert artifact_mode(artifact, superuser=True) == mode & ~stat.S_IWUSR


def test_installing_the_built_components(built_components: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "gg")
    for name in ("com.lineguard.Model", "com.lineguard.Inspector"):
        (built,) = (built_components / name).iterdir()
        recipe = load_recipe(built / "recipe.yaml", device=LINUX)
        layout.install(recipe, built)
        assert (
            layout.recipe_path(name, recipe.version).read_text()
            == (built / "recipe.yaml").read_text()
        )
    model_version = next((built_components / "com.lineguard.Model").iterdir()).name
    model_dir = layout.decompressed_path("com.lineguard.Model", model_version) / "model"
    assert (model_dir / "manifest.json").is_file() and (model_dir / "model.onnx").is_file()
    assert _mode(model_dir / "model.onnx") == _file(0o644)  # Read: ALL
    assert _mode(model_dir) == 0o755
    zipped = layout.artifacts_path("com.lineguard.Model", model_version) / "model.zip"
    assert zipped.is_file() and _mode(zipped) == _file(0o644)
    code = layout.decompressed_path("com.lineguard.Inspector", "1.0.0") / "inspector"
    assert (code / "inspector" / "__main__.py").is_file()
    assert (code / "requirements-device.txt").is_file()
    assert _mode(code / "inspector" / "__main__.py") == _file(0o640)  # Read: OWNER
    assert _mode(layout.work_path("com.lineguard.Inspector")) == 0o700
    assert _mode(layout.recipes) == 0o700


def test_work_dir_is_kept_across_versions(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "gg")
    built = tmp_path / "built"
    built.mkdir()
    for version in ("1.0.0", "1.1.0"):
        doc: dict[str, object] = {
            "ComponentName": "A",
            "ComponentVersion": version,
            "Manifests": [{}],
        }
        layout.install(parse_recipe(doc, where="a", device=LINUX), built)
        if version == "1.0.0":
            (layout.work_path("A") / "journal.db").write_text("kept")
    assert (layout.work_path("A") / "journal.db").read_text() == "kept"


def test_a_missing_artifact_is_named(tmp_path: Path) -> None:
    doc = {
        "ComponentName": "A",
        "ComponentVersion": "1.0.0",
        "Manifests": [{"Artifacts": [{"URI": "s3://bucket/A/1.0.0/code.zip", "Unarchive": "ZIP"}]}],
    }
    with pytest.raises(
        LayoutError, match=r"A@1.0.0: artifact s3://bucket/A/1.0.0/code.zip not found"
    ):
        Layout(tmp_path / "gg").install(parse_recipe(doc, where="a", device=LINUX), tmp_path)


def test_a_zip_escaping_its_folder_is_refused_and_cleaned_up(tmp_path: Path) -> None:
    built = tmp_path / "built"
    built.mkdir()
    with zipfile.ZipFile(built / "evil.zip", "w") as archive:
        archive.writestr("ok.txt", "fine")
        archive.writestr("../../escape.txt", "bad")
    doc = {
        "ComponentName": "A",
        "ComponentVersion": "1.0.0",
        "Manifests": [{"Artifacts": [{"URI": "s3://b/evil.zip", "Unarchive": "ZIP"}]}],
    }
    layout = Layout(tmp_path / "gg")
    with pytest.raises(LayoutError, match="escape.txt' is outside"):
        layout.install(parse_recipe(doc, where="a", device=LINUX), built)
    assert not (layout.decompressed_path("A", "1.0.0") / "evil").exists()
    assert not list(tmp_path.rglob("escape.txt"))

"""Dataset layout validation and deterministic splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.dataset import load_dataset, main, split_dataset
from training.errors import DatasetError


def _write(path: Path, size: tuple[int, int] = (40, 30), mode: str = "L", value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def _minimal(root: Path, good: int = 12) -> Path:
    for i in range(good):
        _write(root / "good" / f"g{i:02d}.png", value=i)
    return root


def test_sample_layout_is_read_with_types_and_masks(sample: Path) -> None:
    dataset = load_dataset(sample / "brick")
    assert len(dataset.good) == 16
    assert dataset.defect_types == sorted(
        ["crack", "discolouration", "hole", "missing", "scratch", "spot"]
    )
    assert all(s.mask is not None and s.mask.is_file() for s in dataset.defects)
    assert all(s.label == 1 for s in dataset.defects) and all(s.label == 0 for s in dataset.good)


def test_untyped_defects_and_any_size_or_mode(tmp_path: Path) -> None:
    root = _minimal(tmp_path)
    _write(root / "defect" / "a.jpg", size=(300, 17), mode="RGB")
    _write(root / "defect" / "b.tif", size=(9, 500), mode="L")
    (root / "README.md").write_text("notes")
    (root / "good" / ".DS_Store").write_text("x")
    dataset = load_dataset(root)
    assert [s.defect_type for s in dataset.defects] == ["defect", "defect"]
    assert len(dataset.good) == 12


def test_unknown_folder_is_named(tmp_path: Path) -> None:
    root = _minimal(tmp_path)
    (root / "bad").mkdir()
    (root / "ok").mkdir()
    with pytest.raises(DatasetError, match=r"unknown folder\(s\) bad, ok"):
        load_dataset(root)


def test_missing_good_folder(tmp_path: Path) -> None:
    (tmp_path / "defect").mkdir()
    with pytest.raises(DatasetError, match="missing good/"):
        load_dataset(tmp_path)


def test_too_few_good_images(tmp_path: Path) -> None:
    root = _minimal(tmp_path, good=4)
    with pytest.raises(DatasetError, match=r"too few good images \(4; at least 10"):
        load_dataset(root)


def test_every_unreadable_image_is_listed(tmp_path: Path) -> None:
    root = _minimal(tmp_path)
    (root / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "defect" / "scratch").mkdir(parents=True)
    (root / "defect" / "scratch" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        load_dataset(root)
    message = str(info.value)
    assert "2 unreadable image(s)" in message
    assert "broken.png" in message and "empty.jpg" in message


def test_nested_defect_folders_are_refused(tmp_path: Path) -> None:
    root = _minimal(tmp_path)
    _write(root / "defect" / "scratch" / "deep" / "x.png")
    with pytest.raises(DatasetError, match="only one level"):
        load_dataset(root)


def test_splits_are_deterministic_disjoint_and_complete(sample: Path) -> None:
    dataset = load_dataset(sample / "brick")
    first, again = split_dataset(dataset, seed=5), split_dataset(dataset, seed=5)
    other = split_dataset(dataset, seed=6)
    assert first == again
    assert [s.rel for s in first.train] != [s.rel for s in other.train]
    parts = [{s.rel for s in part} for part in (first.train, first.validation, first.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == {s.rel for s in dataset.samples}
    assert all(s.label == 0 for s in first.train)
    assert first.summary()["validation"]["defect"] + first.summary()["test"]["defect"] == 6


def test_check_cli_writes_splits_in_the_layout(sample: Path, tmp_path: Path) -> None:
    assert main(["check", "--data", str(sample / "tissue"), "--out", str(tmp_path)]) == 0
    for split in ("train", "validation", "test"):
        load_dataset(tmp_path / split, min_good=1)
    masks = list((tmp_path / "test" / "masks").rglob("*.png"))
    assert masks and all(
        (tmp_path / "test" / "defect" / m.relative_to(tmp_path / "test" / "masks")).is_file()
        for m in masks
    )


def test_check_cli_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not found" in err[0]


def test_fingerprint_changes_with_content(tmp_path: Path, sample: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(sample / "brick", root)
    before = load_dataset(root).fingerprint()
    pixels = np.asarray(Image.open(root / "good" / "0000.png")).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(root / "good" / "0000.png")
    assert load_dataset(root).fingerprint() != before

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


def _grouped_copy(sample: Path, tmp_path: Path) -> Path:
    """The brick sample with parts of 1-4 images, some mixing good and defect images."""
    root = tmp_path / "grouped"
    shutil.copytree(sample / "brick", root)
    dataset = load_dataset(root)
    images = [s.rel for s in dataset.samples]
    rows, sizes, start = [], [3, 1, 4, 2], 0
    # interleave good and defect images so several parts hold both
    interleaved = [x for pair in zip(images[::2], images[1::2], strict=False) for x in pair]
    for part, size in enumerate(sizes * 10):
        chunk = interleaved[start : start + size]
        if not chunk:
            break
        rows += [f"{rel},part-{part}" for rel in chunk[:-1]]  # the last of each part is ungrouped
        start += size
    (root / "groups.csv").write_text("path,group\n" + "\n".join(rows) + "\n")
    return root


def _split_of(splits: object) -> dict[str, str]:
    return {
        s.rel: name
        for name in ("train", "validation", "test")
        for s in getattr(splits, name)  # type: ignore[attr-defined]
    }


def test_groups_never_straddle_splits_whatever_the_seed(sample: Path, tmp_path: Path) -> None:
    dataset = load_dataset(_grouped_copy(sample, tmp_path))
    assert dataset.grouping == "groups.csv"
    assert any(s.group for s in dataset.good) and any(s.group for s in dataset.defects)
    mixed = {s.group for s in dataset.good} & {s.group for s in dataset.defects} - {None}
    assert mixed  # the property is tested on parts holding good and defect images
    for seed in range(40):
        splits = split_dataset(dataset, seed=seed)
        where = _split_of(splits)
        assert set(where) == {s.rel for s in dataset.samples}
        by_group: dict[str, set[str]] = {}
        for s in dataset.samples:
            by_group.setdefault(s.group_key, set()).add(where[s.rel])
        assert all(len(names) == 1 for names in by_group.values()), seed
        assert all(s.label == 0 for s in splits.train) and splits.train
        assert split_dataset(dataset, seed=seed) == splits
        summary = splits.summary()
        assert sum(p["groups"] for p in summary.values()) == len(by_group)
        assert summary["validation"]["defect"] and summary["test"]["defect"]


def test_group_pattern_groups_by_file_name(tmp_path: Path) -> None:
    root = tmp_path / "bursts"
    for part in range(8):
        for shot in range(3):
            _write(root / "good" / f"part-{part:02d}_{shot}.png", value=part * 3 + shot)
    _write(root / "good" / "loose.png")
    for part in (20, 21):
        for shot in range(2):
            _write(root / "defect" / "scratch" / f"part-{part}_{shot}.png")
    dataset = load_dataset(root, group_pattern=r"^(part-\d+)_")
    assert dataset.grouping == r"pattern ^(part-\d+)_"
    assert next(s for s in dataset.good if s.rel == "good/loose.png").group is None
    for seed in range(10):
        splits = split_dataset(dataset, seed=seed)
        where = _split_of(splits)
        for part in range(8):
            assert len({where[f"good/part-{part:02d}_{shot}.png"] for shot in range(3)}) == 1
        assert {where["defect/scratch/part-20_0.png"], where["defect/scratch/part-21_0.png"]} == {
            "validation",
            "test",
        }
        assert splits.summary()["test"]["groups"] >= 2
    assert main(["check", "--data", str(root), "--group-pattern", r"^(part-\d+)_"]) == 0


def test_group_pattern_needs_one_capture_group(tmp_path: Path) -> None:
    root = _minimal(tmp_path)
    with pytest.raises(DatasetError, match="exactly one capture group"):
        load_dataset(root, group_pattern=r"^part-\d+_")
    with pytest.raises(DatasetError, match="not a regular expression"):
        load_dataset(root, group_pattern="(")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file,group\ngood/g00.png,a\n", r"groups\.csv:1: missing column\(s\) path"),
        (
            "path,group\ngood/g00.png,a\ngood/nope.png,b\n",
            r"groups\.csv:3: unknown image good/nope",
        ),
        (
            "path,group\ngood/g00.png,a\ngood/g01.png,b\ngood/g00.png,c\n",
            r"groups\.csv:4: duplicate path good/g00\.png \(first on line 2\)",
        ),
        ("path,group\ngood/g00.png,\n", r"groups\.csv:2: empty group for good/g00\.png"),
    ],
)
def test_bad_groups_file_names_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    root = _minimal(tmp_path)
    (root / "groups.csv").write_text(text)
    with pytest.raises(DatasetError, match=expected):
        load_dataset(root)


def test_every_bad_groups_line_is_reported_and_the_cli_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _minimal(tmp_path)
    (root / "groups.csv").write_text("path,group\nx.png,a\ngood/g01.png,b\ngood/g01.png,b\n")
    assert main(["check", "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "2 problem(s)" in err[0]
    assert "groups.csv:2: unknown image x.png" in err[0] and "groups.csv:4: duplicate" in err[0]


def test_groups_file_and_pattern_together_are_refused(tmp_path: Path) -> None:
    root = _minimal(tmp_path)
    (root / "groups.csv").write_text("path,group\ngood/g00.png,a\n")
    with pytest.raises(DatasetError, match="use one"):
        load_dataset(root, group_pattern="^(g)")


def test_groups_larger_than_training_share_are_an_error(tmp_path: Path) -> None:
    root = _minimal(tmp_path)
    rows = [f"good/g{i:02d}.png,{'a' if i < 6 else 'b'}" for i in range(12)]
    (root / "groups.csv").write_text("path,group\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match="no group of good images is left for training"):
        split_dataset(load_dataset(root))


def test_check_cli_writes_each_split_s_groups(sample: Path, tmp_path: Path) -> None:
    root = _grouped_copy(sample, tmp_path)
    out = tmp_path / "out"
    assert main(["check", "--data", str(root), "--out", str(out), "--seed", "3"]) == 0
    seen: dict[str, str] = {}
    for split in ("train", "validation", "test"):
        part = load_dataset(out / split, min_good=1)
        for s in part.samples:
            if s.group is not None:
                assert seen.setdefault(s.group, split) == split
    original = load_dataset(root)
    assert len(seen) == len({s.group for s in original.samples} - {None})

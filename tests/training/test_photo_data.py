"""The photo benchmark data: deterministic, in the dataset layout, with real, masked defects."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from training.dataset import load_dataset, split_dataset
from training.photo_data import (
    BURST,
    LOW_CONTRAST,
    LOW_CONTRAST_LEVELS,
    SOURCES,
    Scene,
    Size,
    Source,
    example,
    generate_source,
    load_scene,
    main,
)

TINY = Size(good=12, per_defect_type=2)


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every source at a tiny size, seed 1."""
    root = tmp_path_factory.mktemp("photos")
    for source in SOURCES:
        generate_source(source, root / source.name, TINY, seed=1)
    return root


@pytest.fixture(scope="module")
def scenes() -> dict[str, Scene]:
    """Each source's photographs and structure, loaded once."""
    return {s.name: load_scene(s) for s in SOURCES}


@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_same_seed_same_bytes_other_seed_differs(source, photos: Path, tmp_path: Path) -> None:  # noqa: ANN001 - a Source
    generate_source(source, tmp_path / "again", TINY, seed=1)
    generate_source(source, tmp_path / "other", TINY, seed=2)
    assert _digest(tmp_path / "again") == _digest(photos / source.name)
    assert _digest(tmp_path / "other") != _digest(photos / source.name)


@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_layout_loads_with_a_mask_per_defect_image(source: Source, photos: Path) -> None:
    dataset = load_dataset(photos / source.name)
    assert len(dataset.good) == TINY.good
    assert dataset.defect_types == sorted(source.defect_types)
    assert len(dataset.defects) == TINY.per_defect_type * len(source.defect_types)
    mode = "RGB" if source.color else "L"
    for sample in dataset.samples:
        with Image.open(sample.path) as image:
            assert (image.mode, image.size) == (mode, (256, 256)), sample.rel
    for sample in dataset.defects:
        assert sample.mask is not None, sample.rel
        assert sample.mask.name == sample.path.name
        mask = np.asarray(Image.open(sample.mask)) > 0
        assert mask.shape == (256, 256)
        assert 0 < mask.mean() < 0.1, (sample.rel, mask.mean())


@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_bursts_are_groups_that_never_straddle_splits(source: Source, photos: Path) -> None:
    groups_file = photos / source.name / "groups.csv"
    if not source.bursts:
        assert not groups_file.exists()
        return
    with groups_file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    dataset = load_dataset(photos / source.name)  # raises on a bad groups file
    assert dataset.grouping == "groups.csv"
    assert {r["path"] for r in rows} == {s.rel for s in dataset.samples}
    good_groups = [s.group for s in dataset.good]
    assert max(good_groups.count(g) for g in good_groups) == BURST
    for group in {s.group for s in dataset.defects}:  # a defective part is defective in each frame
        members = [s for s in dataset.samples if s.group == group]
        assert {s.label for s in members} == {1} and len({s.defect_type for s in members}) == 1
    splits = split_dataset(dataset, 0, 0.2, 0.2)
    homes = [{s.group for s in part} for part in (splits.train, splits.validation, splits.test)]
    assert not (homes[0] & homes[1] or homes[0] & homes[2] or homes[1] & homes[2])


@pytest.mark.parametrize(
    ("source", "kind"),
    [(s.name, kind) for s in SOURCES for kind in s.defect_types],
)
def test_defect_changes_only_its_masked_pixels(
    source: str, kind: str, scenes: dict[str, Scene]
) -> None:
    for seed in range(2):
        frame = example(source, kind, seed=seed, scene=scenes[source])
        assert frame.mask is not None and frame.mask.any()
        change = np.abs(frame.image.astype(np.float32) - frame.clean.astype(np.float32))
        assert change[frame.mask].mean() > 2.0, (source, kind, seed)
        # beyond the mask's feather and JPEG's 16-px blocks the picture is the defect-free one
        far = ~ndimage.binary_dilation(frame.mask, iterations=24)
        assert change[far].mean() < 0.05, (source, kind, seed)


@pytest.mark.parametrize(
    ("source", "kind"),
    [(s.name, kind) for s in SOURCES for kind in s.defect_types if kind in LOW_CONTRAST],
)
def test_faint_defects_change_less_than_the_part_varies(
    source: str, kind: str, scenes: dict[str, Scene]
) -> None:
    scene = scenes[source]
    goods = [example(source, None, seed=s, scene=scene).image.astype(np.float32) for s in range(3)]
    between_parts = min(np.abs(goods[0] - other).mean() for other in goods[1:])
    for seed in range(3):
        frame = example(source, kind, seed=seed, scene=scene)
        change = np.abs(frame.image.astype(np.float32) - frame.clean.astype(np.float32))
        assert change[frame.mask].mean() < LOW_CONTRAST_LEVELS, (source, kind, seed)
        assert change[frame.mask].mean() < between_parts, (source, kind, seed)


def test_good_pictures_of_one_part_vary(photos: Path) -> None:
    # not bursts: separate parts (coins' first three good images are one burst)
    paths = sorted((photos / "print" / "good").glob("*.png"))[:4]
    images = [np.asarray(Image.open(p), dtype=np.float32) for p in paths]
    assert all(np.abs(images[0] - other).mean() > 10 for other in images[1:])


def test_unknown_source_or_defect_type_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path), "--sources", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown source 'nope'; known: ['coins'")
    with pytest.raises(ValueError, match="coins: unknown defect type 'scratch'"):
        example("coins", "scratch")

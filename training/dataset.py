"""Dataset layout, validation and deterministic splits.

Layout (what anomaly-detection tools use)::

    <data>/good/*.png              defect-free images (required)
    <data>/defect/*.png            defect images of unnamed type (optional)
    <data>/defect/<type>/*.png     defect images by type (optional)
    <data>/masks/...               optional masks mirroring defect/ (masks/<type>/<file>)

Any image size and colour mode is accepted (PNG, JPEG, BMP, TIFF). Non-image files beside the
folders (README, .DS_Store) are ignored; unknown folders are an error.

Run ``python -m training.dataset check --data <dir>`` to validate a folder, or with ``--out`` to
write its train/validation/test splits as three folders in the same layout (the SageMaker
pipeline's data-check step).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD = "good"
DEFECT = "defect"
MASKS = "masks"
UNTYPED = "defect"
MIN_GOOD = 10
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its path, label (0 good, 1 defect) and defect type."""

    path: Path
    rel: str
    label: int
    defect_type: str | None = None
    mask: Path | None = None


@dataclass(frozen=True)
class Dataset:
    """A validated dataset folder."""

    root: Path
    good: tuple[Sample, ...]
    defects: tuple[Sample, ...]

    @property
    def samples(self) -> tuple[Sample, ...]:
        """Every image, good first, each group in path order."""
        return self.good + self.defects

    @property
    def defect_types(self) -> list[str]:
        """Sorted defect type names present."""
        return sorted({s.defect_type for s in self.defects if s.defect_type})

    def fingerprint(self) -> str:
        """sha256 over every image's relative path and content: identifies the training data."""
        digest = hashlib.sha256()
        for sample in sorted(self.samples, key=lambda s: s.rel):
            digest.update(sample.rel.encode())
            digest.update(b"\0")
            digest.update(hashlib.sha256(sample.path.read_bytes()).digest())
        return digest.hexdigest()


@dataclass(frozen=True)
class Splits:
    """Deterministic train/validation/test splits; train holds good images only."""

    train: tuple[Sample, ...]
    validation: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts of good and defect images per split."""
        return {
            name: {
                "good": sum(1 for s in part if s.label == 0),
                "defect": sum(1 for s in part if s.label == 1),
            }
            for name, part in (
                ("train", self.train),
                ("validation", self.validation),
                ("test", self.test),
            )
        }


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_image_name(p))


def _check_readable(paths: Sequence[Path]) -> list[str]:
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                image.load()
        except Exception as exc:  # PIL raises many types for broken files
            bad.append(f"{path} ({type(exc).__name__}: {exc})")
    return bad


def load_dataset(root: Path | str, min_good: int = MIN_GOOD, check_images: bool = True) -> Dataset:
    """Scan and validate a dataset folder; raise :class:`DatasetError` naming every problem."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    unknown = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in (GOOD, DEFECT, MASKS)
    )
    if unknown:
        raise DatasetError(
            f"{root}: unknown folder(s) {', '.join(unknown)} "
            f"(expected {GOOD}/, {DEFECT}/ with optional {DEFECT}/<type>/, and optional {MASKS}/)"
        )
    good_dir = root / GOOD
    if not good_dir.is_dir():
        raise DatasetError(f"{root}: missing {GOOD}/ folder of defect-free images")
    nested = sorted(p.name for p in good_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if nested:
        raise DatasetError(f"{good_dir}: sub-folders are not allowed here ({', '.join(nested)})")
    good = tuple(
        Sample(path=p, rel=p.relative_to(root).as_posix(), label=0) for p in _images_in(good_dir)
    )
    defects: list[Sample] = []
    defect_dir = root / DEFECT
    masks_dir = root / MASKS
    if defect_dir.is_dir():
        folders: list[tuple[Path, str]] = [(defect_dir, UNTYPED)]
        for sub in sorted(defect_dir.iterdir()):
            if sub.is_dir() and not sub.name.startswith("."):
                deeper = [
                    p.name for p in sub.iterdir() if p.is_dir() and not p.name.startswith(".")
                ]
                if deeper:
                    raise DatasetError(
                        f"{sub}: only one level of defect/<type>/ is allowed (found {deeper[0]}/)"
                    )
                folders.append((sub, sub.name))
        for folder, kind in folders:
            for path in _images_in(folder):
                rel_in_defect = path.relative_to(defect_dir)
                mask = masks_dir / rel_in_defect
                defects.append(
                    Sample(
                        path=path,
                        rel=path.relative_to(root).as_posix(),
                        label=1,
                        defect_type=kind,
                        mask=mask if mask.is_file() else None,
                    )
                )
    if len(good) < min_good:
        raise DatasetError(
            f"{good_dir}: too few good images ({len(good)}; at least {min_good} needed "
            "to train and calibrate thresholds)"
        )
    if check_images:
        bad = _check_readable([s.path for s in good] + [s.path for s in defects])
        if bad:
            listed = "; ".join(bad[:20]) + (f"; and {len(bad) - 20} more" if len(bad) > 20 else "")
            raise DatasetError(f"{root}: {len(bad)} unreadable image(s): {listed}")
    return Dataset(root=root, good=good, defects=tuple(defects))


def split_dataset(
    dataset: Dataset,
    seed: int = 0,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> Splits:
    """Split deterministically by ``seed``: good images into train/validation/test, defect
    images (never trained on) alternately into validation and test, type by type."""
    if not 0 < validation_fraction < 1 or not 0 <= test_fraction < 1:
        raise DatasetError("validation_fraction must be in (0, 1) and test_fraction in [0, 1)")
    if validation_fraction + test_fraction >= 0.9:
        raise DatasetError("validation_fraction + test_fraction must leave >= 10 % for training")
    rng = np.random.default_rng(seed)
    good = [dataset.good[i] for i in rng.permutation(len(dataset.good))]
    n = len(good)
    n_val = max(1, round(n * validation_fraction))
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise DatasetError(f"{dataset.root}: too few good images ({n}) to split")
    validation = good[:n_val]
    test = good[n_val : n_val + n_test]
    train = good[n_val + n_test :]
    by_type: dict[str, list[Sample]] = {}
    for sample in dataset.defects:
        by_type.setdefault(sample.defect_type or UNTYPED, []).append(sample)
    turn = 0  # alternate across types too, so single-image types still reach both splits
    for kind in sorted(by_type):
        for i in rng.permutation(len(by_type[kind])):
            target = validation if test_fraction == 0 or turn % 2 == 0 else test
            target.append(by_type[kind][i])
            turn += 1
    order = {s.rel: i for i, s in enumerate(dataset.samples)}

    def ordered(part: list[Sample]) -> tuple[Sample, ...]:
        return tuple(sorted(part, key=lambda s: order[s.rel]))

    return Splits(train=ordered(train), validation=ordered(validation), test=ordered(test))


def write_split(samples: Sequence[Sample], root: Path, out: Path) -> None:
    """Copy ``samples`` (and their masks) to ``out`` in the dataset layout."""
    for sample in samples:
        target = out / sample.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sample.path, target)
        if sample.mask is not None:
            mask_target = out / MASKS / sample.mask.relative_to(root / MASKS)
            mask_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(sample.mask, mask_target)
    (out / GOOD).mkdir(parents=True, exist_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.dataset check --data <dir> [--out <dir>]``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a dataset folder (and optionally split it)")
    check.add_argument("--data", required=True, type=Path, help="dataset folder")
    check.add_argument("--out", type=Path, help="write train/, validation/, test/ folders here")
    check.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    check.add_argument("--min-good", type=int, default=MIN_GOOD, help="minimum good images")
    check.add_argument("--validation-fraction", type=float, default=0.2)
    check.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(args.data, min_good=args.min_good)
        splits = split_dataset(dataset, args.seed, args.validation_fraction, args.test_fraction)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {
        "data": str(dataset.root),
        "good": len(dataset.good),
        "defect": len(dataset.defects),
        "defect_types": dataset.defect_types,
        "fingerprint": dataset.fingerprint(),
        "splits": splits.summary(),
        "seed": args.seed,
    }
    if args.out is not None:
        for name in SPLITS:
            write_split(getattr(splits, name), dataset.root, args.out / name)
        (args.out / "data_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

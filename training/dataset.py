r"""Dataset layout, validation and deterministic splits.

Layout (what anomaly-detection tools use)::

    <data>/good/*.png              defect-free images (required)
    <data>/defect/*.png            defect images of unnamed type (optional)
    <data>/defect/<type>/*.png     defect images by type (optional)
    <data>/masks/...               optional masks mirroring defect/ (masks/<type>/<file>)
    <data>/groups.csv              optional ``path,group`` rows: images of one part or burst

Any image size and colour mode is accepted (PNG, JPEG, BMP, TIFF). Non-image files beside the
folders (README, .DS_Store) are ignored; unknown folders are an error.

**Groups.** Images of one group (one part photographed twice, one burst of frames) never land in
two splits. Groups come from ``groups.csv`` (read whenever present; ``path`` relative to the
dataset folder) or from ``--group-pattern``, a regular expression with one capture group applied
to each file name (``'^(part-\d+)_'``). An image without a group is a group of its own.

Run ``python -m training.dataset check --data <dir>`` to validate a folder, or with ``--out`` to
write its train/validation/test splits as three folders in the same layout (the SageMaker
pipeline's data-check step).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from training.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD = "good"
DEFECT = "defect"
MASKS = "masks"
GROUPS_FILE = "groups.csv"
UNTYPED = "defect"
MIN_GOOD = 10
SPLITS = ("train", "validation", "test")
# with at least this many defect images, a share of them trains the supervised candidate
MIN_SUPERVISED_DEFECTS = 20
SUPERVISED_DEFECT_TRAIN_FRACTION = 0.5


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its path, label (0 good, 1 defect), defect type, mask and group."""

    path: Path
    rel: str
    label: int
    defect_type: str | None = None
    mask: Path | None = None
    group: str | None = None

    @property
    def group_key(self) -> str:
        """The split unit: its named group, or the image itself when it has none."""
        return f"group:{self.group}" if self.group is not None else f"image:{self.rel}"


@dataclass(frozen=True)
class Dataset:
    """A validated dataset folder."""

    root: Path
    good: tuple[Sample, ...]
    defects: tuple[Sample, ...]
    grouping: str = "none"
    """Where the groups came from: ``none``, ``groups.csv`` or ``pattern <regex>``."""

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

    def groups_digest(self) -> str | None:
        """sha256 over every grouped image's path and group (None without groups)."""
        grouped = sorted((s.rel, s.group) for s in self.samples if s.group is not None)
        if not grouped:
            return None
        return hashlib.sha256(json.dumps(grouped).encode()).hexdigest()


@dataclass(frozen=True)
class Splits:
    """Deterministic train/validation/test splits; train holds defect images only when a share
    of them was given to it (``defect_train_fraction``, for the supervised candidate)."""

    train: tuple[Sample, ...]
    validation: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts of good and defect images, and of groups, per split."""
        return {
            name: {
                "good": sum(1 for s in part if s.label == 0),
                "defect": sum(1 for s in part if s.label == 1),
                "groups": len({s.group_key for s in part}),
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


def load_dataset(
    root: Path | str,
    min_good: int = MIN_GOOD,
    check_images: bool = True,
    group_pattern: str | None = None,
) -> Dataset:
    """Scan and validate a dataset folder and its groups (:func:`with_groups`); raise
    :class:`DatasetError` naming every problem."""
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
    return with_groups(Dataset(root=root, good=good, defects=tuple(defects)), group_pattern)


def _listed(problems: Sequence[str]) -> str:
    return "; ".join(problems[:20]) + (
        f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    )


def read_groups_file(path: Path, known: Sequence[str]) -> dict[str, str]:
    """``path,group`` rows of a groups file as {image path: group}; raise naming every bad line.

    Args:
        path: the ``groups.csv`` file.
        known: the dataset's image paths (relative, POSIX), which ``path`` must name.
    """
    known_set = set(known)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in ("path", "group") if name not in header]
        if missing:
            raise DatasetError(
                f"{path}:1: missing column(s) {', '.join(missing)} "
                f"(the header must name path,group; found {','.join(header) or 'nothing'})"
            )
        reader.fieldnames = header
        groups: dict[str, str] = {}
        first_line: dict[str, int] = {}
        problems: list[str] = []
        for row in reader:
            line = reader.line_num
            rel = (row.get("path") or "").strip().replace("\\", "/").removeprefix("./")
            group = (row.get("group") or "").strip()
            if not rel and not group:
                continue  # a blank line
            if rel not in known_set:
                problems.append(f"{path}:{line}: unknown image {rel or '(empty path)'}")
            elif not group:
                problems.append(f"{path}:{line}: empty group for {rel}")
            elif rel in groups:
                problems.append(
                    f"{path}:{line}: duplicate path {rel} (first on line {first_line[rel]})"
                )
            else:
                groups[rel] = group
                first_line[rel] = line
    if problems:
        raise DatasetError(f"{path}: {len(problems)} problem(s): {_listed(problems)}")
    return groups


def _compile_group_pattern(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"group pattern {pattern!r}: not a regular expression ({exc})") from exc
    if compiled.groups != 1:
        raise DatasetError(
            f"group pattern {pattern!r}: needs exactly one capture group naming the group "
            f"(found {compiled.groups})"
        )
    return compiled


def with_groups(dataset: Dataset, group_pattern: str | None = None) -> Dataset:
    """``dataset`` with every image's group: from ``groups.csv`` when the folder has one, else
    from ``group_pattern`` (one capture group, searched in the file name), else none."""
    groups_file = dataset.root / GROUPS_FILE
    if groups_file.is_file() and group_pattern is not None:
        raise DatasetError(
            f"{groups_file}: the folder has a groups file and a group pattern was given; use one"
        )
    if groups_file.is_file():
        groups = read_groups_file(groups_file, [s.rel for s in dataset.samples])
        grouping = GROUPS_FILE
    elif group_pattern is not None:
        compiled = _compile_group_pattern(group_pattern)
        groups = {}
        for sample in dataset.samples:
            found = compiled.search(sample.path.name)
            if found and found.group(1):
                groups[sample.rel] = found.group(1)
        grouping = f"pattern {group_pattern}"
    else:
        return dataset

    def grouped(samples: tuple[Sample, ...]) -> tuple[Sample, ...]:
        return tuple(replace(s, group=groups.get(s.rel)) for s in samples)

    return replace(
        dataset, good=grouped(dataset.good), defects=grouped(dataset.defects), grouping=grouping
    )


def _units(samples: Sequence[Sample]) -> list[tuple[Sample, ...]]:
    """Samples gathered by group, each group in sample order, groups in first-member order."""
    units: dict[str, list[Sample]] = {}
    for sample in samples:
        units.setdefault(sample.group_key, []).append(sample)
    return [tuple(unit) for unit in units.values()]


def default_defect_train_fraction(dataset: Dataset) -> float:
    """The share of defect images that trains: half with enough of them for the supervised
    candidate (:data:`MIN_SUPERVISED_DEFECTS`), none otherwise."""
    return (
        SUPERVISED_DEFECT_TRAIN_FRACTION if len(dataset.defects) >= MIN_SUPERVISED_DEFECTS else 0.0
    )


def split_dataset(
    dataset: Dataset,
    seed: int = 0,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    defect_train_fraction: float = 0.0,
) -> Splits:
    """Split deterministically by ``seed``, a group never in two splits.

    Groups of good images only fill validation, then test, up to their fractions of the good
    images, then train. Groups with a defect image go, type by type (a group counts as its most
    frequent type), to validation or test — each to the split with fewer images of that type so
    far, alternating on ties — and with ``defect_train_fraction`` above 0 also to train: a type's
    first group goes to validation, its second to test, then each to the split furthest below
    its share (train ``defect_train_fraction``, validation and test half the rest each). Without
    groups and with no defect share for train this is the per-image split of earlier versions,
    image for image.
    """
    if not 0 < validation_fraction < 1 or not 0 <= test_fraction < 1:
        raise DatasetError("validation_fraction must be in (0, 1) and test_fraction in [0, 1)")
    if not 0 <= defect_train_fraction < 1:
        raise DatasetError("defect_train_fraction must be in [0, 1)")
    if validation_fraction + test_fraction >= 0.9:
        raise DatasetError("validation_fraction + test_fraction must leave >= 10 % for training")
    rng = np.random.default_rng(seed)
    units = _units(dataset.samples)
    good_units = [u for u in units if all(s.label == 0 for s in u)]
    defect_units = [u for u in units if any(s.label == 1 for s in u)]
    n = len(dataset.good)
    n_val = max(1, round(n * validation_fraction))
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise DatasetError(f"{dataset.root}: too few good images ({n}) to split")
    good_order = rng.permutation(len(good_units))  # drawn first, as before groups existed
    validation: list[Sample] = []
    test: list[Sample] = []
    train: list[Sample] = []
    by_type: dict[str, list[tuple[Sample, ...]]] = {}
    for unit in defect_units:
        kinds = [s.defect_type or UNTYPED for s in unit if s.label == 1]
        main = min(set(kinds), key=lambda k: (-kinds.count(k), k))
        by_type.setdefault(main, []).append(unit)
    turn = 0  # alternate across types too, so single-image types still reach both splits
    for kind in sorted(by_type):
        for i in rng.permutation(len(by_type[kind])):
            unit = by_type[kind][i]
            if defect_train_fraction > 0:
                parts = {"validation": validation, "test": test, "train": train}
                _place_defect_unit(unit, kind, defect_train_fraction, test_fraction > 0, parts)
                continue
            if test_fraction == 0:
                target = validation
            else:
                in_val = sum(1 for s in validation if (s.defect_type or UNTYPED) == kind)
                in_test = sum(1 for s in test if (s.defect_type or UNTYPED) == kind)
                if in_val != in_test:
                    target = validation if in_val < in_test else test
                else:
                    target = validation if turn % 2 == 0 else test
            target.extend(unit)
            turn += 1
    good_in = {"validation": sum(s.label == 0 for s in validation), "test": 0}
    good_in["test"] = sum(s.label == 0 for s in test)
    for i in good_order:
        unit = good_units[i]
        if good_in["validation"] < n_val:
            validation.extend(unit)
            good_in["validation"] += len(unit)
        elif good_in["test"] < n_test:
            test.extend(unit)
            good_in["test"] += len(unit)
        else:
            train.extend(unit)
    if not any(s.label == 0 for s in train):
        raise DatasetError(
            f"{dataset.root}: no group of good images is left for training "
            f"({n} good images in {len(good_units)} good-only groups; groups from "
            f"{dataset.grouping}): split larger groups or add good images"
        )
    order = {s.rel: i for i, s in enumerate(dataset.samples)}

    def ordered(part: list[Sample]) -> tuple[Sample, ...]:
        return tuple(sorted(part, key=lambda s: order[s.rel]))

    return Splits(train=ordered(train), validation=ordered(validation), test=ordered(test))


def _place_defect_unit(
    unit: tuple[Sample, ...],
    kind: str,
    train_share: float,
    has_test: bool,
    parts: dict[str, list[Sample]],
) -> None:
    """Add a defect group to validation, test or train (see :func:`split_dataset`)."""
    shares = {"validation": (1 - train_share) / (2 if has_test else 1), "train": train_share}
    if has_test:
        shares["test"] = (1 - train_share) / 2
    counts = {
        name: sum(1 for s in parts[name] if s.label == 1 and (s.defect_type or UNTYPED) == kind)
        for name in shares
    }
    firsts = [name for name in ("validation", "test") if name in shares and counts[name] == 0]
    if firsts:
        parts[firsts[0]].extend(unit)
        return
    total = sum(counts.values()) + sum(1 for s in unit if s.label == 1)
    name = max(shares, key=lambda n: (shares[n] * total - counts[n], n == "validation"))
    parts[name].extend(unit)


def write_split(samples: Sequence[Sample], root: Path, out: Path) -> None:
    """Copy ``samples`` (and their masks) to ``out`` in the dataset layout, with a groups file
    for those that have a group (evaluation resamples by group)."""
    out.mkdir(parents=True, exist_ok=True)
    grouped = [s for s in samples if s.group is not None]
    if grouped:
        with (out / GROUPS_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "group"])
            writer.writerows([s.rel, s.group] for s in grouped)
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
    check.add_argument(
        "--defect-train-fraction",
        type=float,
        default=None,
        help=f"share of defect images for training the supervised candidate (default "
        f"{SUPERVISED_DEFECT_TRAIN_FRACTION:g} with at least {MIN_SUPERVISED_DEFECTS} defect "
        "images, else 0)",
    )
    check.add_argument(
        "--group-pattern",
        help=f"regex with one capture group naming an image's group in its file name "
        f"(e.g. '^(part-\\d+)_'); {GROUPS_FILE} in the folder is used when present",
    )
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(args.data, min_good=args.min_good, group_pattern=args.group_pattern)
        defect_train = (
            default_defect_train_fraction(dataset)
            if args.defect_train_fraction is None
            else args.defect_train_fraction
        )
        splits = split_dataset(
            dataset, args.seed, args.validation_fraction, args.test_fraction, defect_train
        )
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {
        "data": str(dataset.root),
        "good": len(dataset.good),
        "defect": len(dataset.defects),
        "defect_types": dataset.defect_types,
        "fingerprint": dataset.fingerprint(),
        "groups": dataset.grouping,
        "splits": splits.summary(),
        "seed": args.seed,
        "defect_train_fraction": defect_train,
    }
    if args.out is not None:
        for name in SPLITS:
            write_split(getattr(splits, name), dataset.root, args.out / name)
        (args.out / "data_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

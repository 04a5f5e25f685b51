"""Train a model package from a dataset folder (SageMaker script mode, or plain python).

    python -m training.train --data <dataset> --model-dir <out>

On SageMaker the defaults come from ``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION`` and
``SM_MODEL_DIR``; hyperparameters arrive as the arguments below. Without a validation channel the
dataset is split by ``--seed`` (train: good images only; validation: thresholds; test: held out
for ``training.evaluate``), a group of images (``groups.csv`` in the folder, or
``--group-pattern``; ``training.dataset``) never in two splits. With one, all good images of ``--data`` train the model and the
validation folder calibrates the thresholds. Test images never influence the package.

Thresholds are calibrated to the plant's target rates on the validation good images
(``--target-false-reject-rate``, ``--target-manual-rate``; the plant file's ``calibration``
section, docs/plant-file.md). The rule and the fallbacks for small validation sets are in
``training.calibration``; the manifest records the targets and the figures in
``metrics.calibration``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from inspector.model_package import (
    FrameSpec,
    Golden,
    InputSpec,
    Manifest,
    ModelPackageError,
    OutputSpec,
    sha256_file,
    write_manifest,
)
from training import model as patchcore
from training.calibration import (
    DEFAULT_TARGET_FALSE_REJECT_RATE,
    DEFAULT_TARGET_MANUAL_RATE,
    Targets,
    calibrate,
)
from training.dataset import Sample, load_dataset, split_dataset
from training.errors import DatasetError, TrainingError
from training.images import ImageTensors, score_images
from training.scoring import describe_frames, load_tensor, onnx_session, score_tensors

GOLDEN_FILE = "golden.png"
TRAINING_FILE = "training.json"


def input_spec(size: int = patchcore.INPUT_SIZE, bit_depth: int | None = None) -> InputSpec:
    """The package's preprocessing: RGB (grayscale is expanded), resized, (x - 127) / 128."""
    return InputSpec(
        name=patchcore.INPUT_NAME,
        height=size,
        width=size,
        color="RGB",
        resize="bilinear",
        mean=patchcore.MEAN,
        std=patchcore.STD,
        bit_depth=bit_depth,
    )


def _log(message: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _package_name(data: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", data.resolve().name.lower()).strip("-._")
    return (name or "model")[:64]


def _tensors(
    samples: Sequence[Sample], spec: InputSpec, frames: FrameSpec | None = None
) -> ImageTensors:
    """The samples' input tensors, each decoded when read: a dataset is never held whole."""
    return ImageTensors([s.path for s in samples], spec, frames)


def _auroc(good: np.ndarray, defect: np.ndarray) -> float | None:
    if not len(good) or not len(defect):
        return None
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(good)), np.ones(len(defect))]
    return float(roc_auc_score(labels, np.r_[good, defect]))


def train(
    data: Path,
    model_dir: Path,
    validation: Path | None = None,
    *,
    seed: int = 0,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    taps: Sequence[int] = patchcore.DEFAULT_TAPS,
    coreset_ratio: float = patchcore.DEFAULT_CORESET_RATIO,
    max_bank: int = patchcore.DEFAULT_MAX_BANK,
    dims: int | None = patchcore.DEFAULT_DIMS,
    top_k: int = patchcore.DEFAULT_TOP_K,
    norm: str = patchcore.DEFAULT_NORM,
    tap_gain: Sequence[float] | None = None,
    balance: bool = True,
    smoothing: float = 0.5,
    name: str | None = None,
    version: str = "1.0.0",
    pipeline_run: str | None = None,
    threads: int | None = None,
    targets: Targets | None = None,
    group_pattern: str | None = None,
) -> Manifest:
    """Train, export, calibrate and write a model package to ``model_dir``; return its manifest."""
    import torch

    targets = targets or Targets()
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    dataset = load_dataset(data, group_pattern=group_pattern)
    if validation is not None:
        val_set = load_dataset(validation, min_good=1)
        train_samples = dataset.good
        val_samples = val_set.samples
        fingerprint = f"{dataset.fingerprint()}+{val_set.fingerprint()}"
        split_info: dict[str, object] = {"validation": str(validation)}
    else:
        splits = split_dataset(dataset, seed, validation_fraction, test_fraction)
        train_samples, val_samples = splits.train, splits.validation
        fingerprint = dataset.fingerprint()
        split_info = {
            "seed": seed,
            "validation_fraction": validation_fraction,
            "test_fraction": test_fraction,
            "counts": splits.summary(),
            "groups": dataset.grouping,
            "group_pattern": group_pattern,
            "groups_digest": dataset.groups_digest(),
        }
    val_good = [s for s in val_samples if s.label == 0]
    val_defect = [s for s in val_samples if s.label == 1]
    if not val_good:
        raise DatasetError(f"{validation or data}: the validation split has no good image")
    _log(
        f"data {data}: {len(train_samples)} train (good), {len(val_good)} validation good, "
        f"{len(val_defect)} validation defect; fingerprint {fingerprint[:12]}"
    )
    every = [*dataset.samples, *(val_samples if validation is not None else [])]
    bit_depth, frames = describe_frames([s.path for s in every])
    spec = input_spec(bit_depth=bit_depth)
    _log(
        f"frames: {bit_depth or 8}-bit, {frames.channels} channel(s), "
        f"{frames.min_size[0]}x{frames.min_size[1]}..{frames.max_size[0]}x{frames.max_size[1]} px"
    )
    model = patchcore.fit(
        _tensors(train_samples, spec, frames),
        taps=taps,
        coreset_ratio=coreset_ratio,
        max_bank=max_bank,
        seed=seed,
        balance=balance,
        sigma=smoothing,
        dims=dims,
        top_k=top_k,
        norm=norm,
        tap_gain=tap_gain,
        log=_log,
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "model.onnx"
    patchcore.export_onnx(model, onnx_path, spec.height, spec.width)
    _log(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)")

    session = onnx_session(onnx_path, threads=threads or 1)
    good_scores = score_images(
        session,
        spec.name,
        _tensors(val_good, spec, frames),
        progress=patchcore.Progress(_log, "validation: good images"),
    )
    defect_scores = score_images(
        session,
        spec.name,
        _tensors(val_defect, spec, frames),
        progress=patchcore.Progress(_log, "validation: defect images"),
    )
    calibration = calibrate(good_scores, defect_scores, targets)
    thresholds, record = calibration.thresholds, calibration.record
    _log(
        f"thresholds for false-reject target {targets.false_reject_rate:g}, manual target "
        f"{targets.manual_rate:g}: reject {thresholds.reject:.4f} "
        f"({record['false_reject']['count']}/{len(good_scores)} validation good at or above), "
        f"manual {thresholds.manual:.4f} ({record['manual']['count']} in the band, "
        f"{record['manual']['band']})"
    )
    if record["defects"]:
        _log(
            f"validation defects at that point: recall {record['defects']['recall']:.3f}, "
            f"manual {record['defects']['manual_share']:.3f}"
        )
    for note in record["notes"]:
        _log(f"calibration: {note}")

    golden_sample = val_good[0]
    with Image.open(golden_sample.path) as image:
        image.load()
        image.save(model_dir / GOLDEN_FILE, format="PNG")
    golden_tensor = load_tensor(model_dir / GOLDEN_FILE, spec, frames)
    golden_score = float(score_tensors(session, spec.name, [golden_tensor])[0][0])

    val_auroc = _auroc(good_scores, defect_scores)
    metrics: dict[str, object] = {
        "validation": {
            "good": len(val_good),
            "defect": len(val_defect),
            "image_auroc": val_auroc,
            "good_score_p50": float(np.median(good_scores)),
            "good_score_max": float(good_scores.max()),
            "threshold_rule": record["rule"],
        },
        "calibration": record,
        "frames": frames.to_json(),
        "train_images": len(train_samples),
        "memory_bank": int(model.bank.shape[0]),
        "feature_dims": int(model.bank.shape[1]),
        "score_top_k": top_k,
        "taps": list(taps),
        "balanced_taps": balance,
        "tap_gain": list(tap_gain or patchcore.default_tap_gain(len(taps))) if balance else None,
        "standardisation": norm,
        "smoothing": smoothing,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    manifest = Manifest(
        name=name or _package_name(data),
        version=version,
        sha256=sha256_file(onnx_path),
        input=spec,
        outputs=OutputSpec(score=patchcore.SCORE_NAME, anomaly_map=patchcore.MAP_NAME),
        thresholds=thresholds,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        golden=Golden(file=GOLDEN_FILE, score=golden_score, tolerance=1e-3),
        metrics=metrics,
        data_fingerprint=fingerprint,
        pipeline_run=pipeline_run,
    )
    write_manifest(model_dir, manifest)
    (model_dir / TRAINING_FILE).write_text(
        json.dumps({"data_fingerprint": fingerprint, "split": split_info}, indent=2) + "\n"
    )
    _log(
        f"wrote {model_dir} ({manifest.ref}); validation AUROC "
        f"{'n/a' if val_auroc is None else f'{val_auroc:.4f}'}; "
        f"{time.perf_counter() - started:.1f}s total"
    )
    return manifest


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=env.get("SM_CHANNEL_TRAIN"),
        help="dataset folder (default $SM_CHANNEL_TRAIN)",
    )
    parser.add_argument(
        "--validation",
        type=Path,
        default=env.get("SM_CHANNEL_VALIDATION"),
        help="separate validation folder (default $SM_CHANNEL_VALIDATION)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=env.get("SM_MODEL_DIR"),
        help="where the model package goes (default $SM_MODEL_DIR)",
    )
    parser.add_argument("--seed", type=int, default=0, help="split and coreset seed")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument(
        "--group-pattern",
        help="regex with one capture group naming an image's group in its file name; "
        "groups.csv in the data folder is used when present",
    )
    parser.add_argument(
        "--taps",
        default=",".join(map(str, patchcore.DEFAULT_TAPS)),
        help="Lite0 block indices to tap, comma-separated (default 2,4,10)",
    )
    parser.add_argument(
        "--coreset-ratio",
        type=float,
        default=patchcore.DEFAULT_CORESET_RATIO,
        help="bank size as a fraction of training patches (capped by --max-bank)",
    )
    parser.add_argument(
        "--max-bank",
        type=int,
        default=patchcore.DEFAULT_MAX_BANK,
        help=f"memory bank size cap (default {patchcore.DEFAULT_MAX_BANK})",
    )
    parser.add_argument(
        "--dims",
        type=int,
        default=patchcore.DEFAULT_DIMS,
        help="principal axes kept per patch feature, 0 keeps all "
        f"(default {patchcore.DEFAULT_DIMS})",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=patchcore.DEFAULT_TOP_K,
        help="image score = mean of the k highest map cells "
        f"(default {patchcore.DEFAULT_TOP_K}; 1 = maximum)",
    )
    parser.add_argument(
        "--norm",
        choices=patchcore.NORM_MODES,
        default=patchcore.DEFAULT_NORM,
        help="anomaly map standardisation: per edge ring, per cell, or per-cell mean with the "
        f"ring's spread (default {patchcore.DEFAULT_NORM})",
    )
    parser.add_argument(
        "--tap-gain",
        default=None,
        help="per-tap weight factors after balancing, comma-separated (default "
        f"{patchcore.DEFAULT_FINE_TAP_GAIN:g} on the finest tap, 1 on the others)",
    )
    parser.add_argument(
        "--no-balance", action="store_true", help="do not equalise the taps' feature variance"
    )
    parser.add_argument(
        "--smoothing", type=float, default=0.5, help="anomaly map blur, in feature cells"
    )
    parser.add_argument("--name", help="package name (default: the dataset folder's name)")
    parser.add_argument("--version", default="1.0.0", help="package semantic version")
    parser.add_argument(
        "--pipeline-run",
        default=env.get("LINEGUARD_PIPELINE_RUN"),
        help="pipeline execution that made this package",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch/ORT threads")
    parser.add_argument(
        "--target-false-reject-rate",
        type=float,
        default=DEFAULT_TARGET_FALSE_REJECT_RATE,
        help="share of good parts at or above the reject threshold the plant accepts "
        f"(default {DEFAULT_TARGET_FALSE_REJECT_RATE:g}; plant file calibration section)",
    )
    parser.add_argument(
        "--target-manual-rate",
        type=float,
        default=DEFAULT_TARGET_MANUAL_RATE,
        help="share of good parts in the manual band the plant accepts, 0 for no band "
        f"(default {DEFAULT_TARGET_MANUAL_RATE:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.data is None or args.model_dir is None:
        print(
            "error: --data and --model-dir are required (or SM_CHANNEL_TRAIN/SM_MODEL_DIR)",
            file=sys.stderr,
        )
        return 2
    try:
        taps = tuple(int(t) for t in str(args.taps).split(",") if t.strip())
        gain = (
            [float(g) for g in str(args.tap_gain).split(",") if g.strip()]
            if args.tap_gain
            else None
        )
        targets = Targets(args.target_false_reject_rate, args.target_manual_rate)
        train(
            args.data,
            args.model_dir,
            args.validation,
            seed=args.seed,
            validation_fraction=args.validation_fraction,
            test_fraction=args.test_fraction,
            taps=taps,
            coreset_ratio=args.coreset_ratio,
            max_bank=args.max_bank,
            dims=args.dims or None,
            top_k=args.top_k,
            norm=args.norm,
            tap_gain=gain,
            balance=not args.no_balance,
            smoothing=args.smoothing,
            name=args.name,
            version=args.version,
            pipeline_run=args.pipeline_run,
            threads=args.threads,
            targets=targets,
            group_pattern=args.group_pattern,
        )
    except (TrainingError, ModelPackageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from inspector.model_package import (
    FIT_MODES,
    FrameSpec,
    Golden,
    InputSpec,
    Manifest,
    ModelPackageError,
    OutputSpec,
    TileSpec,
    parse_input,
    sha256_file,
    write_manifest,
)
from training import metrics as figures
from training import model as patchcore
from training.alignment import (
    ALIGN_MODES,
    DEFAULT_ALIGN,
    check_mode,
    plan_alignment,
    refused,
    registered_masks,
)
from training.calibration import (
    DEFAULT_TARGET_FALSE_REJECT_RATE,
    DEFAULT_TARGET_MANUAL_RATE,
    Targets,
    calibrate,
)
from training.dataset import Sample, default_defect_train_fraction, load_dataset, split_dataset
from training.errors import DatasetError, TrainingError
from training.images import ImageTensors
from training.merge import field_counts, merge_record
from training.quantize import DEFAULT_PRECISION, PRECISIONS, quantize_backbone
from training.scoring import (
    describe_frames,
    describe_input,
    frame_plan,
    onnx_session,
    score_frames,
)

GOLDEN_FILE = "golden.png"
GOLDEN_CANDIDATES = 20  # validation good images the golden image is chosen from (it must register)
MODEL_FILE = "model.onnx"
TRAINING_FILE = "training.json"


def input_spec(
    size: int = patchcore.INPUT_SIZE,
    bit_depth: int | None = None,
    *,
    roi: tuple[int, int, int, int] | None = None,
    fit: str = "stretch",
    tiles: TileSpec | None = None,
) -> InputSpec:
    """The package's preprocessing: RGB (grey is expanded), region, tiles, resized, (x - 127) / 128.

    The result is validated as the device reads it (a bad ``roi``, ``fit`` or ``tiles`` raises
    :class:`ModelPackageError` naming the field).
    """
    spec = InputSpec(
        name=patchcore.INPUT_NAME,
        height=size,
        width=size,
        color="RGB",
        resize="bilinear",
        mean=patchcore.MEAN,
        std=patchcore.STD,
        bit_depth=bit_depth,
        roi=roi,
        fit=fit,
        tiles=tiles,
    )
    return parse_input(spec.to_json(), "preprocessing")


def _log(message: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _package_name(data: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", data.resolve().name.lower()).strip("-._")
    return (name or "model")[:64]


def _tensors(
    samples: Sequence[Sample], spec: InputSpec, frames: FrameSpec | None = None
) -> ImageTensors:
    """Every tile of every frame (a training image for the bank), each frame decoded when one
    of its tiles is read: a dataset is never held whole."""
    return ImageTensors([s.path for s in samples], spec, frames)


def _auroc(good: np.ndarray, defect: np.ndarray) -> float | None:
    if not len(good) or not len(defect):
        return None
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(good)), np.ones(len(defect))]
    return float(roc_auc_score(labels, np.r_[good, defect]))


MODEL_KINDS = ("auto", "patchcore", "supervised")
NONE = "none"  # --roi or --tiles not declared
CANDIDATES_DIR = "candidates"


@dataclass(frozen=True)
class _Candidate:
    """One trained candidate's package and its validation figures."""

    name: str
    root: Path
    manifest: Manifest
    validation_auroc: float | None
    validation_recall: float | None
    good_scores: np.ndarray | None = None
    defect_scores: np.ndarray | None = None


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
    coarse: int = patchcore.DEFAULT_COARSE,
    refine: int = patchcore.DEFAULT_REFINE,
    precision: str = DEFAULT_PRECISION,
    name: str | None = None,
    version: str = "1.0.0",
    pipeline_run: str | None = None,
    threads: int | None = None,
    targets: Targets | None = None,
    group_pattern: str | None = None,
    model_kind: str = "auto",
    defect_train_fraction: float | None = None,
    bit_depth: int | None = None,
    roi: tuple[int, int, int, int] | None = None,
    fit: str = "stretch",
    tiles: TileSpec | None = None,
    coreset_pool: int = patchcore.DEFAULT_CORESET_POOL,
    align: str = DEFAULT_ALIGN,
) -> Manifest:
    """Train, export, calibrate and write a model package to ``model_dir``; return its manifest.

    ``model_kind`` ``auto`` trains the anomaly model and, when training defect images exist,
    the supervised candidate too, and keeps the better by validation (``candidates/`` holds
    both packages); ``patchcore`` or ``supervised`` trains that one only.
    ``defect_train_fraction`` (default :func:`training.dataset.default_defect_train_fraction`)
    is the share of defect images that trains the supervised candidate. ``bit_depth`` declares
    the significant bits of 16-bit mono data (default: 12 or 16, from the data). ``roi``,
    ``fit`` and ``tiles`` choose how a frame becomes the model's input (recorded in the
    manifest's ``input``); the bank learns from every tile, thresholds from frame scores.
    ``coreset_pool`` bounds the bank's candidate patches (``training.model.CoresetPool``).
    ``align`` (``auto``, ``similarity``, ``none``) registers every input to the part's
    reference pose first (:mod:`training.alignment`; ``auto`` where the good images register
    consistently); ``metrics.align`` records the decision.
    """
    import torch

    if model_kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {', '.join(MODEL_KINDS)}, got {model_kind!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if coarse < 0 or refine < 1 or (coarse and refine < top_k):
        raise ValueError(
            f"the two-stage search needs coarse ≥ 0 and refine ≥ 1 and ≥ top-k ({top_k}), got "
            f"coarse {coarse}, refine {refine}"
        )
    targets = targets or Targets()
    # a bad choice fails before any work
    check_mode(align, input_spec(roi=roi, fit=fit, tiles=tiles))
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    dataset = load_dataset(data, group_pattern=group_pattern)
    defect_types = dataset.defect_types
    if validation is not None:
        val_set = load_dataset(validation, min_good=1)
        defect_types = sorted({*defect_types, *val_set.defect_types})
        train_samples = [*dataset.good, *dataset.defects]
        val_samples = list(val_set.samples)
        fingerprint = f"{dataset.fingerprint()}+{val_set.fingerprint()}"
        split_info: dict[str, object] = {"validation": str(validation)}
    else:
        if defect_train_fraction is None:
            # a defect share only where a supervised candidate can use it
            can_supervise = model_kind != "patchcore" and balance and tiles is None
            defect_train_fraction = default_defect_train_fraction(dataset) if can_supervise else 0.0
        splits = split_dataset(
            dataset, seed, validation_fraction, test_fraction, defect_train_fraction
        )
        train_samples, val_samples = list(splits.train), list(splits.validation)
        fingerprint = dataset.fingerprint()
        split_info = {
            "seed": seed,
            "validation_fraction": validation_fraction,
            "test_fraction": test_fraction,
            "defect_train_fraction": defect_train_fraction,
            "counts": splits.summary(),
            "groups": dataset.grouping,
            "group_pattern": group_pattern,
            "groups_digest": dataset.groups_digest(),
        }
    # good images of a part that also has defect images (one group) are never trained on: the
    # anomaly model would learn a defective part's look, the head a defective part as good
    defect_groups = {s.group_key for s in train_samples if s.label == 1 and s.group is not None}
    train_good = [s for s in train_samples if s.label == 0 and s.group_key not in defect_groups]
    train_defect = [s for s in train_samples if s.label == 1]
    split_info["train_defect_images"] = len(train_defect)
    if not train_good:
        raise DatasetError(
            f"{data}: no good image left to train on (every training group holds a defect image)"
        )
    val_good = [s for s in val_samples if s.label == 0]
    val_defect = [s for s in val_samples if s.label == 1]
    if not val_good:
        raise DatasetError(f"{validation or data}: the validation split has no good image")
    if model_kind == "supervised" and not train_defect:
        raise DatasetError(
            f"{data}: the supervised model needs defect images in the training split "
            f"(the dataset has {len(dataset.defects)}; see --defect-train-fraction)"
        )
    _log(
        f"data {data}: {len(train_good)} train good, {len(train_defect)} train defect, "
        f"{len(val_good)} validation good, {len(val_defect)} validation defect; "
        f"fingerprint {fingerprint[:12]}"
    )
    # the frames the model takes come from training and validation images, never from test
    every = [*train_samples, *val_samples]
    bit_depth, frames = describe_frames([s.path for s in every], bit_depth, roi=roi)
    spec = input_spec(bit_depth=bit_depth, roi=roi, fit=fit, tiles=tiles)
    alignment, align_figures = plan_alignment(
        [s.path for s in train_good], spec, frames, align, seed=seed, log=_log
    )
    golden_sample = val_good[0]
    if alignment is not None:
        spec = parse_input(replace(spec, align=alignment).to_json(), "preprocessing")
        # the device refuses (manual) what does not register; validation good images it would
        # refuse still set the thresholds here, so their count is recorded beside the decision.
        # The golden image must be judged on the device: the first one that registers
        every_reason = refused([s.path for s in val_good], spec, frames)
        first = zip(val_good[:GOLDEN_CANDIDATES], every_reason, strict=False)
        judged = next((s for s, r in first if r is None), None)
        if judged is None:
            raise TrainingError(
                f"none of the first {min(len(val_good), GOLDEN_CANDIDATES)} validation good "
                "images registers to the part's reference pose (the device would send them to "
                f"manual: {every_reason[0]}): train with --align none"
            )
        golden_sample = judged
        reasons = [r for r in every_reason if r is not None]
        align_figures["validation_good_refused"] = len(reasons)
        if reasons:
            _log(
                f"align: {len(reasons)} of {len(val_good)} validation good images would go to "
                f"manual on the device ({reasons[0]})"
            )
    _log(
        f"frames: {bit_depth or 8}-bit, {frames.channels} channel(s), "
        f"{frames.min_size[0]}x{frames.min_size[1]}..{frames.max_size[0]}x{frames.max_size[1]} px; "
        f"{describe_input(spec)}"
    )
    good_tensors = _tensors(train_good, spec, frames)
    anomaly = patchcore.fit(
        good_tensors,
        taps=taps,
        coreset_ratio=coreset_ratio,
        coreset_pool=coreset_pool,
        max_bank=max_bank,
        seed=seed,
        balance=balance,
        sigma=smoothing,
        dims=dims,
        top_k=top_k,
        norm=norm,
        tap_gain=tap_gain,
        log=_log,
        coarse=coarse,
        refine=refine,
    )
    metrics: dict[str, object] = {
        "frames": frames.to_json(),
        "align": align_figures,
        "train_images": len(train_good),
        "memory_bank": int(anomaly.bank.shape[0]),
        "feature_dims": int(anomaly.bank.shape[1]),
        "score_top_k": top_k,
        "search": {"coarse": anomaly.coarse, "refine": anomaly.refine},
        "taps": list(taps),
        "balanced_taps": balance,
        "tap_gain": list(tap_gain or patchcore.default_tap_gain(len(taps))) if balance else None,
        "standardisation": norm,
        "smoothing": smoothing,
        # the review station's defect-type buttons (inspector.review_station.defect_types_of)
        "defect_types": defect_types,
    }
    # the field images the model learned from (a good image of a part with a defect image in
    # the training split does not, as above) and those that calibrated it
    field = field_samples(data, validation, [*train_good, *train_defect], val_samples)
    if field is not None:
        metrics["field_samples"] = field
    models: dict[str, torch.nn.Module] = {}
    if model_kind in ("auto", "patchcore"):
        models["patchcore"] = anomaly
    if model_kind == "supervised" and spec.tiles is not None:
        raise DatasetError(
            "the supervised model takes whole frames: a defect image's label does not say "
            "which of its tiles holds the defect (use --model patchcore or auto with --tiles)"
        )
    if model_kind == "supervised" or (
        model_kind == "auto" and train_defect and balance and spec.tiles is None
    ):
        from training.supervised import DEFAULT_HIDDEN, HEAD_BOUND, MAX_DEFECT_IMAGES, fit_head

        whole_frame = spec.roi is None and spec.fit == "stretch"
        if not whole_frame and any(s.mask is not None for s in train_defect):
            _log(
                "supervised: masks left out of the head's cell targets (they are in frame "
                "pixels; the input has a region of interest or padding); image labels only"
            )

        head_masks: list[np.ndarray | Path | None] | None = (
            [s.mask for s in train_defect] if whole_frame else None
        )
        if head_masks and spec.align is not None and any(m is not None for m in head_masks):
            head_masks = list(
                registered_masks(
                    [s.path for s in train_defect], [s.mask for s in train_defect], spec, frames
                )
            )
        # the head is trained on exact distances and runs on the anomaly model's own search
        # (the two-stage search refines the cells whose logit bound ranks highest)
        head = fit_head(
            patchcore.exact_search(anomaly),
            good_tensors,
            _tensors(train_defect, spec, frames),
            # masks are in frame pixels: they map onto the cells of a stretched whole frame
            # (registered like their images when the input aligns)
            head_masks,
            seed=seed,
            log=_log,
        ).searching(anomaly)
        extra = {
            "train_defect_images": len(train_defect),
            # above MAX_DEFECT_IMAGES the head trains on a seeded sample of them
            "head_defect_images": min(len(train_defect), MAX_DEFECT_IMAGES),
            "head_hidden": DEFAULT_HIDDEN,
            "head_bound": HEAD_BOUND,
            "anomaly_weight": round(head.anomaly_weight(), 4),
        }
        models["supervised"] = head
    else:
        extra = {}
    record: dict[str, object] = {
        "data_fingerprint": fingerprint,
        "split": split_info,
        "input": frame_plan(spec),
    }
    several = len(models) > 1
    candidates = []
    for kind, model in models.items():
        root = model_dir / CANDIDATES_DIR / kind if several else model_dir
        candidates.append(
            _write_package(
                kind,
                model,
                root,
                spec=spec,
                frames=frames,
                val_good=val_good,
                val_defect=val_defect,
                golden_sample=golden_sample,
                targets=targets,
                threads=threads,
                metrics={**metrics, **(extra if kind == "supervised" else {})},
                manifest_fields={
                    "name": name or _package_name(data),
                    "version": version,
                    "data_fingerprint": fingerprint,
                    "pipeline_run": pipeline_run,
                },
                record=record,
                precision=precision,
                int8_inputs=good_tensors,
            )
        )
    kept, gains = select_candidate(
        candidates, val_good, val_defect, seed=seed, train_defects=len(train_defect)
    )
    manifest = kept.manifest
    if several:
        selection = {
            "kept": kept.name,
            "criterion": SELECTION_RULE,
            "train_defect_images": len(train_defect),
            "auroc_gain_over_patchcore": gains,
            "candidates": {
                c.name: {
                    "validation_auroc": c.validation_auroc,
                    "validation_recall": c.validation_recall,
                    "validation_defects": len(val_defect),
                    "thresholds": {
                        "reject": c.manifest.thresholds.reject,
                        "manual": c.manifest.thresholds.manual,
                    },
                }
                for c in candidates
            },
        }
        manifest = replace(kept.manifest, metrics={**kept.manifest.metrics, "selection": selection})
        for file in (MODEL_FILE, GOLDEN_FILE, TRAINING_FILE):
            shutil.copyfile(kept.root / file, model_dir / file)
        write_manifest(model_dir, manifest)
        for c in candidates:
            gain = gains.get(c.name)
            interval = (
                f"; gain {gain['value']:+.4f}, 95 % {gain['ci95'][0]:+.4f}..{gain['ci95'][1]:+.4f}"
                if isinstance(gain, dict) and gain.get("ci95")
                else ""
            )
            _log(
                f"candidate {c.name}: validation AUROC {_figure(c.validation_auroc)}, recall "
                f"{_figure(c.validation_recall)}{interval}{' (kept)' if c is kept else ''}"
            )
    metrics_out = dict(manifest.metrics)
    metrics_out["train_seconds"] = round(time.perf_counter() - started, 1)
    manifest = replace(manifest, metrics=metrics_out)
    write_manifest(model_dir, manifest)
    val_auroc = manifest.metrics["validation"]["image_auroc"]  # type: ignore[index]
    _log(
        f"wrote {model_dir} ({manifest.ref}, {kept.name}); validation AUROC "
        f"{_figure(val_auroc)}; {time.perf_counter() - started:.1f}s total"
    )
    return manifest


def field_samples(
    data: Path,
    validation: Path | None,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
) -> dict[str, object] | None:
    """How many field samples (``training.merge``) trained and calibrated the package, and the
    counts of the merge that made the data; None when the data records none (no
    ``samples.csv``)."""
    train_counts = field_counts(data, train_samples)
    val_counts = field_counts(validation or data, val_samples)
    if train_counts is None and val_counts is None:
        return None
    return {
        "merge": merge_record(data),
        "train": train_counts or {"good": 0, "defect": 0},
        "validation": val_counts or {"good": 0, "defect": 0},
    }


PLAIN_SELECTION_DEFECTS = 100
"""Training defect images from which a higher validation AUROC alone keeps the supervised
candidate; below, it must be higher beyond sampling noise (docs/training.md, The supervised
candidate: at 18 training defects a validation gain foretold nothing, at 150 the head won)."""
SELECTION_RULE = (
    "the anomaly model, unless the supervised candidate's validation image AUROC is higher: "
    "beyond sampling noise (the lower end of the 95 % paired bootstrap interval of its gain, "
    "validation images resampled by group, good and defect apart, above 0) when its head "
    f"trained on fewer than {PLAIN_SELECTION_DEFECTS} defect images, simply higher (a gain "
    "above 0) from then on"
)
SELECTION_RESAMPLES = 1000
SELECTION_CONFIDENCE = 0.95


def select_candidate(
    candidates: Sequence[_Candidate],
    val_good: Sequence[Sample] = (),
    val_defect: Sequence[Sample] = (),
    *,
    seed: int = 0,
    train_defects: int = 0,
) -> tuple[_Candidate, dict[str, object]]:
    """The candidate kept by validation (:data:`SELECTION_RULE`) and the figures it was kept on.

    Never by test images. A small validation set cannot tell two good models apart: a
    supervised head that fits its training defects can win on 18 validation defects by chance
    and lose on the next 18, so below :data:`PLAIN_SELECTION_DEFECTS` training defect images
    (``train_defects``) it must win beyond the bootstrap's noise. With that many its head has
    beaten the anomaly model on every development test split while the bootstrap interval still
    spanned 0, so a higher validation AUROC keeps it.
    """
    base = next((c for c in candidates if c.name == "patchcore"), candidates[0])
    gains: dict[str, object] = {}
    kept = base
    plain = train_defects >= PLAIN_SELECTION_DEFECTS
    for other in candidates:
        if other is base:
            continue
        gain = auroc_gain(base, other, val_good, val_defect, seed=seed)
        gains[other.name] = gain
        if gain["ci95"] is None:  # undefined on this validation split: nothing to compare
            continue
        margin = gain["value"] if plain else gain["ci95"][0]  # type: ignore[index]
        if margin > 0:  # type: ignore[operator]
            kept = other
    return kept, gains


def auroc_gain(
    base: _Candidate,
    other: _Candidate,
    val_good: Sequence[Sample],
    val_defect: Sequence[Sample],
    *,
    resamples: int = SELECTION_RESAMPLES,
    seed: int = 0,
) -> dict[str, object]:
    """``other``'s validation AUROC minus ``base``'s, with its paired bootstrap 95 % interval
    (:func:`training.metrics.bootstrap_interval`: whole groups, good and defect drawn apart)."""
    scores = [base.good_scores, base.defect_scores, other.good_scores, other.defect_scores]
    if any(part is None for part in scores):
        return {"value": None, "ci95": None, "resamples": 0}
    base_good, base_defect, other_good, other_defect = (np.asarray(p) for p in scores)
    labels = np.r_[np.zeros(len(base_good)), np.ones(len(base_defect))]
    # one row per validation image: (other's score, base's score), so a resample is paired
    paired = np.c_[np.r_[other_good, other_defect], np.r_[base_good, base_defect]]
    # without the samples (a caller that has scores only) every image is its own unit
    groups = [s.group_key for s in (*val_good, *val_defect)] or None

    def gain(drawn_labels: np.ndarray, drawn: np.ndarray) -> float | None:
        mine, theirs = (
            figures.auroc(drawn_labels, drawn[:, 0]),
            figures.auroc(drawn_labels, drawn[:, 1]),
        )
        return None if mine is None or theirs is None else mine - theirs

    record = figures.bootstrap_interval(
        labels,
        paired,
        gain,
        groups,
        resamples=resamples,
        seed=seed,
        confidence=SELECTION_CONFIDENCE,
    )
    if record["value"] is None:
        return {"value": None, "ci95": None, "resamples": 0}
    return {
        "value": round(float(record["value"]), 6),
        "ci95": None if record["ci95"] is None else [round(float(v), 6) for v in record["ci95"]],
        "resamples": record["resamples"],
    }


def _figure(value: object) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"  # type: ignore[arg-type]


def _frame_scores(
    session: object, spec: InputSpec, samples: Sequence[Sample], frames: FrameSpec, what: str
) -> np.ndarray:
    """Frame scores of ``samples`` (no maps kept), a tenth at a time with a progress line."""
    progress = patchcore.Progress(_log, f"{what} frames")
    step = max(1, -(-len(samples) // 10))
    scores = [np.zeros(0)]
    for start in range(0, len(samples), step):
        part = [s.path for s in samples[start : start + step]]
        scores.append(score_frames(session, spec, part, frames, maps=False)[0])
        progress(start + len(part), len(samples))
    return np.concatenate(scores)


def _write_package(
    kind: str,
    model: object,
    root: Path,
    *,
    spec: InputSpec,
    frames: FrameSpec,
    val_good: Sequence[Sample],
    val_defect: Sequence[Sample],
    golden_sample: Sample,
    targets: Targets,
    threads: int | None,
    metrics: dict[str, object],
    manifest_fields: dict[str, str | None],
    record: dict[str, object],
    precision: str = DEFAULT_PRECISION,
    int8_inputs: Sequence[np.ndarray] = (),
) -> _Candidate:
    """Export one candidate (its backbone int8 unless ``precision`` is float), calibrate it on
    validation and write its package to ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    onnx_path = root / MODEL_FILE
    patchcore.export_onnx(model, onnx_path, spec.height, spec.width)  # type: ignore[arg-type]
    if precision == "int8":
        quantised = quantize_backbone(onnx_path, spec.name, int8_inputs)
        metrics = {**metrics, "precision": quantised}
        _log(
            f"{kind}: backbone quantised to int8 ({quantised['quantised_nodes']} nodes, "
            f"{quantised['calibration_images']} calibration images)"
        )
        if not quantised["trained_on"]["vnni"]:  # type: ignore[index]
            _log(
                f"{kind}: warning: this machine has no VNNI; its int8 kernels, which set the "
                "thresholds and the golden score, are not the ones the int8 settings are for, "
                "and devices whose kernels differ refuse the package (--precision float for them)"
            )
    else:
        metrics = {**metrics, "precision": {"backbone": "float"}}
    _log(f"{kind}: exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)")
    session = onnx_session(onnx_path, threads=threads or 1)
    # thresholds are per frame (the tiles combined), as the device decides
    good_scores = _frame_scores(session, spec, val_good, frames, f"{kind}: validation good")
    defect_scores = _frame_scores(session, spec, val_defect, frames, f"{kind}: validation defect")
    calibration = calibrate(good_scores, defect_scores, targets)
    thresholds, calib = calibration.thresholds, calibration.record
    _log(
        f"{kind}: thresholds for false-reject target {targets.false_reject_rate:g}, manual target "
        f"{targets.manual_rate:g}: reject {thresholds.reject:.4f} "
        f"({calib['false_reject']['count']}/{len(good_scores)} validation good at or above), "
        f"manual {thresholds.manual:.4f} ({calib['manual']['count']} in the band, "
        f"{calib['manual']['band']})"
    )
    if calib["defects"]:
        _log(
            f"{kind}: validation defects at that point: recall {calib['defects']['recall']:.3f}, "
            f"manual {calib['defects']['manual_share']:.3f}"
        )
    for note in calib["notes"]:
        _log(f"{kind}: calibration: {note}")

    with Image.open(golden_sample.path) as image:
        image.load()
        image.save(root / GOLDEN_FILE, format="PNG")
    golden_score = float(score_frames(session, spec, [root / GOLDEN_FILE], frames)[0][0])
    val_auroc = _auroc(good_scores, defect_scores)
    recall = calib["defects"]["recall"] if calib["defects"] else None
    manifest = Manifest(
        name=str(manifest_fields["name"]),
        version=str(manifest_fields["version"]),
        sha256=sha256_file(onnx_path),
        input=spec,
        outputs=OutputSpec(score=patchcore.SCORE_NAME, anomaly_map=patchcore.MAP_NAME),
        thresholds=thresholds,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        golden=Golden(file=GOLDEN_FILE, score=golden_score, tolerance=1e-3),
        metrics={
            "model": kind,
            "validation": {
                "good": len(good_scores),
                "defect": len(defect_scores),
                "image_auroc": val_auroc,
                "good_score_p50": float(np.median(good_scores)),
                "good_score_max": float(good_scores.max()),
                "threshold_rule": calib["rule"],
            },
            "calibration": calib,
            **metrics,
        },
        data_fingerprint=str(manifest_fields["data_fingerprint"]),
        pipeline_run=manifest_fields["pipeline_run"],
    )
    write_manifest(root, manifest)
    (root / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return _Candidate(kind, root, manifest, val_auroc, recall, good_scores, defect_scores)


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
        help="Lite0 block indices to tap, comma-separated (default "
        f"{','.join(map(str, patchcore.DEFAULT_TAPS))})",
    )
    parser.add_argument(
        "--coreset-ratio",
        type=float,
        default=patchcore.DEFAULT_CORESET_RATIO,
        help="bank size as a fraction of training patches (capped by --max-bank)",
    )
    parser.add_argument(
        "--coreset-pool",
        type=int,
        default=patchcore.DEFAULT_CORESET_POOL,
        help="most candidate patches held for the bank's coreset; more patches are merged "
        f"and reduced (default {patchcore.DEFAULT_CORESET_POOL})",
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
    parser.add_argument(
        "--coarse",
        type=int,
        default=patchcore.DEFAULT_COARSE,
        help="two-stage search: bank entries every cell is searched against first "
        f"(default {patchcore.DEFAULT_COARSE}; 0 = exact search of the whole bank)",
    )
    parser.add_argument(
        "--refine",
        type=int,
        default=patchcore.DEFAULT_REFINE,
        help="two-stage search: cells then searched in the whole bank "
        f"(default {patchcore.DEFAULT_REFINE})",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="int8 (default): the backbone from block 1 static int8, calibrated on training "
        "good images, for x86 cores with VNNI; float: the whole graph float32, for other cores "
        "(ARM, x86 without VNNI; docs/training.md)",
    )
    parser.add_argument(
        "--model",
        choices=MODEL_KINDS,
        default="auto",
        help="auto: the anomaly model, and the supervised candidate when the training split "
        "has defect images, keeping the better by validation (default); or one of them",
    )
    parser.add_argument(
        "--defect-train-fraction",
        type=float,
        default=None,
        help="share of defect images that trains the supervised candidate (default 0.5 with "
        "at least 20 defect images, else 0; 0 with --model patchcore)",
    )
    parser.add_argument(
        "--bit-depth",
        type=int,
        default=None,
        help="significant bits of 16-bit mono images, 9..16 (default: 12 when no value "
        "exceeds 4095, else 16)",
    )
    parser.add_argument(
        "--roi",
        type=_roi_arg,
        default=None,
        help="region of interest X,Y,W,H in frame pixels: the part of every frame the model "
        f"judges (default, or {NONE}: the whole frame)",
    )
    parser.add_argument(
        "--fit",
        choices=FIT_MODES,
        default="stretch",
        help="a region or tile not of the model's aspect is stretched to 224x224, or resized "
        "inside it and padded (default stretch)",
    )
    parser.add_argument(
        "--tiles",
        type=_tiles_arg,
        default=None,
        help="cut the region into RxC tiles, neighbours sharing OVERLAP of a tile's side "
        f"(RxC[:OVERLAP], e.g. 3x4:0.1; default, or {NONE}: one input per frame); the "
        "frame's score is its highest tile's",
    )
    parser.add_argument(
        "--align",
        choices=ALIGN_MODES,
        default=DEFAULT_ALIGN,
        help="register every frame to the part's reference pose (rotation, scale, shift) "
        "before the model: auto (default) where the training good images register "
        "consistently, similarity always, none never; whole frames only",
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


def _roi_arg(text: str) -> tuple[int, int, int, int] | None:
    if text.strip().lower() == NONE:
        return None  # the whole frame (the pipeline passes every hyperparameter)
    try:
        x, y, w, h = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H in pixels, got {text!r}") from None
    return (x, y, w, h)


def _tiles_arg(text: str) -> TileSpec | None:
    if text.strip().lower() == NONE:
        return None  # one input per frame
    grid, _, overlap = text.partition(":")
    try:
        rows, cols = (int(part) for part in grid.lower().split("x"))
        return TileSpec(rows=rows, cols=cols, overlap=float(overlap) if overlap else 0.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ROWSxCOLS[:OVERLAP], e.g. 3x4:0.1, got {text!r}"
        ) from None


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
            coarse=args.coarse,
            refine=args.refine,
            precision=args.precision,
            name=args.name,
            version=args.version,
            pipeline_run=args.pipeline_run,
            threads=args.threads,
            targets=targets,
            group_pattern=args.group_pattern,
            model_kind=args.model,
            defect_train_fraction=args.defect_train_fraction,
            bit_depth=args.bit_depth,
            roi=args.roi,
            fit=args.fit,
            tiles=args.tiles,
            coreset_pool=args.coreset_pool,
            align=args.align,
        )
    except (TrainingError, ModelPackageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

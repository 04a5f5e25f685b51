"""Evaluate a model package on a dataset folder.

    python -m training.evaluate --model-dir <package> --data <dataset> --out <metrics.json>

Scores every image with ONNX Runtime through the device's preprocessing, at the package's own
thresholds, and writes image AUROC, accuracy, precision/recall/F1, the confusion matrix,
per-defect-type AUROC, the manual-band share, ONNX Runtime latency (1 thread), torch-vs-ONNX
score parity and, beside the JSON, ``<out>.scores.png`` (score distributions) and
``<out>.maps.png`` (example anomaly maps).

Which images: ``--split auto`` (default) uses the held-out test split when the folder is the one
the package was trained on (same data fingerprint), else every image; ``test`` or ``all`` force it.

Image AUROC, accuracy and recall also come with 95 % percentile-bootstrap intervals
(``confidence_intervals``: stratified by label, resampling whole groups when the dataset has
them, ``training.metrics``), and ``pixel_auroc`` is computed from the anomaly maps where the
dataset has masks (``masks/<type>/<file>``; null without).

The metrics include ``registration_gate``: the false-reject and manual rates on the evaluated
good images against the target rates (by default the ones the package was calibrated to, from
its manifest), each with its one-sided Clopper–Pearson lower bound, and the image AUROC against
``--min-image-auroc`` when there are defect images (``training.calibration.registration_gate``).
The SageMaker pipeline registers the package only when it passed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspector.model_package import InputSpec, ModelPackage, ModelPackageError, load_package
from inspector.preprocess import region
from training import metrics as figures
from training.calibration import (
    DEFAULT_GATE_CONFIDENCE,
    DEFAULT_MIN_IMAGE_AUROC,
    Targets,
    describe_gate,
    registration_gate,
)
from training.dataset import Dataset, Sample, load_dataset, split_dataset, with_groups
from training.errors import DatasetError, TrainingError
from training.merge import field_counts
from training.scoring import load_frame, onnx_session, score_frames, score_tensors
from training.train import TRAINING_FILE


def _log(message: str) -> None:
    print(f"[evaluate {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _training_record(package: ModelPackage) -> dict[str, Any]:
    info_path = package.root / TRAINING_FILE
    return json.loads(info_path.read_text()) if info_path.is_file() else {}


def recorded_groups(package: ModelPackage, dataset: Dataset) -> Dataset:
    """``dataset`` grouped by the pattern the package was split by, when it has no groups."""
    pattern = _training_record(package).get("split", {}).get("group_pattern")
    if pattern and dataset.grouping == "none":
        return with_groups(dataset, str(pattern))
    return dataset


def choose_samples(package: ModelPackage, dataset: Dataset, split: str) -> tuple[list[Sample], str]:
    """The images to evaluate and a description of why (held-out test split or all)."""
    info = _training_record(package)
    split_info = info.get("split", {})
    same = bool(info) and dataset.fingerprint() == info.get("data_fingerprint")
    if split == "auto":
        split = "test" if same and "seed" in split_info else "all"
    if split == "all":
        if same:
            raise TrainingError(
                f"{dataset.root} is the package's training data: use --split test, not all"
            )
        return list(dataset.samples), "all images (data not used in training)"
    if "seed" not in split_info:
        raise TrainingError(f"{package.root}: no split record in {TRAINING_FILE}; use --split all")
    dataset = recorded_groups(package, dataset)
    if "groups_digest" in split_info and dataset.groups_digest() != split_info["groups_digest"]:
        _log(
            f"warning: the groups ({dataset.grouping}) differ from those the package was split "
            f"by ({split_info.get('groups', 'none')}); the test split may hold images of "
            "training groups"
        )
    splits = split_dataset(
        dataset,
        int(split_info["seed"]),
        float(split_info["validation_fraction"]),
        float(split_info["test_fraction"]),
        float(split_info.get("defect_train_fraction", 0.0)),
    )
    if not same:
        _log("warning: data differs from the training data; evaluating its test split anyway")
    return list(splits.test), f"held-out test split (seed {split_info['seed']})"


def _binary_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    tp = int(((predicted == 1) & (labels == 1)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / max(len(labels), 1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return figures.auroc(labels, scores)


def _mask_truth(
    sample: Sample, spec: InputSpec | None = None
) -> np.ndarray | tuple[int, int] | None:
    """A defect image's mask as booleans, a good image's (height, width); None without mask.

    With ``spec`` both are of the region the model judges (its region of interest).
    """
    from PIL import Image

    if sample.label == 0:
        with Image.open(sample.path) as image:
            if spec is None:
                return (image.height, image.width)
            left, top, right, bottom = region(image.size, spec)
            return (bottom - top, right - left)
    if sample.mask is None:
        return None
    with Image.open(sample.mask) as image:
        mask = np.asarray(image.convert("L")) > 0
    if spec is None:
        return mask
    left, top, right, bottom = region((mask.shape[1], mask.shape[0]), spec)
    return mask[top:bottom, left:right]


def pixel_metrics(
    samples: Sequence[Sample], maps: Sequence[np.ndarray], spec: InputSpec | None = None
) -> dict[str, Any]:
    """Pixel AUROC of ``maps`` against the masks, over good images and masked defect images.

    Each map is resized to its mask (to the image for a good image, whose pixels are all
    negative); with ``spec`` the masks are cut to the region of interest the maps cover (the
    model never sees the rest). ``value`` is None when no defect image has a mask.
    """
    if not any(s.label == 1 and s.mask is not None for s in samples):
        return {"value": None, "defect_images_with_mask": 0, "good_images": 0}
    chosen = [
        (amap, truth)
        for s, amap in zip(samples, maps, strict=True)
        if (truth := _mask_truth(s, spec)) is not None
    ]
    return {
        "value": figures.pixel_auroc([m for m, _ in chosen], [t for _, t in chosen]),
        "defect_images_with_mask": sum(1 for _, t in chosen if not isinstance(t, tuple)),
        "good_images": sum(1 for _, t in chosen if isinstance(t, tuple)),
    }


def confidence_intervals(
    samples: Sequence[Sample],
    labels: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    *,
    resamples: int = figures.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile-bootstrap 95 % intervals of image AUROC, accuracy and recall (by group)."""
    groups = [s.group_key for s in samples]
    grouped = any(s.group is not None for s in samples)

    def interval(values: np.ndarray, statistic: figures.Statistic) -> dict[str, Any]:
        return figures.bootstrap_interval(
            labels, values, statistic, groups, resamples=resamples, seed=seed
        )

    return {
        "image_auroc": interval(scores, figures.auroc),
        "accuracy": interval(predicted, figures.accuracy),
        "recall": interval(predicted, figures.recall),
        "method": "percentile bootstrap, stratified by label, "
        + ("resampling groups" if grouped else "resampling images"),
        "seed": seed,
    }


def measure_latency(
    model_path: Path, tensor: np.ndarray, runs: int = 50, threads: int = 1
) -> dict[str, float]:
    """ONNX Runtime per-image latency, batch 1, after a warm-up, in ms (p50, p99, mean)."""
    session = onnx_session(model_path, threads=threads)
    name = session.get_inputs()[0].name
    batch = tensor[None].astype(np.float32)
    for _ in range(10):
        session.run(None, {name: batch})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "mean_ms": round(float(np.mean(times)), 3),
        "runs": runs,
        "threads": threads,
    }


def torch_model_from_package(package: ModelPackage):  # noqa: ANN201 - torch module
    """Rebuild the torch model from the package: Lite0 weights, its taps, the graph's bank and,
    for a supervised package, its head."""
    import onnx
    import torch
    from onnx import numpy_helper

    from training import model as patchcore

    metrics = package.manifest.metrics
    supervised = metrics.get("model") == "supervised"
    prefix = "anomaly." if supervised else ""
    taps = tuple(metrics.get("taps", patchcore.DEFAULT_TAPS))
    graph = onnx.load(str(package.model_path))
    named = {init.name: init for init in graph.graph.initializer}
    # the exporter keeps one copy of equal initializers and names the others Identity nodes of
    # it: a bank chunk as large as the two-stage search's coarse entries (refine_chunk(192) =
    # 1,024 = coarse) is the coarse table's Identity
    for node in graph.graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in named:
            named.setdefault(node.output[0], named[node.input[0]])
    pattern = re.escape(prefix) + r"bank_aug_\d+"
    chunks = sorted((int(n.rsplit("_", 1)[1]), n) for n in named if re.fullmatch(pattern, n))
    # bank_aug_<i>: chunks of [-2·bankᵀ; |bank|²]; bank_t: packages made before the chunks
    bank_name = f"{prefix}bank_aug_0" if chunks or "bank_t" not in named else "bank_t"
    wanted = [bank_name, f"{prefix}center", f"{prefix}scale"]
    if supervised:
        wanted += [f"{part}.{p}" for part in ("hidden", "out") for p in ("weight", "bias")]
        wanted.append("anomaly_gain")
    missing = [n for n in wanted if n not in named]
    if missing:
        raise TrainingError(f"{package.model_path}: {', '.join(missing)} not found in the graph")

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(numpy_helper.to_array(named[name])))

    extractor = patchcore.FeatureExtractor(patchcore.load_backbone(), taps)
    if f"{prefix}extractor.weight" in named:
        extractor.weight = tensor(f"{prefix}extractor.weight")
    if f"{prefix}extractor.projection" in named:
        extractor.projection = tensor(f"{prefix}extractor.projection")
    if chunks:
        bank = -0.5 * torch.cat([tensor(name) for _, name in chunks], dim=1)[:-1].t()
    else:
        bank = tensor("bank_t").t()
    top_k = int(metrics.get("score_top_k", 1))
    search = metrics.get("search") or {}  # absent: one-stage (older) packages
    anomaly = patchcore.PatchCoreModel(
        extractor,
        bank,
        center=tensor(f"{prefix}center"),
        scale=tensor(f"{prefix}scale"),
        top_k=top_k,
        coarse=int(search.get("coarse", 0)),
        refine=int(search.get("refine", patchcore.DEFAULT_REFINE)),
        sigma=float(metrics.get("smoothing") or 0.5),
    ).eval()
    if not supervised:
        return anomaly
    from training.supervised import SupervisedModel

    head = SupervisedModel(anomaly, hidden=int(tensor("hidden.weight").shape[0]))
    head.load_state_dict(
        {name: tensor(name) for name in wanted[3:]} | dict(anomaly.state_dict(prefix="anomaly.")),
        strict=True,
    )
    return head.eval()


def torch_parity(package: ModelPackage, tensors: Sequence[np.ndarray]) -> float | None:
    """Max |torch − ONNX Runtime| image score over ``tensors`` (torch rebuilt from the package)."""
    import torch

    if not tensors:
        return None
    model = torch_model_from_package(package)
    session = onnx_session(package.model_path, threads=1)
    batch = np.stack(tensors).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(batch))[0].numpy()
    got, _ = score_tensors(session, session.get_inputs()[0].name, list(batch))
    return float(np.abs(reference - got).max())


def _plots(
    out: Path,
    scores: np.ndarray,
    labels: np.ndarray,
    samples: Sequence[Sample],
    maps: Sequence[np.ndarray],
    package: ModelPackage,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = package.manifest.thresholds
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(float(scores.min()), float(scores.max()) + 1e-6, 40).tolist()
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="good")
    if (labels == 1).any():
        ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="defect")
    ax.axvline(thresholds.reject, color="red", label="reject")
    ax.axvline(thresholds.manual, color="orange", linestyle="--", label="manual")
    ax.set_xlabel("image score")
    ax.set_ylabel("images")
    ax.set_title(package.manifest.ref)
    ax.legend()
    path = out.with_suffix(".scores.png")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(str(path))

    order = [i for i in np.argsort(-scores) if labels[i] == 1][:4]
    order += [i for i in np.argsort(scores) if labels[i] == 0][:2]
    if order:
        fig, axes = plt.subplots(2, len(order), figsize=(2.4 * len(order), 5), squeeze=False)
        spec = package.manifest.input
        vmax = max(max(float(maps[i].max()) for i in order), thresholds.reject)
        for col, i in enumerate(order):
            image = _region_view(samples[i].path, spec, maps[i].shape)
            axes[0][col].imshow(image, cmap="gray")
            axes[0][col].set_title(
                f"{samples[i].defect_type or 'good'}\n{scores[i]:.2f}", fontsize=8
            )
            axes[1][col].imshow(maps[i], cmap="inferno", vmin=0, vmax=vmax)
            for row in axes:
                row[col].axis("off")
        path = out.with_suffix(".maps.png")
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(str(path))
    return written


def _region_view(path: Path, spec: InputSpec, shape: tuple[int, ...]) -> np.ndarray:
    """The region of interest of an image as 8-bit pixels at a map's ``(height, width)``."""
    from PIL import Image

    from inspector.decode import SIXTEEN_BIT_MODES

    with Image.open(path) as image:
        image.load()
        if image.mode in SIXTEEN_BIT_MODES:
            top = (1 << (spec.bit_depth or 16)) - 1
            scaled = np.clip(np.asarray(image, dtype=np.float64) * 255 / top, 0, 255)
            image = Image.fromarray(scaled.astype(np.uint8))
        view = image.crop(region(image.size, spec)).convert(spec.color)
    return np.asarray(view.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def package_targets(package: ModelPackage) -> Targets:
    """The target rates a package was calibrated to (the defaults for older packages)."""
    recorded = package.manifest.metrics.get("calibration", {}).get("targets", {})
    defaults = Targets()
    return Targets(
        float(recorded.get("false_reject_rate", defaults.false_reject_rate)),
        float(recorded.get("manual_rate", defaults.manual_rate)),
    )


def _field_samples(package: ModelPackage, data: Path, samples: Sequence[Sample]) -> dict[str, Any]:
    """``field_samples``: the package's record of the field samples it was trained with
    (``training.merge``) and how many of the evaluated images came from the field."""
    trained = package.manifest.metrics.get("field_samples")
    tested = field_counts(data, samples)
    if trained is None and tested is None:
        return {}
    return {
        "field_samples": {
            **(trained if isinstance(trained, dict) else {}),
            "test": tested or {"good": 0, "defect": 0},
        }
    }


def evaluate(
    model_dir: Path,
    data: Path,
    out: Path,
    split: str = "auto",
    latency_runs: int = 50,
    parity_images: int = 4,
    plots: bool = True,
    *,
    targets: Targets | None = None,
    min_image_auroc: float = DEFAULT_MIN_IMAGE_AUROC,
    gate_confidence: float = DEFAULT_GATE_CONFIDENCE,
    group_pattern: str | None = None,
    resamples: int = figures.DEFAULT_RESAMPLES,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``model_dir`` on ``data``; write and return the metrics.

    ``targets`` (default: the package's own) and ``min_image_auroc`` are what the registration
    gate checks, at ``gate_confidence``. ``group_pattern`` groups the images when the folder has
    no groups file (default: the pattern the package was split by); the bootstrap intervals
    draw ``resamples`` resamples of the groups, seeded by ``bootstrap_seed``.
    """
    package = load_package(model_dir)
    targets = targets or package_targets(package)
    dataset = recorded_groups(package, load_dataset(data, min_good=1, group_pattern=group_pattern))
    samples, chosen = choose_samples(package, dataset, split)
    _log(f"{package.manifest.ref} on {data}: {len(samples)} images ({chosen})")
    spec = package.manifest.input
    frames = package.manifest.frames
    session = onnx_session(package.model_path, threads=1)
    # per frame, as the device judges it: every tile scored, the highest counts, maps stitched
    scores, maps = score_frames(session, spec, [s.path for s in samples], frames)
    # model inputs (tiles) of the first frames, for latency and torch parity
    tensors: list[np.ndarray] = []
    for sample in samples:
        if len(tensors) >= max(1, parity_images):
            break
        tensors.extend(load_frame(sample.path, spec, frames))
    labels = np.array([s.label for s in samples])
    thresholds = package.manifest.thresholds
    predicted = (scores >= thresholds.reject).astype(int)
    per_type: dict[str, Any] = {}
    for kind in sorted({s.defect_type for s in samples if s.defect_type}):
        mask = np.array([s.label == 0 or s.defect_type == kind for s in samples])
        per_type[kind] = {
            "images": int(sum(1 for s in samples if s.defect_type == kind)),
            "image_auroc": _auroc(labels[mask], scores[mask]),
            "recall": float(
                predicted[labels == 1][
                    [s.defect_type == kind for s in samples if s.label == 1]
                ].mean()
            ),
        }
    manual = (scores >= thresholds.manual) & (scores < thresholds.reject)
    auroc = _auroc(labels, scores)
    gate = registration_gate(
        scores[labels == 0],
        thresholds,
        targets,
        image_auroc=auroc,
        defect_images=int((labels == 1).sum()),
        min_image_auroc=min_image_auroc,
        confidence=gate_confidence,
    )
    intervals = confidence_intervals(
        samples, labels, scores, predicted, resamples=resamples, seed=bootstrap_seed
    )
    pixels = pixel_metrics(samples, maps, spec)
    metrics: dict[str, Any] = {
        "model": package.manifest.ref,
        "data": str(data),
        "images": {
            "evaluated": len(samples),
            "good": int((labels == 0).sum()),
            "defect": int((labels == 1).sum()),
            "selection": chosen,
            "groups": len({s.group_key for s in samples}),
            "grouping": dataset.grouping,
        },
        "image_auroc": auroc,
        "pixel_auroc": pixels["value"],
        "pixel_auroc_images": {k: v for k, v in pixels.items() if k != "value"},
        "confidence_intervals": intervals,
        "thresholds": {"reject": thresholds.reject, "manual": thresholds.manual},
        **_binary_metrics(labels, predicted),
        "manual_rate": float(manual.mean()) if len(manual) else 0.0,
        "per_defect_type": per_type,
        "registration_gate": gate,
        **_field_samples(package, data, samples),
        "scores": {
            "good_p50": float(np.median(scores[labels == 0])) if (labels == 0).any() else None,
            "defect_p50": float(np.median(scores[labels == 1])) if (labels == 1).any() else None,
        },
    }
    if tensors:
        metrics["latency"] = measure_latency(package.model_path, tensors[0], latency_runs)
        # one model run per tile: a frame costs about tiles × the per-run latency
        metrics["latency"]["tiles_per_frame"] = spec.tile_count
        precision = package.manifest.metrics.get("precision") or {}
        if isinstance(precision, dict) and precision.get("backbone") == "int8":
            # no float model to compare with: quantising changed the graph's weights (and folded
            # some, training.quantize); its golden score is the device's check
            metrics["score_parity_max_abs_diff"] = None
        else:
            metrics["score_parity_max_abs_diff"] = torch_parity(package, tensors[:parity_images])
    out.parent.mkdir(parents=True, exist_ok=True)
    if plots and tensors:
        metrics["plots"] = _plots(out, scores, labels, samples, maps, package)
    metrics["per_image"] = [
        {"file": s.rel, "label": int(s.label), "score": float(sc)}
        | ({"group": s.group} if s.group is not None else {})
        for s, sc in zip(samples, scores, strict=True)
    ]
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    _log(describe_gate(gate))
    ci = intervals["image_auroc"]["ci95"]
    pixel = pixels["value"]
    _log(
        f"AUROC {'n/a' if auroc is None else f'{auroc:.4f}'}"
        f"{'' if ci is None else f' (95 % CI {ci[0]:.4f}-{ci[1]:.4f})'}, "
        f"pixel AUROC {'n/a' if pixel is None else f'{pixel:.4f}'}, accuracy {metrics['accuracy']:.3f}, "
        f"F1 {metrics['f1']:.3f}, p50 {metrics.get('latency', {}).get('p50_ms', 0):.1f} ms "
        f"-> {out}"
    )
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", required=True, type=Path, help="model package folder")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    parser.add_argument("--split", choices=("auto", "test", "all"), default="auto")
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG files")
    parser.add_argument(
        "--group-pattern",
        help="regex with one capture group naming an image's group in its file name, when the "
        "folder has no groups.csv (default: the pattern the package was split by)",
    )
    parser.add_argument(
        "--bootstrap-resamples",
        type=int,
        default=figures.DEFAULT_RESAMPLES,
        help=f"resamples for the 95 %% intervals (default {figures.DEFAULT_RESAMPLES})",
    )
    parser.add_argument(
        "--target-false-reject-rate",
        type=float,
        help="registration gate: target share of good images at or above reject "
        "(default: the package's calibration target)",
    )
    parser.add_argument(
        "--target-manual-rate",
        type=float,
        help="registration gate: target share of good images in the manual band "
        "(default: the package's calibration target)",
    )
    parser.add_argument(
        "--min-image-auroc",
        type=float,
        default=DEFAULT_MIN_IMAGE_AUROC,
        help="registration gate: minimum image AUROC, checked when there are defect images "
        f"(default {DEFAULT_MIN_IMAGE_AUROC:g})",
    )
    parser.add_argument(
        "--gate-confidence",
        type=float,
        default=DEFAULT_GATE_CONFIDENCE,
        help="registration gate: confidence of the one-sided Clopper-Pearson lower bounds "
        f"(default {DEFAULT_GATE_CONFIDENCE:g})",
    )
    args = parser.parse_args(argv)
    try:
        targets = None
        if args.target_false_reject_rate is not None or args.target_manual_rate is not None:
            recorded = package_targets(load_package(args.model_dir))
            targets = Targets(
                recorded.false_reject_rate
                if args.target_false_reject_rate is None
                else args.target_false_reject_rate,
                recorded.manual_rate
                if args.target_manual_rate is None
                else args.target_manual_rate,
            )
        evaluate(
            args.model_dir,
            args.data,
            args.out,
            args.split,
            args.latency_runs,
            plots=not args.no_plots,
            targets=targets,
            min_image_auroc=args.min_image_auroc,
            gate_confidence=args.gate_confidence,
            group_pattern=args.group_pattern,
            resamples=args.bootstrap_resamples,
        )
    except (TrainingError, ModelPackageError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

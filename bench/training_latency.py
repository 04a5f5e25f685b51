"""Training benchmarks: ONNX Runtime latency of the model beside an EfficientNet-Lite0 classifier.

    .venv/bin/python bench/training_latency.py [--model-dir PKG] [--runs 300]

Without --model-dir it trains a production-size anomaly model (the large sample's brick, seed
0, full memory bank, the default design) twice, int8 (the default) and with
``--precision float``, and the supervised model on the same split and bank (what a plant's
labelled folder keeps, ``model_supervised``), times all three, and times training on the CI-size
sample. The ImageNet Lite0
classifier (the same weights, the whole network to its logits, exported with torch.onnx for
batch 1 like the model) is timed in the same run, runs alternating with the models' so that
machine load hits all alike; ``ratio_p50`` is model / classifier (target ≤ 0.6). One and two
ORT threads, batch 1. It also times registration to the part's pose (``train --align``:
``align``, on the photo family's coins) and prints ``ratio_p50_model_plus_align``, the model
and registration together against the classifier, for a part that moves. Prints one JSON
document.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]

TARGET_RATIO = 0.6
WARM_UP = 20


def export_classifier(path: Path, size: int) -> None:
    """The ImageNet Lite0 classifier (logits) as ONNX, exported like the model."""
    import warnings

    import torch

    from training.model import load_backbone

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            load_backbone(),
            (torch.zeros(1, 3, size, size),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
        )


def interleaved(
    sessions: dict[str, Any], batch: np.ndarray, runs: int
) -> dict[str, dict[str, float]]:
    """Per-image latency (ms) of every session, one run of each in turn, after a warm-up."""
    feeds = {key: {s.get_inputs()[0].name: batch} for key, s in sessions.items()}
    times: dict[str, list[float]] = {key: [] for key in sessions}
    for i in range(WARM_UP + runs):
        for key, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feeds[key])
            if i >= WARM_UP:
                times[key].append((time.perf_counter() - started) * 1000)
    return {
        key: {
            "p50_ms": round(float(np.percentile(t, 50)), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3),
            "runs": runs,
        }
        for key, t in times.items()
    }


def side_by_side(
    models: dict[str, Path], classifier: Path, batch: np.ndarray, runs: int, threads: int
) -> dict[str, object]:
    """Models and classifier timed alternately on ``threads`` ORT threads, each model's ratio
    to the classifier (``ratio_p50`` for ``model``, ``ratio_p50_<name>`` for the others)."""
    from training.scoring import onnx_session

    sessions = {name: onnx_session(path, threads=threads) for name, path in models.items()}
    sessions["classifier"] = onnx_session(classifier, threads=threads)
    figures: dict[str, object] = dict(interleaved(sessions, batch, runs))
    classifier_ms = figures["classifier"]["p50_ms"]  # type: ignore[index]
    for name in models:
        key = "ratio_p50" if name == "model" else f"ratio_p50_{name}"
        figures[key] = round(figures[name]["p50_ms"] / classifier_ms, 3)  # type: ignore[index]
    return {**figures, "threads": threads}


def align_latency(work: Path, runs: int) -> dict[str, object]:
    """Registration's cost per frame (``inspector.align``, one core), on the photo family's
    coins: the reference built by training from 100 good frames, then ``runs`` registrations
    of 80 other frames (new poses, never seen by training), each timed alone."""
    from inspector.align import registrar
    from training.alignment import pixels_of, plan_alignment
    from training.photo_data import SIZES, SOURCES, generate_source
    from training.scoring import describe_frames
    from training.train import input_spec

    (source,) = [s for s in SOURCES if s.name == "coins"]
    data = work / "coins"
    _quiet(lambda: generate_source(source, data, replace(SIZES["small"], good=180), seed=0))
    goods = sorted((data / "good").glob("*.png"))
    _, frames = describe_frames(goods)
    spec = input_spec()
    align, _ = plan_alignment(goods[:100], spec, frames, "similarity")
    assert align is not None
    reg = registrar(align)
    inputs = [pixels_of(path, spec, frames) for path in goods[100:]]
    times = []
    for i in range(WARM_UP + runs):
        pixels = inputs[i % len(inputs)]
        started = time.perf_counter()
        reg.align(pixels, strict=False)
        if i >= WARM_UP:
            times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "runs": runs,
        "poses": align.coarse_poses,
        "data": "photo coins, 224x224 RGB inputs",
    }


def _quiet(work: Callable[[], object]) -> float:
    """Seconds ``work`` took, its prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        work()
        return time.perf_counter() - started


def main() -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="existing model package")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    from PIL import Image

    from inspector.model_package import load_package
    from inspector.preprocess import to_tensor

    result: dict[str, object] = {"benchmark": "training_latency"}
    extra: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from training.sample_data import generate
            from training.train import train

            small, large = Path(tmp) / "small", Path(tmp) / "large"
            _quiet(lambda: generate(small, seed=0, size="small", products=["brick"]))
            seconds = _quiet(lambda: train(small / "brick", Path(tmp) / "ci", threads=2))
            result["train_ci_sample_s"] = round(seconds, 1)
            result["train_ci_sample"] = "brick, small (30 good + 12 defect, 256 px), 2 threads"
            _quiet(lambda: generate(large, seed=0, size="large", products=["brick"]))
            # the anomaly model both times: the same model, int8 (the default) and float; and
            # the supervised model (the anomaly model plus a head), int8
            for name, kind, precision in (
                ("pkg", "patchcore", "int8"),
                ("float", "patchcore", "float"),
                ("supervised", "supervised", "int8"),
            ):
                seconds = _quiet(
                    lambda: train(
                        large / "brick",
                        Path(tmp) / name,  # noqa: B023 - called at once
                        threads=2,
                        model_kind=kind,  # noqa: B023
                        precision=precision,  # noqa: B023
                    )
                )
                label = "supervised" if kind == "supervised" else precision
                result[f"train_large_sample_{label}_s"] = round(seconds, 1)
            model_dir = Path(tmp) / "pkg"
            extra["model_float"] = Path(tmp) / "float" / "model.onnx"
            extra["model_supervised"] = Path(tmp) / "supervised" / "model.onnx"
            result["search_supervised"] = load_package(
                Path(tmp) / "supervised"
            ).manifest.metrics.get("search")
        package = load_package(model_dir)
        spec = package.manifest.input
        assert package.golden_path is not None
        batch = to_tensor(Image.open(package.golden_path), spec)[None].astype(np.float32)
        classifier = Path(tmp) / "lite0_classifier.onnx"
        export_classifier(classifier, spec.width)
        result["model"] = package.manifest.ref
        result["model_mb"] = round(package.model_path.stat().st_size / 1e6, 2)
        result["memory_bank"] = package.manifest.metrics.get("memory_bank")
        result["search"] = package.manifest.metrics.get("search")
        result["taps"] = package.manifest.metrics.get("taps")
        result["input"] = f"{spec.width}x{spec.height}"
        result["classifier"] = "EfficientNet-Lite0 ImageNet, logits, float32"
        result["precision"] = package.manifest.metrics.get("precision")
        models = {"model": package.model_path, **extra}
        for threads in (1, 2):
            result[f"onnxruntime_{threads}_thread{'s' if threads > 1 else ''}"] = side_by_side(
                models, classifier, batch, args.runs, threads
            )
        # registration (``train --align``) runs before the model on a part that moves
        align = align_latency(Path(tmp), min(args.runs, 300))
        result["align"] = align
        one = result["onnxruntime_1_thread"]
        assert isinstance(one, dict)
        result["ratio_p50_model_plus_align"] = round(
            (one["model"]["p50_ms"] + align["p50_ms"]) / one["classifier"]["p50_ms"], 3
        )
        if extra:
            from training.scoring import onnx_session

            reduced = onnx_session(package.model_path).run(None, {spec.name: batch})[0]
            full = onnx_session(extra["model_float"]).run(None, {spec.name: batch})[0]
            result["int8_golden_score_shift"] = round(float(abs(full - reduced).max()), 4)
        result["targets"] = {
            "ratio_p50": TARGET_RATIO,
            "p50_ms": 10,
            "p99_ms": 25,
            "train_ci_sample_s": 120,
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

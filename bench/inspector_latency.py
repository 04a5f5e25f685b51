"""Inference latency per image on one thread: p50/p99 for the production-size model.

    .venv/bin/python bench/inspector_latency.py [--model <package dir> | --tiny] [--runs 300]

The model is the shipped package ``edge_component/initial-model`` (PatchCore on
EfficientNet-Lite0, 224×224) unless ``--model`` names another; ``--tiny`` measures the 32×32
test model instead, for smoke tests only.

Prints JSON: per model, the inference time alone (preprocessed tensor → score) and the whole
frame path (encoded image bytes → decode → preprocess → score → decision), batch 1, plus the
per-image time in a micro-batch of 8 when the graph's batch dimension is dynamic. For a package
with an anomaly map, the whole frame path also with the map kept (the review station's overlay:
the map output read, stitched and reduced to a grid, runs interleaved with the path without
it) and what storing one kept frame's map costs (PNG encoding, bytes).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]  # before site-packages' own `tests`

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from inspector.anomaly_map import encode_map  # noqa: E402
from inspector.engine import Inspector  # noqa: E402
from inspector.health import percentile  # noqa: E402
from inspector.messages import Identity  # noqa: E402
from inspector.runner import ModelRunner, RunnerOptions  # noqa: E402
from inspector.runtime_config import RuntimeConfig  # noqa: E402
from inspector.sources import Frame  # noqa: E402

PRODUCTION_MODEL = ROOT / "edge_component" / "initial-model"


def _frame_bytes(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 200, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _stats(samples: list[float]) -> dict[str, float | None]:
    return {
        "p50": _r(percentile(samples, 50)),
        "p99": _r(percentile(samples, 99)),
        "mean": _r(sum(samples) / len(samples)) if samples else None,
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def measure(package: Path, runs: int, threads: int, frame: bytes) -> dict[str, Any]:
    """Latency figures for one model package."""
    runner = ModelRunner.load(package, RunnerOptions(intra_op_threads=threads, warmup_runs=5))
    image = Image.open(io.BytesIO(frame))
    tensor = runner.preprocess(image.convert("RGB"))
    infer = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.score([tensor])
        infer.append((time.perf_counter() - start) * 1000)
    engine = Inspector(
        Identity("bench", "line", "station", "device"),
        runner=runner,
        config=RuntimeConfig(deadline_ms=60_000, intra_op_threads=threads),
    )
    mapping = Inspector(
        Identity("bench", "line", "station", "device"),
        runner=runner,
        config=RuntimeConfig(deadline_ms=60_000, intra_op_threads=threads),
        keep_maps=True,
    )
    whole, with_map, encode = [], [], []
    map_bytes = grid_shape = None
    for i in range(runs):
        start = time.perf_counter()
        result = engine.judge(Frame("cam", f"p{i}", data=frame, captured=time.monotonic()))
        whole.append((time.perf_counter() - start) * 1000)
        assert result["score"] is not None, result
        if not runner.has_map:
            continue
        maps: list[Any] = []
        start = time.perf_counter()
        (result,) = mapping.judge_batch(
            [Frame("cam", f"m{i}", data=frame, captured=time.monotonic())], maps
        )
        with_map.append((time.perf_counter() - start) * 1000)
        assert result["score"] is not None and maps[0] is not None, result
        start = time.perf_counter()
        png = encode_map(maps[0], float(result["threshold"]))
        encode.append((time.perf_counter() - start) * 1000)
        map_bytes, grid_shape = len(png), list(maps[0].shape)
    batch8 = None
    if runner.dynamic_batch:
        per_image = []
        for _ in range(max(5, runs // 8)):
            start = time.perf_counter()
            runner.score([tensor] * 8)
            per_image.append((time.perf_counter() - start) * 1000 / 8)
        batch8 = _stats(per_image)
    spec = runner.manifest.input
    return {
        "model": runner.ref,
        "input": [spec.channels, spec.height, spec.width],
        "dynamic_batch": runner.dynamic_batch,
        "runs": runs,
        "inference_ms": _stats(infer),
        "frame_to_decision_ms": _stats(whole),
        "frame_to_decision_with_map_ms": _stats(with_map) if with_map else None,
        "map_kept_encode_ms": _stats(encode) if encode else None,
        "map_grid": grid_shape,
        "map_png_bytes": map_bytes,
        "batch8_per_image_ms": batch8,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=PRODUCTION_MODEL, help="a model package")
    parser.add_argument("--tiny", action="store_true", help="the 32×32 test model (smoke tests)")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per model")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--frame", default="640x480", help="camera frame size WxH (JPEG)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.frame.lower().split("x"))
    frame = _frame_bytes(width, height)
    results = []
    if args.tiny:
        from tests.support.tiny_model import build_tiny_package

        with tempfile.TemporaryDirectory() as tmp:
            tiny = Path(tmp) / "tiny"
            build_tiny_package(tiny)
            results.append(measure(tiny, args.runs, args.threads, frame))
    elif not args.model.is_dir():
        print(f"error: model package {args.model} not found", file=sys.stderr)
        return 2
    else:
        results.append(measure(args.model, args.runs, args.threads, frame))
    print(
        json.dumps(
            {
                "benchmark": "inspector_latency",
                "threads": args.threads,
                "frame": {"size": [width, height], "format": "JPEG", "bytes": len(frame)},
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "note": "measured on a shared machine; rerun on an idle one for final figures",
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training benchmarks: ONNX Runtime latency per 224×224 image, and training time on the CI sample.

    .venv/bin/python bench/training_latency.py [--model-dir PKG] [--runs 300] [--int8]

Without --model-dir it generates the CI-size sample (one product), trains on it (timed) and
measures that package. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]


def main() -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="existing model package")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--int8", action="store_true", help="also measure dynamic int8")
    args = parser.parse_args()

    from PIL import Image

    from inspector.model_package import load_package
    from inspector.preprocess import to_tensor
    from training.evaluate import measure_latency

    result: dict[str, object] = {"benchmark": "training_latency"}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from training.sample_data import generate
            from training.train import train

            data = Path(tmp) / "sample"
            with contextlib.redirect_stdout(io.StringIO()):
                generate(data, seed=0, size="small", products=["brick"])
                started = time.perf_counter()
                train(data / "brick", Path(tmp) / "pkg", threads=2)
            result["train_ci_sample_s"] = round(time.perf_counter() - started, 1)
            result["train_ci_sample"] = "brick, small (30 good + 12 defect, 256 px), 2 threads"
            model_dir = Path(tmp) / "pkg"
        package = load_package(model_dir)
        spec = package.manifest.input
        assert package.golden_path is not None
        tensor = to_tensor(Image.open(package.golden_path), spec)
        result["model"] = package.manifest.ref
        result["model_mb"] = round(package.model_path.stat().st_size / 1e6, 2)
        result["memory_bank"] = package.manifest.metrics.get("memory_bank")
        result["input"] = f"{spec.width}x{spec.height}"
        result["onnxruntime_1_thread"] = measure_latency(
            package.model_path, tensor, args.runs, threads=1
        )
        result["onnxruntime_2_threads"] = measure_latency(
            package.model_path, tensor, args.runs, threads=2
        )
        if args.int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            from training.scoring import onnx_session

            quantised = Path(tmp) / "int8.onnx"
            with contextlib.redirect_stdout(io.StringIO()):  # the quantiser prints shapes
                quantize_dynamic(
                    str(package.model_path), str(quantised), weight_type=QuantType.QInt8
                )
            result["int8_dynamic_1_thread"] = measure_latency(
                quantised, tensor, args.runs, threads=1
            )
            full = onnx_session(package.model_path).run(None, {spec.name: tensor[None]})[0]
            small = onnx_session(quantised).run(None, {spec.name: tensor[None]})[0]
            result["int8_golden_score_diff"] = round(float(abs(full - small).max()), 4)
        result["targets"] = {"p50_ms": 10, "p99_ms": 25, "train_ci_sample_s": 120}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy benchmark: image AUROC per product type on the large sample with a held-out seed.

    .venv/bin/python bench/training_accuracy.py [--seed 20261128] [--size large] [--out FILE]

The data seed is one never used while choosing the model's design. For every product the
package is trained with default settings on the train split, thresholds come from the
validation split, and the figures are from the held-out test split. Prints one JSON document.
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

HELD_OUT_SEED = 20261128


def main() -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="data seed (held out)")
    parser.add_argument("--size", default="large", choices=("small", "large"))
    parser.add_argument("--products", nargs="+", help="subset of product types")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    from training.evaluate import evaluate
    from training.sample_data import PRODUCTS, generate
    from training.train import train

    products = args.products or [p.name for p in PRODUCTS]
    result: dict[str, object] = {
        "benchmark": "training_accuracy",
        "data_seed": args.seed,
        "size": args.size,
        "products": {},
    }
    per_product: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        with contextlib.redirect_stdout(io.StringIO()):
            generate(data, seed=args.seed, size=args.size, products=products)
        for name in products:
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                manifest = train(data / name, Path(tmp) / name, threads=args.threads)
                metrics = evaluate(
                    Path(tmp) / name,
                    data / name,
                    Path(tmp) / f"{name}.json",
                    latency_runs=50,
                    plots=False,
                )
            per_product[name] = {
                "image_auroc": round(metrics["image_auroc"], 4),
                "per_defect_type_auroc": {
                    k: round(v["image_auroc"], 4) for k, v in metrics["per_defect_type"].items()
                },
                "accuracy": round(metrics["accuracy"], 4),
                "precision": round(metrics["precision"], 4),
                "recall": round(metrics["recall"], 4),
                "f1": round(metrics["f1"], 4),
                "manual_rate": round(metrics["manual_rate"], 4),
                "test_images": metrics["images"],
                "validation_auroc": manifest.metrics["validation"]["image_auroc"],
                "latency_p50_ms": round(metrics["latency"]["p50_ms"], 2),
                "score_parity_max_abs_diff": metrics["score_parity_max_abs_diff"],
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(f"{name}: AUROC {metrics['image_auroc']:.4f}", file=sys.stderr, flush=True)
    result["products"] = per_product
    aurocs = [p["image_auroc"] for p in per_product.values()]  # type: ignore[index]
    result["mean_image_auroc"] = round(sum(aurocs) / len(aurocs), 4)
    result["target_mean_image_auroc"] = 0.98
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

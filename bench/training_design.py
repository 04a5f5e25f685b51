"""Design experiments on a development seed: image AUROC of model variants (torch scores).

    nice .venv/bin/python bench/training_design.py [--seed 4242] [--products grass gravel] \\
        [--good 150] [--variant "bank=8192,dims=32,top_k=3,ratio=0.2" ...]

A variant is comma-separated ``key=value`` pairs over the defaults of the previous design:
``size`` (input px, 224), ``taps`` (``2+4+10``), ``bank`` (1024), ``ratio`` (coreset ratio,
0.1), ``dims`` (PCA dimensions, 0 = all), ``top_k`` (1 = maximum), ``sigma`` (0.5), ``norm``
(``ring``, ``cell`` or ``cellmean``), ``gain`` (per-tap factors, e.g. ``1.5+1+1``; all 1),
``coarse`` (bank entries of the first search stage, 0 = exact search only), ``refine``
(cells searched in the whole bank after it, 48) and ``pool`` (coreset pool, 65536). Each
product of the large sample (``--good`` good images instead of its 150) is trained on its
train split and scored on its test split of the *development* seed; the accuracy benchmark's
held-out seed is refused. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "edge_component")]

DEV_SEED = 4242
BASE = {"size": 224, "taps": "2+4+10", "bank": 1024, "ratio": 0.1, "dims": 0, "top_k": 1}
BASE_POOL = 65536  # training.model.DEFAULT_CORESET_POOL
BASE_SIGMA = 0.5
TEXT_KEYS = ("taps", "norm", "gain")


def parse_variant(text: str) -> dict[str, object]:
    """``"bank=8192,dims=32"`` → the full settings over :data:`BASE`."""
    settings: dict[str, object] = dict(
        BASE, sigma=BASE_SIGMA, norm="ring", gain="", coarse=0, refine=48, pool=BASE_POOL
    )
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in settings:
            raise ValueError(f"bad variant item {item!r} (keys: {', '.join(settings)})")
        settings[key] = value if key in TEXT_KEYS else float(value)
    return settings


def run_variant(data: Path, product: str, settings: dict[str, object]) -> dict[str, object]:
    """Train one variant on a product's train split; AUROC overall and per defect type on test."""
    import torch
    from sklearn.metrics import roc_auc_score

    from training import model as patchcore
    from training.dataset import load_dataset, split_dataset
    from training.scoring import load_tensor
    from training.train import input_spec

    spec = input_spec(int(settings["size"]))  # type: ignore[call-overload]
    splits = split_dataset(load_dataset(data / product), 0, 0.2, 0.2)
    train = [load_tensor(s.path, spec) for s in splits.train]
    test = list(splits.test)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        model = patchcore.fit(
            train,
            taps=tuple(int(t) for t in str(settings["taps"]).split("+")),
            coreset_ratio=float(settings["ratio"]),  # type: ignore[arg-type]
            max_bank=int(settings["bank"]),  # type: ignore[call-overload]
            dims=int(settings["dims"]) or None,  # type: ignore[call-overload]
            top_k=int(settings["top_k"]),  # type: ignore[call-overload]
            sigma=float(settings["sigma"]),  # type: ignore[arg-type]
            norm=str(settings["norm"]),
            tap_gain=[float(g) for g in str(settings["gain"] or "").split("+") if g]
            or [1.0] * len(str(settings["taps"]).split("+")),
            coreset_pool=int(settings["pool"]),  # type: ignore[call-overload]
            log=lambda _: None,
            coarse=int(settings["coarse"]),  # type: ignore[call-overload]
            refine=int(settings["refine"]),  # type: ignore[call-overload]
        )
    fit_s = time.perf_counter() - started
    tensors = np.stack([load_tensor(s.path, spec) for s in test])
    with torch.no_grad():
        scores = np.concatenate(
            [
                model(torch.from_numpy(tensors[i : i + 16]))[0].numpy()
                for i in range(0, len(test), 16)
            ]
        )
    labels = np.array([s.label for s in test])
    per_type = {}
    for kind in sorted({s.defect_type for s in test if s.label == 1 and s.defect_type}):
        keep = np.array([s.label == 0 or s.defect_type == kind for s in test])
        per_type[kind] = round(float(roc_auc_score(labels[keep], scores[keep])), 3)
    return {
        "image_auroc": round(float(roc_auc_score(labels, scores)), 4),
        "per_defect_type_auroc": per_type,
        "memory_bank": int(model.bank.shape[0]),
        "fit_s": round(fit_s, 1),
    }


def main() -> int:
    """Run the experiments and print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=DEV_SEED, help="development data seed")
    parser.add_argument("--products", nargs="+", default=["grass", "gravel", "tissue"])
    parser.add_argument("--variant", action="append", help="variant (repeatable; '' = base)")
    parser.add_argument("--good", type=int, help="good images per product (default 150)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from training_accuracy import HELD_OUT_SEED

    if args.seed == HELD_OUT_SEED:
        print(f"error: seed {HELD_OUT_SEED} is the benchmark's held-out seed", file=sys.stderr)
        return 2
    try:
        variants = [(v, parse_variant(v)) for v in (args.variant or [""])]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import torch

    from training.sample_data import PRODUCTS, SIZES, generate, generate_product

    torch.set_num_threads(args.threads)
    result: dict[str, object] = {"benchmark": "training_design", "data_seed": args.seed}
    if args.good is not None:
        result["good_images"] = args.good
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        with contextlib.redirect_stdout(io.StringIO()):
            if args.good is None:
                generate(data, seed=args.seed, size="large", products=args.products)
            else:
                size = replace(SIZES["large"], good=args.good)
                for product in (p for p in PRODUCTS if p.name in args.products):
                    generate_product(product, data / product.name, size, args.seed)
        for text, settings in variants:
            per_product = {p: run_variant(data, p, settings) for p in args.products}
            mean = float(np.mean([r["image_auroc"] for r in per_product.values()]))
            rows.append({"variant": text, "mean_image_auroc": round(mean, 4), **per_product})
            print(f"{text or 'base'}: mean AUROC {mean:.4f}", file=sys.stderr, flush=True)
    result["variants"] = rows
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

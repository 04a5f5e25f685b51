"""Design experiments on a development seed: image AUROC of model variants (torch scores).

    nice .venv/bin/python bench/training_design.py [--seed 4242] [--products grass gravel] \\
        [--good 150] [--variant "bank=8192,dims=32,top_k=3,ratio=0.2" ...]
    nice .venv/bin/python bench/training_design.py --loso [--sources NAME ...] \\
        [--size large] --variant "..." --variant "..."

A variant is comma-separated ``key=value`` pairs over the defaults of the previous design:
``size`` (input px, 224), ``taps`` (``2+4+10``), ``bank`` (1024), ``ratio`` (coreset ratio,
0.1), ``dims`` (PCA dimensions, 0 = all), ``top_k`` (1 = maximum), ``sigma`` (0.5), ``norm``
(``ring``, ``cell`` or ``cellmean``), ``gain`` (per-tap factors, e.g. ``1.5+1+1``; all 1),
``coarse`` (bank entries of the first search stage, 0 = exact search only), ``refine``
(cells searched in the whole bank after it, 48) and ``pool`` (coreset pool, 65536). Each
product of the large sample (``--good`` good images instead of its 150) is trained on its
train split and scored on its test split of the *development* seed; the accuracy benchmark's
held-out seed is refused. Prints one JSON document.

``--loso`` (leave one source out) runs every variant on every data source of the accuracy
benchmark — the synthetic products and the photo sources (``training.photo_data``) — and, for
each source held out in turn, picks the variant best on the mean of the *other* sources and
reports its AUROC on the held-out one next to that source's own best variant (``regret`` is the
difference). The same is done per family (chosen on the synthetic sources, judged on the photo
ones, and back), so a variant that only suits one data generator shows up.
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


def leave_one_out(
    table: dict[str, dict[str, float]], families: dict[str, str]
) -> dict[str, object]:
    """Leave-one-source-out and leave-one-family-out choice of variant over an AUROC table.

    Args:
        table: ``{variant: {source: image AUROC}}``, every variant on the same sources.
        families: ``{source: family}``.
    """
    variants = list(table)
    sources = list(next(iter(table.values())))
    missing = {v: sorted(set(sources) ^ set(table[v])) for v in variants}
    if any(missing.values()) or len(sources) < 2:
        raise ValueError(f"every variant needs the same two or more sources: {missing}")

    def best(chosen_from: list[str]) -> tuple[str, float]:
        means = {v: float(np.mean([table[v][s] for s in chosen_from])) for v in variants}
        winner = max(variants, key=lambda v: (means[v], -variants.index(v)))
        return winner, means[winner]

    def judged(held: list[str], others: list[str]) -> dict[str, object]:
        chosen, on_others = best(others)
        own, own_mean = best(held)
        on_held = float(np.mean([table[chosen][s] for s in held]))
        return {
            "chosen_variant": chosen,
            "chosen_mean_on_others": round(on_others, 4),
            "chosen_auroc": round(on_held, 4),
            "own_best_variant": own,
            "own_best_auroc": round(own_mean, 4),
            "regret": round(own_mean - on_held, 4),
        }

    by_source = {h: judged([h], [s for s in sources if s != h]) for h in sources}
    by_family = {}
    for family in sorted(set(families[s] for s in sources)):
        held = [s for s in sources if families[s] == family]
        others = [s for s in sources if families[s] != family]
        if others:
            by_family[family] = judged(held, others)
    # a tie is a win for each of the tied variants
    wins = {
        v: [s for s in sources if table[v][s] == max(table[w][s] for w in variants)]
        for v in variants
    }
    return {
        "by_source": by_source,
        "by_family": by_family,
        "mean_auroc_of_chosen": round(
            float(np.mean([r["chosen_auroc"] for r in by_source.values()])), 4
        ),
        "mean_regret": round(float(np.mean([r["regret"] for r in by_source.values()])), 4),
        "best_on": wins,
    }


def run_loso(
    variants: list[tuple[str, dict[str, object]]], sources: list[str], seed: int, size: str
) -> dict[str, object]:
    """Every variant on every source (synthetic and photo), then :func:`leave_one_out`."""
    from training import photo_data, sample_data

    families = {p.name: "synthetic" for p in sample_data.PRODUCTS}
    families.update({name: "photo" for name in photo_data.SOURCE_NAMES})
    rows: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        with contextlib.redirect_stdout(io.StringIO()):
            synthetic = [s for s in sources if families[s] == "synthetic"]
            photo = [s for s in sources if families[s] == "photo"]
            if synthetic:
                sample_data.generate(data, seed=seed, size=size, products=synthetic)
            if photo:
                photo_data.generate(data, seed=seed, size=size, sources=photo)
        for text, settings in variants:
            rows[text] = {s: run_variant(data, s, settings) for s in sources}
            mean = float(np.mean([r["image_auroc"] for r in rows[text].values()]))  # type: ignore[index]
            print(
                f"{text or 'base'}: mean AUROC {mean:.4f} on {len(sources)} sources",
                file=sys.stderr,
                flush=True,
            )
    table = {v: {s: float(r["image_auroc"]) for s, r in row.items()} for v, row in rows.items()}  # type: ignore[index]
    return {
        "sources": {s: families[s] for s in sources},
        "variants": [{"variant": v, **row} for v, row in rows.items()],
        "leave_one_out": leave_one_out(table, {s: families[s] for s in sources}),
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
    parser.add_argument(
        "--loso",
        action="store_true",
        help="leave one source out: every variant on every synthetic and photo source",
    )
    parser.add_argument(
        "--sources", nargs="+", metavar="NAME", help="with --loso: subset of the sources"
    )
    parser.add_argument(
        "--size", choices=("small", "large"), default="large", help="with --loso: data size"
    )
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

    torch.set_num_threads(args.threads)
    result: dict[str, object] = {"benchmark": "training_design", "data_seed": args.seed}
    if args.loso:
        from training_accuracy import BenchError, choose_sources

        try:
            chosen = [s for _, s in choose_sources(("synthetic", "photo"), args.sources)]
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if len(chosen) < 2:
            print("error: --loso needs at least two sources", file=sys.stderr)
            return 2
        result.update(mode="leave_one_source_out", size=args.size)
        result.update(run_loso(variants, chosen, args.seed, args.size))
        print(json.dumps(result, indent=2))
        return 0

    from training.sample_data import PRODUCTS, SIZES, generate, generate_product

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

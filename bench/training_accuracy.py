"""Accuracy benchmark: every candidate model and the one kept, per data source, held-out seed.

    nice .venv/bin/python bench/training_accuracy.py [--families synthetic photo] \\
        [--sources NAME ...] [--seed 20261128] [--size large] [--photo-size plant] \\
        [--threads 2] [--align auto|similarity|none] [--out FILE]

Two families of data sources, both generated offline from the seed: ``synthetic``, the sample
products with drawn defects (``training.sample_data``: brick, grass, gravel, tissue), and
``photo``, parts cut from real photographs whose own variation exceeds their defects
(``training.photo_data``: coins, print, retina, stars, stereo). The data seed is one never used
while choosing the model's design. Each source is trained with default settings on its train
split (``--align`` overrides train's ``--align`` for every source, for a side-by-side run of
registration on and off); thresholds come from the validation split; every candidate
package training left (``<model>/candidates/<name>/``, or the package itself when there are
none) and the kept package are evaluated with ``training.evaluate`` on the same held-out test split: image AUROC with its
95 % bootstrap interval, and accuracy and recall at the package's calibrated reject threshold,
beside each candidate's validation AUROC gain over the anomaly model (``validation_gain``, with
its interval: what the one kept was chosen on), and whether the source was registered to its
part's pose (``align``: the decision and its figures).

Summaries: the synthetic family's mean AUROC against 0.98, the photo family's mean AUROC and
accuracy against 0.95 and 0.88, and ``targets_met`` over the families run. Progress goes to
stderr; prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]

HELD_OUT_SEED = 20261128
FAMILIES = ("synthetic", "photo")
TARGETS: dict[str, dict[str, float]] = {
    "synthetic": {"mean_image_auroc": 0.98},
    "photo": {"mean_image_auroc": 0.95, "mean_accuracy": 0.88},
}
DEFAULT_MODEL = "patchcore"
CANDIDATES = "candidates"


class BenchError(Exception):
    """A model folder or choice of sources the benchmark cannot work with."""


def family_sources() -> dict[str, tuple[str, ...]]:
    """The data sources of each family, by name."""
    from training.photo_data import SOURCE_NAMES
    from training.sample_data import PRODUCTS

    return {"synthetic": tuple(p.name for p in PRODUCTS), "photo": SOURCE_NAMES}


def choose_sources(families: Sequence[str], names: Sequence[str] | None) -> list[tuple[str, str]]:
    """(family, source) pairs to run: every source of ``families``, or the named ones."""
    known = family_sources()
    chosen = [(f, s) for f in families for s in known[f]]
    if not names:
        return chosen
    unknown = sorted(set(names) - {s for _, s in chosen})
    if unknown:
        raise BenchError(
            f"unknown source(s) {unknown} in families {list(families)}; "
            f"known: {[s for _, s in chosen]}"
        )
    return [(f, s) for f, s in chosen if s in names]


def _metrics(model_dir: Path) -> dict[str, Any]:
    from inspector.model_package import load_package

    return dict(load_package(model_dir).manifest.metrics)


def candidate_packages(model_dir: Path) -> dict[str, Path]:
    """Every candidate package training left: ``candidates/<name>/``, else the package itself."""
    folder = model_dir / CANDIDATES
    if not folder.is_dir():
        return {str(_metrics(model_dir).get("model", DEFAULT_MODEL)): model_dir}
    found, incomplete = {}, []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (sub / "manifest.json").is_file() and (sub / "model.onnx").is_file():
            found[sub.name] = sub
        else:
            incomplete.append(sub.name)
    if incomplete or not found:
        raise BenchError(
            f"{folder}: "
            + (
                f"candidate(s) {incomplete} lack manifest.json or model.onnx"
                if incomplete
                else "no candidate package in it"
            )
        )
    return found


def selection(model_dir: Path, candidates: dict[str, Path]) -> dict[str, Any]:
    """``metrics.selection`` of the kept package (what was kept and why), checked."""
    recorded = _metrics(model_dir).get("selection")
    if recorded is None:
        if len(candidates) > 1:
            raise BenchError(
                f"{model_dir}/manifest.json: {len(candidates)} candidates but no "
                "metrics.selection naming the one kept"
            )
        (only,) = candidates
        return {"kept": only, "criterion": "the only candidate", "candidates": {}}
    kept = recorded.get("kept")
    if kept not in candidates:
        raise BenchError(
            f"{model_dir}/manifest.json: metrics.selection.kept {kept!r} is not among the "
            f"candidates {sorted(candidates)}"
        )
    return dict(recorded)


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's figures from ``training.evaluate`` metrics."""
    intervals = metrics["confidence_intervals"]

    def ci(name: str) -> list[float] | None:
        bounds = intervals[name]["ci95"]
        return None if bounds is None else [round(float(b), 4) for b in bounds]

    return {
        "image_auroc": _rounded(metrics["image_auroc"]),
        "image_auroc_ci95": ci("image_auroc"),
        "accuracy": _rounded(metrics["accuracy"]),
        "accuracy_ci95": ci("accuracy"),
        "recall": _rounded(metrics["recall"]),
        "recall_ci95": ci("recall"),
        "f1": _rounded(metrics["f1"]),
        "manual_rate": _rounded(metrics["manual_rate"]),
        "pixel_auroc": _rounded(metrics["pixel_auroc"]),
        "per_defect_type_auroc": {
            k: _rounded(v["image_auroc"], 3) for k, v in metrics["per_defect_type"].items()
        },
        "per_defect_type_recall": {
            k: _rounded(v["recall"], 3) for k, v in metrics["per_defect_type"].items()
        },
        "thresholds": metrics["thresholds"],
        "latency_p50_ms": _rounded(metrics.get("latency", {}).get("p50_ms"), 2),
    }


def evaluate_candidates(
    model_dir: Path, data: Path, work: Path, *, resamples: int = 1000
) -> dict[str, Any]:
    """Evaluate every candidate and the kept package on the test split of ``data``."""
    from training.evaluate import evaluate

    candidates = candidate_packages(model_dir)
    chosen = selection(model_dir, candidates)

    def run(package: Path, name: str) -> dict[str, Any]:
        metrics = evaluate(
            package,
            data,
            work / f"{name}.json",
            split="test",
            latency_runs=20,
            parity_images=0,  # tests check parity; a non-PatchCore candidate has no torch twin
            plots=False,
            resamples=resamples,
        )
        return {"test_images": metrics["images"], **figures(metrics)}

    models = {}
    for name, package in candidates.items():
        models[name] = run(package, f"candidate-{name}")
        validation = chosen.get("candidates", {}).get(name)
        if validation is None and package == model_dir:
            validation = _metrics(model_dir).get("validation")
        models[name]["validation"] = validation
    # without candidates/ the package is its only candidate: the same files, evaluated once
    kept = dict(models[chosen["kept"]]) if candidates == {chosen["kept"]: model_dir} else None
    if kept is None:
        kept = run(model_dir, "kept")
    kept.pop("validation", None)
    return {
        "kept": chosen["kept"],
        "criterion": chosen.get("criterion"),
        # each candidate's validation AUROC gain over the anomaly model and its interval
        "validation_gain": chosen.get("auroc_gain_over_patchcore", {}),
        "models": models,
        "kept_model": kept,
        # registration to the part's pose (``train --align``): whether and why, the figures
        "align": _align_summary(_metrics(model_dir).get("align")),
    }


def _align_summary(figures: Any) -> dict[str, Any] | None:
    """``metrics.align`` without its rule text (None for a package trained before it)."""
    if not isinstance(figures, dict):
        return None
    return {k: v for k, v in figures.items() if k != "rule"}


def summarise(sources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per family: the kept models' mean AUROC (and accuracy) against the targets."""
    out: dict[str, Any] = {}
    for family in FAMILIES:
        kept = [s["kept_model"] for s in sources.values() if s["family"] == family]
        if not kept:
            continue
        aurocs = [k["image_auroc"] for k in kept]
        means = {
            "mean_image_auroc": None if None in aurocs else round(sum(aurocs) / len(aurocs), 4),
            "mean_accuracy": round(sum(k["accuracy"] for k in kept) / len(kept), 4),
        }
        targets = TARGETS[family]
        out[family] = {
            "sources": len(kept),
            **means,
            **{f"target_{k}": v for k, v in targets.items()},
            "met": all(means[k] is not None and means[k] >= v for k, v in targets.items()),
        }
    return out


def _progress(message: str) -> None:
    print(f"[training_accuracy {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _line(name: str, f: dict[str, Any]) -> str:
    ci = f["image_auroc_ci95"]
    interval = "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return (
        f"{name}: AUROC {f['image_auroc']}{interval}, accuracy {f['accuracy']:.3f}, "
        f"recall {f['recall']:.3f}"
    )


def run_source(
    family: str,
    name: str,
    data: Path,
    work: Path,
    *,
    threads: int,
    resamples: int,
    align: str | None = None,
) -> dict[str, Any]:
    """Train ``data`` with the defaults (``align``: train's ``--align``, None its default) and
    evaluate what training left."""
    from training.train import DEFAULT_ALIGN, train

    started = time.perf_counter()
    model_dir = work / "model"
    _progress(f"{family}/{name}: training")
    with contextlib.redirect_stdout(io.StringIO()):
        train(data, model_dir, threads=threads, align=align or DEFAULT_ALIGN)
        trained = time.perf_counter() - started
        result = evaluate_candidates(model_dir, data, work, resamples=resamples)
    for candidate, f in result["models"].items():
        _progress(f"{family}/{name}: " + _line(candidate, f))
    for candidate, gain in result["validation_gain"].items():
        if isinstance(gain, dict) and gain.get("ci95"):
            low, high = gain["ci95"]
            _progress(
                f"{family}/{name}: {candidate}: validation gain {gain['value']:+.4f} "
                f"[{low:+.3f}, {high:+.3f}]"
            )
    _progress(f"{family}/{name}: " + _line(f"kept ({result['kept']})", result["kept_model"]))
    align = result["align"]
    if isinstance(align, dict):
        aligned = "yes" if align.get("aligned") else "no"
        _progress(f"{family}/{name}: align: {aligned} ({align.get('reason')})")
    return {
        "family": family,
        **result,
        "train_seconds": round(trained, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="data seed (held out)")
    parser.add_argument(
        "--size", default="large", choices=("small", "large"), help="data size of both families"
    )
    from training.photo_data import SIZES as PHOTO_SIZES  # numpy only: no thread pool yet

    parser.add_argument(
        "--photo-size",
        choices=sorted(PHOTO_SIZES),
        help="the photo family's size instead (plant: 300 good + 300 labelled defects a source)",
    )
    parser.add_argument(
        "--families", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="data families"
    )
    parser.add_argument("--sources", nargs="+", metavar="NAME", help="subset of the sources")
    parser.add_argument(
        "--threads", type=int, choices=(1, 2), default=2, help="torch threads (ORT uses 1)"
    )
    parser.add_argument(
        "--bootstrap-resamples", type=int, default=1000, help="resamples for the 95 %% intervals"
    )
    parser.add_argument(
        "--align",
        choices=("auto", "similarity", "none"),
        help="train's --align for every source (default: train's own, auto)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    photo_size = args.photo_size or args.size
    try:
        chosen = choose_sources(args.families, args.sources)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # before torch loads: its intra-op pool and OpenMP's follow these
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)

    from training import photo_data, sample_data

    started = time.perf_counter()
    sources: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family, name in chosen:
            data = Path(tmp) / family
            with contextlib.redirect_stdout(io.StringIO()):
                if family == "synthetic":
                    sample_data.generate(data, seed=args.seed, size=args.size, products=[name])
                else:
                    photo_data.generate(data, seed=args.seed, size=photo_size, sources=[name])
            try:
                sources[name] = run_source(
                    family,
                    name,
                    data / name,
                    Path(tmp) / "runs" / name,
                    threads=args.threads,
                    resamples=args.bootstrap_resamples,
                    align=args.align,
                )
            except BenchError as exc:
                print(f"error: {family}/{name}: {exc}", file=sys.stderr)
                return 2
    summary = summarise(sources)
    result: dict[str, Any] = {
        "benchmark": "training_accuracy",
        "data_seed": args.seed,
        "size": args.size,
        "photo_size": photo_size,
        "align": args.align or "auto",
        "families": sorted({f for f, _ in chosen}, key=FAMILIES.index),
        "sources": sources,
        "summary": summary,
        "targets_met": all(s["met"] for s in summary.values()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if "synthetic" in summary:  # the figure this benchmark has always printed
        result["mean_image_auroc"] = summary["synthetic"]["mean_image_auroc"]
        result["target_mean_image_auroc"] = TARGETS["synthetic"]["mean_image_auroc"]
    for family, figures_ in summary.items():
        _progress(f"{family}: {json.dumps(figures_)}")
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench/training_accuracy.py: which packages it evaluates, on which split, and its summaries."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module."""
    path = REPO / "bench" / "training_accuracy.py"
    spec = importlib.util.spec_from_file_location("training_accuracy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["training_accuracy"] = module
    spec.loader.exec_module(module)
    return module


def _edit_manifest(package: Path, change: dict[str, Any]) -> None:
    path = package / "manifest.json"
    doc = json.loads(path.read_text())
    for key, value in change.items():
        if key == "metrics":
            doc["metrics"].update(value)
        else:
            doc[key] = value
    path.write_text(json.dumps(doc, indent=2))


def test_a_package_without_candidates_is_its_only_candidate(
    bench: ModuleType, package: Path
) -> None:
    candidates = bench.candidate_packages(package)
    assert candidates == {"patchcore": package}
    assert bench.selection(package, candidates)["kept"] == "patchcore"


def test_every_candidate_and_the_kept_package_are_evaluated_on_one_test_split(
    bench: ModuleType, package: Path, sample: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(package, model)
    shutil.copytree(package, model / "candidates" / "patchcore")
    # a second candidate that rejects everything: its figures must be its own
    shutil.copytree(package, model / "candidates" / "eager")
    eager = {"thresholds": {"reject": -1000.0, "manual": -1000.0}}
    _edit_manifest(model / "candidates" / "eager", eager)
    selection = {
        "kept": "eager",
        "criterion": "validation AUROC",
        "candidates": {"patchcore": {"image_auroc": 0.9}, "eager": {"image_auroc": 0.9}},
        "auroc_gain_over_patchcore": {"eager": {"value": 0.0, "ci95": [-0.1, 0.1]}},
    }
    _edit_manifest(model, {**eager, "metrics": {"selection": selection}})

    result = bench.evaluate_candidates(model, sample / "brick", tmp_path / "work", resamples=50)

    assert result["kept"] == "eager" and result["criterion"] == "validation AUROC"
    assert result["validation_gain"] == {"eager": {"value": 0.0, "ci95": [-0.1, 0.1]}}
    models = result["models"]
    assert sorted(models) == ["eager", "patchcore"]
    assert models["eager"]["test_images"] == models["patchcore"]["test_images"]
    assert "held-out test split" in models["eager"]["test_images"]["selection"]
    images = models["eager"]["test_images"]
    assert images["good"] > 0 and images["defect"] > 0
    assert models["eager"]["recall"] == 1.0
    assert models["eager"]["accuracy"] == round(images["defect"] / images["evaluated"], 4)
    assert models["patchcore"]["accuracy"] > models["eager"]["accuracy"]
    assert models["eager"]["validation"] == {"image_auroc": 0.9}
    # the same graph: the same ranking of the images, whatever the thresholds
    assert models["eager"]["image_auroc"] == models["patchcore"]["image_auroc"]
    for figures in (*models.values(), result["kept_model"]):
        low, high = figures["image_auroc_ci95"]
        assert low <= figures["image_auroc"] <= high
    timing = ("test_images", "validation", "latency_p50_ms")
    kept = {k: v for k, v in result["kept_model"].items() if k not in timing}
    assert result["kept_model"]["test_images"] == images
    assert kept == {k: v for k, v in models["eager"].items() if k not in timing}


def test_a_kept_name_that_is_no_candidate_is_an_error(
    bench: ModuleType, package: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(package, model)
    shutil.copytree(package, model / "candidates" / "patchcore")
    _edit_manifest(model, {"metrics": {"selection": {"kept": "supervised", "candidates": {}}}})
    with pytest.raises(bench.BenchError, match=r"selection.kept 'supervised' is not among"):
        bench.selection(model, bench.candidate_packages(model))


def test_a_candidate_without_its_package_files_is_an_error(
    bench: ModuleType, package: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(package, model)
    (model / "candidates" / "half").mkdir(parents=True)
    with pytest.raises(bench.BenchError, match=r"candidate\(s\) \['half'\] lack manifest.json"):
        bench.candidate_packages(model)


def test_several_candidates_need_a_selection_record(
    bench: ModuleType, package: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(package, model)
    for name in ("a", "b"):
        shutil.copytree(package, model / "candidates" / name)
    with pytest.raises(bench.BenchError, match="2 candidates but no metrics.selection"):
        bench.selection(model, bench.candidate_packages(model))


def _source(family: str, auroc: float, accuracy: float) -> dict[str, Any]:
    return {"family": family, "kept_model": {"image_auroc": auroc, "accuracy": accuracy}}


def test_family_summaries_hold_each_family_to_its_own_targets(bench: ModuleType) -> None:
    summary = bench.summarise(
        {
            "brick": _source("synthetic", 0.99, 0.95),
            "grass": _source("synthetic", 0.975, 0.9),
            "coins": _source("photo", 0.97, 0.90),
            "print": _source("photo", 0.95, 0.85),
        }
    )
    assert summary["synthetic"]["mean_image_auroc"] == 0.9825
    assert summary["synthetic"]["met"] is True
    assert summary["photo"]["mean_image_auroc"] == 0.96
    assert (
        summary["photo"]["mean_accuracy"] == 0.875
    )  # under 0.88: not met, AUROC alone is not enough
    assert summary["photo"]["met"] is False


def test_unknown_source_is_one_clear_error(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--families", "photo", "--sources", "brick"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown source(s) ['brick'] in families")


def test_the_photo_family_can_take_a_plant_sized_folder_while_the_synthetic_keeps_its_size(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import photo_data, sample_data

    generated: dict[str, tuple[int, int]] = {}

    def generate(item: Any, out: Path, size: Any, seed: int) -> dict[str, Any]:
        generated[item.name] = (size.good, size.per_defect_type)
        return {}

    monkeypatch.setattr(sample_data, "generate_product", generate)
    monkeypatch.setattr(photo_data, "generate_source", generate)

    def run_source(family: str, name: str, data: Path, work: Path, **_: Any) -> dict[str, Any]:
        return {"family": family, "kept_model": {"image_auroc": 0.9, "accuracy": 0.8}}

    monkeypatch.setattr(bench, "run_source", run_source)
    argv = ["--sources", "brick", "coins", "--size", "large", "--photo-size", "plant"]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    # the scenario: several hundred good and several hundred labelled defects a source
    assert generated["coins"] == (300, 75)
    assert generated["brick"] == (150, 12)  # the synthetic family keeps --size
    assert (result["size"], result["photo_size"]) == ("large", "plant")

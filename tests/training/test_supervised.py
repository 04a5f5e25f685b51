"""The supervised candidate: defect splits, the head, selection by validation, packaging."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from inspector.model_package import load_package
from training.dataset import (
    MIN_SUPERVISED_DEFECTS,
    default_defect_train_fraction,
    load_dataset,
    split_dataset,
)
from training.evaluate import evaluate, torch_parity
from training.sample_data import PRODUCTS, Size, generate_product
from training.scoring import load_tensor
from training.train import _Candidate, select_candidate, train
from training.train import main as train_main

# 16 good and 4 of each of the six defect types: 24 defects, enough for the supervised candidate
LABELLED = Size(good=16, per_defect_type=4, side=128)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled") / "brick"
    (product,) = [p for p in PRODUCTS if p.name == "brick"]
    generate_product(product, root, LABELLED, seed=5)
    return root


@pytest.fixture(scope="module")
def trained(labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "brick"
    with contextlib.redirect_stdout(io.StringIO()):
        train(labelled, out, seed=1, max_bank=256)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_defect_share_for_training_keeps_every_type_in_validation_and_test(
    labelled: Path,
) -> None:
    dataset = load_dataset(labelled)
    assert len(dataset.defects) >= MIN_SUPERVISED_DEFECTS
    assert default_defect_train_fraction(dataset) == 0.5
    splits = split_dataset(dataset, seed=3, defect_train_fraction=0.5)
    for kind in dataset.defect_types:
        counts = [
            sum(1 for s in part if s.label == 1 and s.defect_type == kind)
            for part in (splits.train, splits.validation, splits.test)
        ]
        assert counts == [2, 1, 1], (kind, counts)
    rels = [s.rel for part in (splits.train, splits.validation, splits.test) for s in part]
    assert len(rels) == len(set(rels)) == len(dataset.samples)
    # without a defect share, train holds good images only (the split older packages used)
    plain = split_dataset(dataset, seed=3)
    assert all(s.label == 0 for s in plain.train)
    assert {s.rel for s in plain.train} == {s.rel for s in splits.train if s.label == 0}


def test_few_defects_give_training_none(tmp_path: Path) -> None:
    (product,) = [p for p in PRODUCTS if p.name == "brick"]
    generate_product(product, tmp_path / "few", Size(good=12, per_defect_type=1, side=96), 2)
    assert default_defect_train_fraction(load_dataset(tmp_path / "few")) == 0.0


def test_auto_trains_both_candidates_and_keeps_the_one_validation_prefers(trained: Path) -> None:
    kept = load_package(trained)
    selection = kept.manifest.metrics["selection"]
    assert set(selection["candidates"]) == {"patchcore", "supervised"}
    assert kept.manifest.metrics["model"] == selection["kept"]
    figures = {
        name: (c["validation_auroc"], c["validation_recall"])
        for name, c in selection["candidates"].items()
    }
    assert figures[selection["kept"]] == max(figures.values())
    source = trained / "candidates" / selection["kept"]
    assert _sha(trained / "model.onnx") == _sha(source / "model.onnx")
    for name in ("patchcore", "supervised"):
        candidate = load_package(trained / "candidates" / name)
        assert candidate.manifest.metrics["model"] == name
        assert candidate.manifest.version == kept.manifest.version
    record = json.loads((trained / "training.json").read_text())
    assert record["split"]["defect_train_fraction"] == 0.5
    assert record["split"]["counts"]["train"]["defect"] == 12


def test_selection_is_by_validation_auroc_then_recall_then_the_anomaly_model(
    tmp_path: Path,
) -> None:
    def candidate(name: str, auroc: float | None, recall: float | None) -> _Candidate:
        return _Candidate(name, tmp_path, None, auroc, recall)  # type: ignore[arg-type]

    assert (
        select_candidate(
            [candidate("patchcore", 0.9, 0.5), candidate("supervised", 0.95, 0.1)]
        ).name
        == "supervised"
    )
    assert (
        select_candidate(
            [candidate("patchcore", 0.95, 0.6), candidate("supervised", 0.95, 0.5)]
        ).name
        == "patchcore"
    )
    assert (
        select_candidate([candidate("patchcore", 1.0, 1.0), candidate("supervised", 1.0, 1.0)]).name
        == "patchcore"
    )


def test_supervised_package_scores_the_same_in_torch_and_onnx_runtime(
    trained: Path, labelled: Path
) -> None:
    package = load_package(trained / "candidates" / "supervised")
    spec = package.manifest.input
    tensors = [load_tensor(p, spec) for p in sorted((labelled / "defect").rglob("*.png"))[:4]]
    parity = torch_parity(package, tensors)
    assert parity is not None and parity <= 1e-4


def test_every_candidate_evaluates_on_the_same_held_out_test_split(
    trained: Path, labelled: Path, tmp_path: Path
) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        figures = {
            name: evaluate(
                trained / "candidates" / name,
                labelled,
                tmp_path / f"{name}.json",
                latency_runs=2,
                plots=False,
            )
            for name in ("patchcore", "supervised")
        }
    images = {name: [row["file"] for row in m["per_image"]] for name, m in figures.items()}
    assert images["patchcore"] == images["supervised"]
    assert figures["supervised"]["images"]["defect"] == 6
    assert figures["supervised"]["score_parity_max_abs_diff"] <= 1e-4


def test_anomaly_distance_always_raises_the_cell_logit(trained: Path) -> None:
    from training.evaluate import torch_model_from_package

    model = torch_model_from_package(load_package(trained / "candidates" / "supervised"))
    raw = torch.randn(2, int(model.anomaly.extractor.weight.numel()), 4, 4)
    anomaly = torch.randn(2, 1, 4, 4)
    lower = model.cells(raw, anomaly)
    higher = model.cells(raw, anomaly + 0.5)
    assert bool((higher > lower).all())


def test_leave_one_out_distances_ignore_an_image_s_own_bank_entries(
    trained: Path, labelled: Path
) -> None:
    from training.evaluate import torch_model_from_package
    from training.supervised import EXACT, _leave_one_out, features

    model = torch_model_from_package(load_package(trained / "candidates" / "patchcore"))
    spec = load_package(trained).manifest.input
    bank = model.bank
    own_counts = {}
    for path in sorted((labelled / "good").glob("*.png")):
        x = torch.from_numpy(load_tensor(path, spec)[None])
        with torch.no_grad():
            patches = model.extractor(x)[0].flatten(1).t()
        own_counts[path] = int((torch.cdist(patches, bank).square().amin(dim=0) < EXACT).sum())
    in_bank = [p for p, n in own_counts.items() if n > 0]
    outside = [p for p, n in own_counts.items() if n == 0]
    assert in_bank and outside  # training images feed the bank, validation/test ones do not
    for path, moved in ((in_bank[0], True), (outside[0], False)):
        x = torch.from_numpy(load_tensor(path, spec)[None])
        with torch.no_grad():
            _, plain = features(model, x)
            _, loo = _leave_one_out(model, x)
        assert bool((loo >= plain - 1e-4).all())
        if moved:  # its own patches made it look more normal than a new part would
            assert float((loo - plain).mean()) > 0.1
        else:
            torch.testing.assert_close(loo, plain, atol=1e-4, rtol=1e-4)


def test_supervised_without_training_defects_is_one_clear_line(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = train_main(
        [
            "--data",
            str(labelled),
            "--model-dir",
            str(tmp_path / "out"),
            "--model",
            "supervised",
            "--defect-train-fraction",
            "0",
            "--max-bank",
            "64",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "needs defect images in the training split" in err
    assert "\n" not in err


def test_model_component_leaves_the_candidates_out(trained: Path, tmp_path: Path) -> None:
    from stacks.components import build_initial_model

    artifact = build_initial_model(tmp_path / "built", package=trained)
    with zipfile.ZipFile(artifact.artifact) as archive:
        names = archive.namelist()
    assert "model.onnx" in names and "manifest.json" in names
    assert [n for n in names if n.startswith("candidates")] == []

"""The supervised candidate: defect splits, the head, selection by validation, packaging."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
from training.train import PLAIN_SELECTION_DEFECTS, _Candidate, select_candidate, train
from training.train import main as train_main

from .conftest import assert_onnx_scores_alike

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
        # float: the parity checks below hold the supervised graph's export to the torch model
        # the two-stage search as by default (coarse entries < bank), on a bank small to build
        train(labelled, out, seed=1, max_bank=256, coarse=64, precision="float")
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
    gain = selection["auroc_gain_over_patchcore"]["supervised"]
    low, high = gain["ci95"]
    assert low <= gain["value"] <= high and gain["resamples"] == 1000
    # 12 training defects: below the plain rule's count, the gain must clear the noise
    assert selection["train_defect_images"] == 12 < PLAIN_SELECTION_DEFECTS
    assert selection["kept"] == ("supervised" if low > 0 else "patchcore")
    aurocs = {n: c["validation_auroc"] for n, c in selection["candidates"].items()}
    assert gain["value"] == pytest.approx(aurocs["supervised"] - aurocs["patchcore"], abs=1e-6)
    source = trained / "candidates" / selection["kept"]
    assert _sha(trained / "model.onnx") == _sha(source / "model.onnx")
    for name in ("patchcore", "supervised"):
        candidate = load_package(trained / "candidates" / name)
        assert candidate.manifest.metrics["model"] == name
        assert candidate.manifest.version == kept.manifest.version
    record = json.loads((trained / "training.json").read_text())
    assert record["split"]["defect_train_fraction"] == 0.5
    assert record["split"]["counts"]["train"]["defect"] == 12


def test_the_supervised_candidate_is_kept_only_when_validation_shows_it_better(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    good = rng.normal(0.0, 1.0, 40)
    defect = rng.normal(0.0, 1.0, 20)

    def candidate(name: str, good: np.ndarray, defect: np.ndarray) -> _Candidate:
        return _Candidate(name, tmp_path, None, None, None, good, defect)  # type: ignore[arg-type]

    chance = candidate("patchcore", good, defect)  # AUROC about 0.5
    clear = candidate("supervised", good, defect + 3.0)  # AUROC about 1
    kept, gains = select_candidate([chance, clear])
    assert kept is clear and gains["supervised"]["ci95"][0] > 0
    # one defect moved above one good image more: a gain no validation set this small shows
    nudged = defect.copy()
    nudged[np.argmin(nudged)] += 0.5
    kept, gains = select_candidate([chance, candidate("supervised", good, nudged)])
    assert kept is chance and gains["supervised"]["value"] > 0
    assert gains["supervised"]["ci95"][0] <= 0
    # a head trained on enough defects is kept on the higher validation AUROC alone
    for trained_on, expected in (
        (PLAIN_SELECTION_DEFECTS - 1, "patchcore"),
        (PLAIN_SELECTION_DEFECTS, "supervised"),
    ):
        kept, _ = select_candidate(
            [chance, candidate("supervised", good, nudged)], train_defects=trained_on
        )
        assert kept.name == expected, trained_on
    # worse on validation: never kept, however many defects the head saw
    for trained_on in (0, 10 * PLAIN_SELECTION_DEFECTS):
        kept, _ = select_candidate(
            [candidate("patchcore", good, defect + 3.0), chance], train_defects=trained_on
        )
        assert kept.name == "patchcore"
    # equal on validation: the anomaly model
    same = candidate("supervised", good, defect)
    kept, gains = select_candidate([chance, same], train_defects=PLAIN_SELECTION_DEFECTS)
    assert kept is chance and gains["supervised"]["value"] == 0
    # no validation defect: nothing to compare, the anomaly model
    empty = np.zeros(0)
    kept, gains = select_candidate(
        [candidate("patchcore", good, empty), candidate("supervised", good, empty)]
    )
    assert kept.name == "patchcore" and gains["supervised"]["ci95"] is None


def test_supervised_package_scores_the_same_in_torch_and_onnx_runtime(
    trained: Path, labelled: Path
) -> None:
    package = load_package(trained / "candidates" / "supervised")
    spec = package.manifest.input
    tensors = [load_tensor(p, spec) for p in sorted((labelled / "defect").rglob("*.png"))[:4]]
    parity = torch_parity(package, tensors)
    assert parity is not None and parity <= 1e-4


def test_the_supervised_package_runs_the_anomaly_model_s_two_stage_search(trained: Path) -> None:
    from training.evaluate import torch_model_from_package

    package = load_package(trained / "candidates" / "supervised")
    assert package.manifest.metrics["search"]["coarse"] == 64
    # 12 training defects, below the head's bound: all of them trained it
    assert package.manifest.metrics["head_defect_images"] == 12
    model = torch_model_from_package(package)
    assert model.anomaly.coarse == 64


class _Features(torch.nn.Module):
    """Stand-in extractor: the input is its balanced features (8 channels); the projection keeps
    channels 1–4, so channel 0 moves the head and never the distance."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.ones(1, 8, 1, 1)
        self.projection = torch.zeros(4, 8, 1, 1)
        self.projection[torch.arange(4), torch.arange(1, 5)] = 1.0

    def balanced(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        return F.conv2d(feats, self.projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.balanced(x))


def _heads(  # noqa: ANN202 - two models and data
    seed: int, refine: int, sigma: float = 0.01, weight: float = 2.0, center: float | None = None
):
    """An exact-search supervised model, the same head on a two-stage search (40 coarse
    entries), and a batch; the head reads channel 0 alone, the distance's weight is
    ``weight``, every cell's mean ``center`` (random below 1 when None)."""
    import math

    from training.model import PatchCoreModel
    from training.supervised import SupervisedModel

    generator = torch.Generator().manual_seed(seed)
    extractor = _Features()
    bank = torch.randn(600, 4, generator=generator)
    x = torch.randn(2, 8, 6, 7, generator=generator)
    x[:, 0] = 0.0
    x[0, 1:5, 2, 3] += 6.0  # a patch far from every bank entry
    means = torch.rand(1, 1, 6, 7, generator=generator) if center is None else None
    scale = torch.rand(1, 1, 6, 7, generator=generator) + 0.5
    if means is None:
        means = torch.full((1, 1, 6, 7), float(center))
        # a patch of the second image that is a bank entry far from the coarse ones: its bound
        # ranks it first, its exact distance is 0
        bank[500] = 10.0
        x[1, 1:5, 3, 3] = 10.0

    def anomaly(coarse: int) -> PatchCoreModel:
        return PatchCoreModel(
            extractor, bank, sigma=sigma, center=means, scale=scale, top_k=2,  # type: ignore[arg-type]
            coarse=coarse, refine=refine,
        )  # fmt: skip

    exact = SupervisedModel(anomaly(0), hidden=4)
    with torch.no_grad():
        exact.hidden.weight.zero_()
        exact.hidden.weight[0, 0] = 1.0
        exact.hidden.bias.zero_()
        exact.out.weight.zero_()
        exact.out.weight[0, 0] = 2.0
        exact.out.bias.zero_()
        exact.anomaly_gain.fill_(math.log(math.expm1(weight - 0.5)))  # weight = 0.5 + softplus
    assert exact.anomaly_weight() == pytest.approx(weight)
    return exact.eval(), exact.searching(anomaly(40)), x


def _raw_logits(model, x: torch.Tensor, exact: bool):  # noqa: ANN001, ANN202
    """Cell logits before smoothing: the two-stage search's raw map, or the exact one."""
    anomaly = model.anomaly
    with torch.no_grad():
        raw = anomaly.extractor.balanced(x)
        projected = anomaly.extractor.project(raw)
        head, weight = model.head(raw), model.weight()
        if exact:
            patches = projected.flatten(2).transpose(1, 2)
            h, w = projected.shape[-2:]
            distances = torch.cdist(patches, anomaly.bank).amin(dim=2).reshape(-1, 1, h, w)
        else:
            distances = anomaly.two_stage(projected, head / weight)
    return weight * (distances - anomaly.center) / anomaly.scale + head, distances


def test_two_stage_supervised_refines_the_cells_the_head_lifts() -> None:
    exact, two_stage, x = _heads(seed=3, refine=5, weight=1.25)
    model = two_stage.anomaly
    patches = x.flatten(2).transpose(1, 2)[:, :, 1:5]
    upper = torch.cdist(patches, model.bank[:40]).amin(dim=2).reshape(2, 1, 6, 7)
    standard_upper = (upper - model.center) / model.scale
    # the cell whose distance bound ranks lowest: the anomaly's ranking alone never refines it
    low = int(standard_upper[0].flatten().argmin())
    x[0, 0].view(-1)[low] = 10.0  # the head lifts it by almost its bound (4 · tanh(5))
    with torch.no_grad():
        score, amap = two_stage(x)
        expected, _ = exact(x)
        raw = model.extractor.balanced(x)
        nearest = exact.anomaly.nearest(model.extractor.project(raw))
        cells = exact.cells(raw, (nearest - model.center) / model.scale)
        unshifted = model.two_stage(model.extractor.project(raw))
    # the far patch and the lifted cell are the two top cells of the exact logits (top_k 2)
    assert low in cells[0].flatten().topk(2).indices.tolist()
    # its top cells refined, the image gets the exact score (the other image has no clear top
    # cells: refining 5 of 42 on a 40-entry bound, its score may only be lower)
    assert float(score[0]) == pytest.approx(float(expected[0]), abs=1e-4)
    assert float(score[1]) <= float(expected[1]) + 1e-4
    assert amap.shape == (2, 6, 7)
    # ranked by distance alone the lifted cell keeps its coarse bound, not its exact distance
    assert float(unshifted[0, 0].flatten()[low]) > float(nearest[0, 0].flatten()[low]) + 1e-3


def test_two_stage_supervised_top_logits_never_exceed_the_exact_ones() -> None:
    # before smoothing (the product's σ of half a cell), heads of both signs all over the grid
    for seed in range(20):
        _, two_stage, x = _heads(seed=seed, refine=2, sigma=0.5)
        with torch.no_grad():
            two_stage.out.bias.fill_(-2.0)  # heads from -1.85 to +4
        generator = torch.Generator().manual_seed(100 + seed)
        x[:, 0] = 3.0 * torch.randn(2, 6, 7, generator=generator)
        searched, distances = _raw_logits(two_stage, x, exact=False)
        exact, _ = _raw_logits(two_stage, x, exact=True)
        top = searched.flatten(1).topk(2, dim=1).values.mean(dim=1)
        assert bool((top <= exact.flatten(1).topk(2, dim=1).values.mean(dim=1) + 1e-4).all()), seed
        # the refined cells: the highest coarse bounds plus the head's offset; no other cell's
        # logit stands above the lowest of theirs (unless it is held at a distance of 0)
        anomaly = two_stage.anomaly
        patches = x.flatten(2).transpose(1, 2)[:, :, 1:5]
        upper = torch.cdist(patches, anomaly.bank[:40]).amin(dim=2)
        with torch.no_grad():
            offset = (two_stage.head(x) / two_stage.weight()).flatten(1)
        standard = (upper - anomaly.center.flatten(1)) / anomaly.scale.flatten(1)
        refined = (standard + offset).topk(2, dim=1).indices
        logits = searched.flatten(1)
        for b in range(2):
            lowest = float(logits[b, refined[b]].min())
            others = torch.ones(42, dtype=torch.bool)
            others[refined[b]] = False
            others &= distances.flatten(1)[b] > 0
            assert float(logits[b, others].max()) <= lowest + 1e-4, seed
            # and a cell is lowered only as far as that: one whose bound stands below keeps it
            weight = float(two_stage.weight())
            below = (weight * (standard[b] + offset[b]) < lowest - 1e-4) & others
            assert bool(below.any()), seed
            torch.testing.assert_close(distances.flatten(1)[b, below], upper[b, below])
        # and so the image score, where the kernel is too narrow to mix cells
        narrow, narrow_two_stage, _ = _heads(seed=seed, refine=2)
        with torch.no_grad():
            assert bool((narrow_two_stage(x)[0] <= narrow(x)[0] + 1e-4).all()), seed


def test_two_stage_supervised_refining_every_cell_is_the_exact_model() -> None:
    exact, two_stage, x = _heads(seed=6, refine=42, sigma=0.5)
    x[:, 0] = torch.randn(2, 6, 7, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        score, amap = two_stage(x)
        expected_score, expected_map = exact(x)
    torch.testing.assert_close(score, expected_score, atol=1e-4, rtol=0)
    torch.testing.assert_close(amap, expected_map, atol=1e-4, rtol=0)


def test_two_stage_supervised_never_caps_a_distance_below_zero() -> None:
    # cells whose normal level is far above any distance: the lowest refined cell's logit, less
    # a lifted cell's head, would put that cell's cap at a negative distance
    # the refined twin of a bank entry (exact distance 0) sets the cap at (0 − 8) / its spread;
    # every other cell of that image the head lifts by 2 (= 4 / weight 2) would be capped at
    # 8 + spread · (cap − 2), a negative distance where the spreads are alike
    _, two_stage, x = _heads(seed=7, refine=2, center=8.0)
    x[1, 0] = 10.0
    x[1, 0, 3, 3] = 0.0
    _, distances = _raw_logits(two_stage, x, exact=False)
    _, exact = _raw_logits(two_stage, x, exact=True)
    assert float(exact[1, 0, 3, 3]) < 1e-3
    assert bool((distances >= 0).all())
    assert int((distances[1] == 0).sum()) > 1  # those cells are held at 0, not below
    with torch.no_grad():
        scores, _ = two_stage(x)
    assert bool(torch.isfinite(scores).all())


def test_two_stage_supervised_exports_to_onnx_with_the_same_scores(tmp_path: Path) -> None:
    _, two_stage, x = _heads(seed=4, refine=5, sigma=0.5)
    x[0, 0, 1, 1] = 10.0
    assert_onnx_scores_alike(two_stage, x, tmp_path / "m.onnx")


def test_a_head_runs_only_on_the_anomaly_model_it_was_trained_on() -> None:
    from training.model import PatchCoreModel

    exact, two_stage, _ = _heads(seed=5, refine=5)
    assert two_stage.anomaly_weight() == pytest.approx(exact.anomaly_weight()) == 2.0
    for key, value in exact.state_dict().items():
        if not key.startswith("anomaly."):
            torch.testing.assert_close(two_stage.state_dict()[key], value)
    base = exact.anomaly
    others = {
        "bank": PatchCoreModel(base.extractor, torch.randn(600, 4), top_k=2, coarse=40, refine=5),
        "smoothing": PatchCoreModel(
            base.extractor, base.bank, sigma=1.0, center=base.center, scale=base.scale,
            top_k=2, coarse=40, refine=5,
        ),
        "score": PatchCoreModel(
            base.extractor, base.bank, sigma=0.01, center=base.center, scale=base.scale,
            top_k=3, coarse=40, refine=5,
        ),
    }  # fmt: skip
    for other in others.values():  # another bank, smoothing or score: refused
        with pytest.raises(ValueError, match="trained on"):
            exact.searching(other)


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


def test_the_head_moves_a_cell_by_its_bound_at_most_and_the_distance_always_counts(
    trained: Path,
) -> None:
    from training.evaluate import torch_model_from_package
    from training.supervised import HEAD_BOUND, MIN_ANOMALY_WEIGHT

    model = torch_model_from_package(load_package(trained / "candidates" / "supervised"))
    weight = model.anomaly_weight()
    assert weight >= MIN_ANOMALY_WEIGHT
    assert load_package(trained / "candidates" / "supervised").manifest.metrics[
        "anomaly_weight"
    ] == pytest.approx(weight, abs=1e-4)
    # features far outside anything trained on: the head saturates, it does not run away
    raw = 50.0 * torch.randn(4, int(model.anomaly.extractor.weight.numel()), 6, 6)
    anomaly = 3.0 * torch.randn(4, 1, 6, 6)
    with torch.no_grad():
        cells = model.cells(raw, anomaly)
        higher = model.cells(raw, anomaly + 0.5)
    assert float((cells - weight * anomaly).abs().max()) <= HEAD_BOUND + 1e-5
    assert bool((higher > cells).all())


def test_mask_cells_are_positive_inside_negative_far_away_and_a_thin_defect_keeps_one() -> None:
    from training.supervised import _cell_targets

    square = np.zeros((224, 224), bool)
    square[40:80, 40:80] = True  # cells 5..9 of an 8 px grid (28 cells)
    target = _cell_targets(square, (28, 28))
    assert target is not None
    assert bool((target[5:10, 5:10] == 1).all()) and int((target == 1).sum()) == 25
    assert float(target[20, 20]) == 0.0  # far away: a negative
    assert float(target[4, 7]) == -1.0 and float(target[11, 7]) == -1.0  # next to it: ignored
    thin = np.zeros((224, 224), bool)
    thin[100, 30:200] = True  # a 1 px scratch covers no cell by a quarter
    target = _cell_targets(thin, (28, 28))
    assert target is not None and int((target == 1).sum()) > 0
    assert bool((target[12, 4:25] == 1).all())
    assert _cell_targets(np.zeros((224, 224), bool), (28, 28)) is None


def test_good_images_of_a_part_with_a_defect_image_are_never_trained_on(
    labelled: Path, tmp_path: Path
) -> None:
    data = tmp_path / "grouped"
    shutil.copytree(labelled, data)
    goods = sorted(p.relative_to(data).as_posix() for p in (data / "good").glob("*.png"))
    defects = sorted(p.relative_to(data).as_posix() for p in (data / "defect").rglob("*.png"))
    rows = [f"{g},part-{i}" for i, g in enumerate(goods[:8])]
    rows += [f"{d},part-{i}" for i, d in enumerate(defects[:8])]
    (data / "groups.csv").write_text("path,group\n" + "\n".join(rows) + "\n")
    out = tmp_path / "pkg"
    with contextlib.redirect_stdout(io.StringIO()):
        manifest = train(data, out, seed=1, max_bank=64, model_kind="patchcore",
                         defect_train_fraction=0.5)  # fmt: skip
    record = json.loads((out / "training.json").read_text())
    dataset = load_dataset(data)
    splits = split_dataset(dataset, 1, defect_train_fraction=0.5)
    defect_parts = {s.group for s in splits.train if s.label == 1 and s.group is not None}
    shared = [s for s in splits.train if s.label == 0 and s.group in defect_parts]
    assert shared  # the split put good images of defective parts into train
    expected = record["split"]["counts"]["train"]["good"] - len(shared)
    assert manifest.metrics["train_images"] == expected


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


def test_the_head_trains_on_a_bounded_sample_of_many_defects(
    trained: Path, labelled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import supervised
    from training.evaluate import torch_model_from_package
    from training.model import exact_search

    anomaly = exact_search(
        torch_model_from_package(load_package(trained / "candidates" / "patchcore"))
    )
    spec = load_package(trained).manifest.input
    good = [load_tensor(p, spec) for p in sorted((labelled / "good").glob("*.png"))[:4]]
    paths = sorted((labelled / "defect").rglob("*.png"))[:6]
    defects = [load_tensor(p, spec) for p in paths]
    masks = [labelled / "masks" / p.relative_to(labelled / "defect") for p in paths]
    assert all(m.is_file() for m in masks)

    def fit(images, image_masks, lines=None):  # noqa: ANN001, ANN202
        log = lines.append if lines is not None else (lambda _: None)
        return supervised.fit_head(anomaly, good, images, image_masks, steps=20, log=log)

    def weights(model) -> list[torch.Tensor]:  # noqa: ANN001
        return [model.hidden.weight, model.hidden.bias, model.out.weight, model.anomaly_gain]

    lines: list[str] = []
    monkeypatch.setattr(supervised, "MAX_DEFECT_IMAGES", 4)
    capped = fit(defects, masks, lines)
    assert "the head trains on 4 of the 6 training defect images" in " ".join(lines)
    assert any("features of 4 good and 4 defect images" in line for line in lines)
    # the same head as one trained on that seeded sample alone, masks read from their paths
    sample = sorted(np.random.default_rng(0).choice(6, 4, replace=False).tolist())
    alone = fit([defects[i] for i in sample], [supervised.read_mask(masks[i]) for i in sample])
    for got, expected in zip(weights(capped), weights(alone), strict=True):
        assert torch.equal(got, expected)
    # the masks count: without them (image labels only) the head comes out otherwise
    unmasked = fit([defects[i] for i in sample], None)
    assert not torch.equal(unmasked.hidden.weight, alone.hidden.weight)
    # below the bound every defect image trains it, as before
    lines.clear()
    fit(defects[:4], [str(m) for m in masks[:4]], lines)
    assert not any("of the" in line for line in lines)
    assert any("features of 4 good and 4 defect images" in line for line in lines)
    with pytest.raises(ValueError, match="3 masks for 4 defect images"):
        fit(defects[:4], masks[:3])

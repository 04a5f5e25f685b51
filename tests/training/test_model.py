"""Model building blocks: coreset, map standardisation, nearest-neighbour scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.model import (
    PatchCoreModel,
    balance_taps,
    bilinear_matrix,
    coarse_first,
    default_tap_gain,
    greedy_coreset,
    principal_axes,
    ring_index,
    standardisation,
)

from .conftest import assert_onnx_scores_alike


def test_coreset_covers_far_points_better_than_random() -> None:
    generator = torch.Generator().manual_seed(0)
    outliers = 40.0 * torch.eye(8)[:5]  # five far points, far from each other too
    points = torch.cat([torch.randn(2000, 8, generator=generator), outliers])
    chosen = greedy_coreset(points, 32, seed=0, projection_dim=8)
    assert len(set(chosen.tolist())) == 32
    assert set(range(2000, 2005)) <= set(chosen.tolist())  # every outlier is a centre

    def radius(index: torch.Tensor) -> float:
        return float(torch.cdist(points, points[index]).amin(dim=1).max())

    random = torch.randperm(len(points), generator=generator)[:32]
    assert radius(chosen) < radius(random)


def test_coreset_returns_everything_when_small() -> None:
    assert greedy_coreset(torch.randn(10, 4), 50).tolist() == list(range(10))


def test_ring_index_counts_cells_from_the_edge() -> None:
    ring = ring_index(6, 7, rings=3)
    assert ring[0].tolist() == [0] * 7
    assert ring[2, 3] == 2 and ring[1, 1] == 1 and ring[3, 0] == 0


@pytest.mark.parametrize(("size", "out"), [(28, 224), (7, 6), (5, 17)])
def test_bilinear_matrix_resizes_like_interpolate(size: int, out: int) -> None:
    grid = torch.randn(2, 1, size, size + 1, generator=torch.Generator().manual_seed(3))
    expected = torch.nn.functional.interpolate(
        grid, size=(out, out + 3), mode="bilinear", align_corners=False
    )[:, 0]
    resized = bilinear_matrix(size, out) @ grid[:, 0] @ bilinear_matrix(size + 1, out + 3).t()
    assert torch.allclose(resized, expected, atol=1e-5)


def test_principal_axes_are_orthonormal_and_follow_the_variance() -> None:
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([5.0, 3.0, 1.0, 0.1, 0.1, 0.1])
    points = torch.randn(4000, 6, generator=generator) * scales
    axes = principal_axes(points, 2)[:, :, 0, 0]
    assert axes.shape == (2, 6)
    assert torch.allclose(axes @ axes.t(), torch.eye(2), atol=1e-5)
    assert abs(float(axes[0, 0])) > 0.99 and abs(float(axes[1, 1])) > 0.99


class _Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_nearest_distances_and_top_k_score_match_brute_force() -> None:
    generator = torch.Generator().manual_seed(1)
    bank = torch.randn(1100, 5, generator=generator)  # three chunks of the bank
    x = torch.randn(2, 5, 6, 7, generator=generator)
    model = PatchCoreModel(_Identity(), bank, sigma=0.5, top_k=4)  # type: ignore[arg-type]
    model.kernel = torch.ones(1, 1, 1, 1)  # no smoothing: compare raw distances
    patches = x.flatten(2).transpose(1, 2)
    expected = torch.cdist(patches, bank).amin(dim=2).reshape(2, 1, 6, 7)
    assert torch.allclose(model.distances(x), expected, atol=1e-4)
    assert torch.allclose(model.bank, bank, atol=1e-6)
    score, amap = model(x)
    assert torch.allclose(score, expected.flatten(1).topk(4, dim=1).values.mean(dim=1), atol=1e-4)
    assert amap.shape == (2, 6, 7)


def _two_stage(
    refine: int, sigma: float = 0.5
) -> tuple[PatchCoreModel, torch.Tensor, torch.Tensor]:
    """A two-stage model over a random bank, a batch with three far patches, and the exact
    raw distance map (before smoothing)."""
    generator = torch.Generator().manual_seed(2)
    bank = torch.randn(600, 5, generator=generator)
    x = torch.randn(2, 5, 6, 7, generator=generator)
    x[0, :, 2, 3] += 6.0  # far from every bank entry: these must come out exact
    x[0, :, 4, 1] += 5.0
    x[1, :, 0, 6] += 7.0
    center = torch.rand(1, 1, 6, 7, generator=generator)
    scale = torch.rand(1, 1, 6, 7, generator=generator) + 0.5
    model = PatchCoreModel(
        _Identity(),  # type: ignore[arg-type]
        bank,
        sigma=sigma,
        center=center,
        scale=scale,
        top_k=2,
        coarse=40,
        refine=refine,
    )
    patches = x.flatten(2).transpose(1, 2)
    return model, x, torch.cdist(patches, bank).amin(dim=2).reshape(2, 1, 6, 7)


def test_two_stage_search_scores_the_top_cells_exactly() -> None:
    # a kernel this narrow does not smooth: the map is the raw two-stage map, standardised
    model, x, exact = _two_stage(refine=5, sigma=0.01)
    assert model.coarse == 40
    assert torch.allclose(model.distances(x), exact, atol=1e-4)  # distances: the exact search
    standard = (exact - model.center) / model.scale
    score, amap = model(x)
    assert torch.allclose(score, standard.flatten(1).topk(2, dim=1).values.mean(dim=1), atol=1e-4)
    assert amap.shape == (2, 6, 7)
    # no cell exceeds its distance to the coarse entries (the bank's first 40)
    patches = x.flatten(2).transpose(1, 2)
    upper = torch.cdist(patches, model.bank[:40]).amin(dim=2).reshape(2, 1, 6, 7)
    assert bool((model.standardised(x) <= (upper - model.center) / model.scale + 1e-4).all())


def test_two_stage_search_smooths_its_raw_distance_map_then_standardises_it() -> None:
    model, x, exact = _two_stage(refine=5)
    patches = x.flatten(2).transpose(1, 2)
    upper = torch.cdist(patches, model.bank[:40]).amin(dim=2)  # (2, 42)
    standard_upper = (upper - model.center.flatten(1)) / model.scale.flatten(1)
    center, scale = model.center.flatten(), model.scale.flatten()
    raw = torch.empty_like(upper)
    for b in range(2):
        cells = standard_upper[b].topk(5).indices
        standard_exact = (exact.flatten(1)[b] - center) / scale
        # unrefined cells: their bound, but never standardising above the lowest refined cell
        ceiling = center + scale * standard_exact[cells].min()
        raw[b] = torch.minimum(upper[b], ceiling)
        raw[b, cells] = exact.flatten(1)[b, cells]
        assert ((raw[b] - center) / scale).max() <= standard_exact[cells].max() + 1e-5
    # the Gaussian kernel (σ = 0.5 cells, radius 1), edges replicated
    g = torch.exp(-(torch.arange(-1.0, 2.0) ** 2) / 0.5)
    g = g / g.sum()
    padded = F.pad(raw.reshape(2, 1, 6, 7), (1, 1, 1, 1), mode="replicate")
    smoothed = F.conv2d(padded, (g[:, None] * g[None, :])[None, None])
    expected = (smoothed - model.center) / model.scale
    assert torch.allclose(model.standardised(x), expected, atol=1e-4)


def test_two_stage_search_refining_every_cell_is_the_exact_map() -> None:
    model, x, _ = _two_stage(refine=42)
    exact = (model.distances(x) - model.center) / model.scale  # smoothed, as in the exact search
    assert torch.allclose(model.standardised(x), exact, atol=1e-4)


def test_two_stage_search_exports_to_onnx_with_the_same_scores(tmp_path: Path) -> None:
    model, x, _ = _two_stage(refine=5)
    assert_onnx_scores_alike(model, x, tmp_path / "m.onnx")


def test_two_stage_search_needs_a_positive_refine_count() -> None:
    with pytest.raises(ValueError, match="refine"):
        PatchCoreModel(_Identity(), torch.randn(10, 3), coarse=4, refine=0)  # type: ignore[arg-type]


def test_coarse_first_puts_a_spread_of_the_bank_first_and_keeps_every_entry() -> None:
    bank = torch.arange(100, dtype=torch.float32)[:, None]  # pick order = value
    ordered = coarse_first(bank, 10)
    assert sorted(ordered[:, 0].tolist()) == list(range(100))
    first = ordered[:10, 0]
    assert float(first.min()) == 0 and float(first.max()) == 99  # not just the first picks
    assert torch.equal(coarse_first(bank, 0), bank)


class _FixedMaps:
    """Stands in for a model whose raw distance maps are known: ``distances`` slices them."""

    def __init__(self, maps: torch.Tensor) -> None:
        self.maps = maps
        self.seen = 0

    def distances(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.maps[self.seen : self.seen + len(batch)]
        self.seen += len(batch)
        return out


def _standardise(maps: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = [np.zeros((3, 8, 8), np.float32) for _ in range(len(maps))]
    return standardisation(_FixedMaps(maps), tensors, rings=2, mode=mode)  # type: ignore[arg-type]


def test_standardisation_modes_pool_rings_or_keep_cells() -> None:
    generator = torch.Generator().manual_seed(0)
    position = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)  # a per-cell offset
    maps = position + torch.randn(20, 1, 5, 5, generator=generator)
    ring = ring_index(5, 5, 2)
    center, scale = _standardise(maps, "ring")
    assert torch.allclose(center[0, 0][ring == 0], maps[:, 0][:, ring == 0].mean())
    assert torch.allclose(scale[0, 0][ring == 1], maps[:, 0][:, ring == 1].std())
    cell_center, cell_scale = _standardise(maps, "cell")
    assert torch.allclose(cell_center[0, 0], maps[:, 0].mean(dim=0))
    assert torch.allclose(cell_scale[0, 0], maps[:, 0].std(dim=0))
    # the per-cell offset is removed by a per-cell mean, not by a per-ring one
    assert float(((maps - cell_center) / cell_scale).mean(dim=0).abs().max()) < 1e-4
    assert float(((maps - center) / scale).mean(dim=0).abs().max()) > 0.5
    mixed_center, mixed_scale = _standardise(maps, "cellmean")
    assert torch.equal(mixed_center, cell_center) and torch.equal(mixed_scale, scale)
    with pytest.raises(ValueError, match="norm must be one of"):
        _standardise(maps, "pixel")
    few = maps[:4]  # too few images for per-cell statistics: ring pooling whatever the mode
    few_cell, few_ring = _standardise(few, "cell"), _standardise(few, "ring")
    assert torch.equal(few_cell[0], few_ring[0]) and torch.equal(few_cell[1], few_ring[1])


class _FixedTaps:
    """Stands in for a feature extractor with two known tap maps."""

    def __init__(self, maps: list[torch.Tensor]) -> None:
        self.maps = maps

    def raw(self, sample: torch.Tensor) -> list[torch.Tensor]:
        return self.maps


def test_balance_taps_equalises_variance_then_applies_the_gain() -> None:
    generator = torch.Generator().manual_seed(0)
    fine = 5.0 * torch.randn(4, 2, 6, 6, generator=generator)
    coarse = 0.2 * torch.randn(4, 3, 6, 6, generator=generator)
    stub = _FixedTaps([fine, coarse])
    sample = [np.zeros((3, 8, 8), np.float32)]

    def tap_variances(weight: torch.Tensor) -> list[float]:
        fw, cw = weight[:, :2], weight[:, 2:]
        return [
            float((fine * fw).var(dim=(0, 2, 3)).sum()),
            float((coarse * cw).var(dim=(0, 2, 3)).sum()),
        ]

    balanced = tap_variances(balance_taps(stub, sample))  # type: ignore[arg-type]
    assert balanced == pytest.approx([1.0, 1.0], rel=1e-4)
    gained = tap_variances(balance_taps(stub, sample, (1.5, 1.0)))  # type: ignore[arg-type]
    assert gained == pytest.approx([2.25, 1.0], rel=1e-4)
    with pytest.raises(ValueError, match="tap gain needs 2"):
        balance_taps(stub, sample, (1.5,))  # type: ignore[arg-type]
    assert default_tap_gain(3)[1:] == (1.0, 1.0) and default_tap_gain(1) == (1.0,)


def test_two_stage_score_never_exceeds_the_exact_one_whatever_the_cells_spread() -> None:
    # cells of very different spread: a cap in raw distance units would let an unrefined cell
    # with a small spread standardise above every refined one
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        bank = torch.randn(300, 4, generator=generator)
        x = torch.randn(1, 4, 5, 5, generator=generator) * 1.5
        scale = torch.exp(3 * torch.rand(1, 1, 5, 5, generator=generator) - 1.5)
        center = torch.rand(1, 1, 5, 5, generator=generator)
        model = PatchCoreModel(
            _Identity(),  # type: ignore[arg-type]
            bank, sigma=0.01, center=center, scale=scale, top_k=1, coarse=20, refine=3,
        )  # fmt: skip
        exact = (model.distances(x) - center) / scale
        score, _ = model(x)
        assert float(score) <= float(exact.max()) + 1e-4, seed

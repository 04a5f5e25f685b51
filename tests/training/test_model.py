"""Model building blocks: coreset, ring standardisation, threshold calibration."""

from __future__ import annotations

import numpy as np
import torch

from training.model import PatchCoreModel, greedy_coreset, principal_axes, ring_index
from training.scoring import calibrate


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


def test_calibrate_with_defects_separates_and_orders() -> None:
    good = np.array([1.0, 1.2, 1.1, 0.9, 1.3])
    defect = np.array([2.0, 2.5, 3.0])
    thresholds, rule = calibrate(good, defect)
    assert 1.3 < thresholds.reject <= 2.0
    assert thresholds.manual <= thresholds.reject
    assert "F1" in rule


def test_calibrate_good_only_rejects_clear_outliers() -> None:
    good = np.linspace(1.0, 2.0, 50)
    thresholds, rule = calibrate(good, np.array([]))
    assert thresholds.reject > 2.0 and thresholds.manual <= thresholds.reject
    assert thresholds.manual > np.median(good)
    assert "good" in rule


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

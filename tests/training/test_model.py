"""Model building blocks: coreset, ring standardisation, threshold calibration."""

from __future__ import annotations

import numpy as np
import torch

from training.model import greedy_coreset, ring_index
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

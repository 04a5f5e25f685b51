"""Bootstrap intervals and pixel AUROC on synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import accuracy, auroc, bootstrap_interval, pixel_auroc, recall


def _scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half good, half defect, overlapping score distributions (AUROC about 0.76)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    return labels, rng.normal(labels * 1.0, 1.0)


def test_auroc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    labels, scores = _scores(60)
    scores = np.round(scores, 1)  # ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert auroc(np.zeros(4), np.arange(4)) is None


def test_interval_contains_the_estimate_and_narrows_with_more_data() -> None:
    widths = []
    for n in (40, 400, 4000):
        labels, scores = _scores(n)
        record = bootstrap_interval(labels, scores, auroc, resamples=300, seed=1)
        lo, hi = record["ci95"]
        assert lo <= record["value"] <= hi
        assert record["value"] == auroc(labels, scores)
        assert record["resamples"] == 300 and record["groups"] == n
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.05 < widths[0]


def test_interval_is_seeded_and_keeps_both_classes_in_every_resample() -> None:
    labels = np.array([0] * 30 + [1])  # one defect image: an unstratified draw would miss it
    scores = np.linspace(0, 1, 31)
    first = bootstrap_interval(labels, scores, auroc, resamples=200, seed=4)
    assert first == bootstrap_interval(labels, scores, auroc, resamples=200, seed=4)
    assert first["resamples"] == 200 and first["ci95"] == [1.0, 1.0]


def test_resampling_groups_widens_the_interval_of_correlated_images() -> None:
    labels, scores = _scores(40, seed=2)
    copies = 10  # each part photographed ten times, near-identical scores
    labels_rep, scores_rep = np.repeat(labels, copies), np.repeat(scores, copies)
    parts = [f"part-{i}" for i in np.repeat(np.arange(40), copies)]
    by_image = bootstrap_interval(labels_rep, scores_rep, auroc, resamples=300)
    by_part = bootstrap_interval(labels_rep, scores_rep, auroc, parts, resamples=300)
    width = [r["ci95"][1] - r["ci95"][0] for r in (by_image, by_part)]
    assert by_part["groups"] == 40 and width[1] > 2 * width[0]
    alone = bootstrap_interval(labels, scores, auroc, resamples=300)
    assert width[1] == pytest.approx(alone["ci95"][1] - alone["ci95"][0], rel=0.35)


def test_accuracy_and_recall_intervals() -> None:
    labels = np.array([0] * 50 + [1] * 50)
    predicted = np.array([0] * 45 + [1] * 5 + [1] * 40 + [0] * 10)
    acc = bootstrap_interval(labels, predicted, accuracy, resamples=300)
    rec = bootstrap_interval(labels, predicted, recall, resamples=300)
    assert acc["value"] == pytest.approx(0.85) and rec["value"] == pytest.approx(0.8)
    assert acc["ci95"][0] < 0.85 < acc["ci95"][1] and rec["ci95"][0] < 0.8 < rec["ci95"][1]
    good_only = bootstrap_interval(np.zeros(5), np.zeros(5), recall)
    assert good_only == {"value": None, "ci95": None, "resamples": 0, "groups": 5}


def _square_mask(side: int = 64) -> np.ndarray:
    mask = np.zeros((side, side), dtype=bool)
    mask[16:32, 24:48] = True
    return mask


def test_a_perfect_map_has_pixel_auroc_one_at_any_map_resolution() -> None:
    mask = _square_mask()
    assert pixel_auroc([mask * 1.0], [mask]) == 1.0
    # a 16×16 map of the same square (cells 4×4 px), as the model's coarse grid gives
    coarse = np.zeros((16, 16), np.float32)
    coarse[4:8, 6:12] = 1.0
    assert pixel_auroc([coarse, np.zeros((8, 8))], [mask, (64, 64)]) > 0.99
    assert pixel_auroc([1 - mask * 1.0], [mask]) == 0.0


def test_pixel_auroc_known_answer_and_good_images_count_as_negative() -> None:
    mask = np.array([[True, False], [False, False]])
    amap = np.array([[0.5, 0.9], [0.1, 0.2]])
    # positive 0.5 beats 0.1 and 0.2 of its image, loses to 0.9: 2/3
    assert pixel_auroc([amap], [mask]) == pytest.approx(2 / 3)
    # a good image of all 0.3 adds four negatives below 0.5: (2 + 4) / 7
    assert pixel_auroc([amap, np.full((2, 2), 0.3)], [mask, (2, 2)]) == pytest.approx(6 / 7)
    assert pixel_auroc([np.zeros((2, 2))], [(2, 2)]) is None

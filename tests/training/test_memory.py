"""Training in bounded memory: the coreset pool, and fitting from a sequence read batch by batch."""

from __future__ import annotations

import contextlib
import io
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np
import pytest
import torch

from inspector.model_package import TileSpec
from training import model as patchcore
from training.errors import DatasetError
from training.images import ImageTensors
from training.model import CoresetPool, greedy_coreset
from training.scoring import load_frame
from training.train import input_spec


def _points(n: int, dims: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dims, generator=torch.Generator().manual_seed(seed))


def test_pool_equals_the_greedy_coreset_of_everything_while_it_fits() -> None:
    points = _points(1000, 8, seed=1)
    pool = CoresetPool(capacity=1024, size=100, dims=8, seed=3)
    for chunk in points.split(128):
        pool.add(chunk)
    bank, index = pool.coreset()
    expected = greedy_coreset(points, 100, seed=3)
    assert pool.reductions == 0
    assert torch.equal(index, expected)
    assert torch.equal(bank, points[expected])


@pytest.mark.parametrize("projection_dim", [128, 4])  # 4: distances in a random projection
def test_pool_never_holds_more_than_its_capacity_and_keeps_the_far_points(
    monkeypatch: pytest.MonkeyPatch, projection_dim: int
) -> None:
    outliers = 40.0 * torch.eye(8)[:5]  # five far points, far from each other too
    points = torch.cat([_points(3000, 8, seed=2)[:1700], outliers, _points(1300, 8, seed=4)])
    reduced_sizes: list[int] = []
    greedy = patchcore._greedy

    def recording(features: torch.Tensor, *args: object, **kwargs: object):  # noqa: ANN202
        reduced_sizes.append(len(features))
        return greedy(features, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(patchcore, "_greedy", recording)
    pool = CoresetPool(capacity=256, size=64, dims=8, seed=0, projection_dim=projection_dim)
    for chunk in points.split(100):
        pool.add(chunk)
        assert pool.held <= 256 and pool.candidates.shape[0] == 256
    bank, index = pool.coreset()
    assert pool.reductions >= 2 and pool.skipped > 0  # it did reduce, and dropped covered ones
    assert reduced_sizes and max(reduced_sizes) <= 256
    assert len(set(index.tolist())) == 64 and pool.seen == len(points)
    assert torch.equal(bank, points[index])  # the bank is patches of the stream, where they were
    assert set(range(1700, 1705)) <= set(index.tolist())  # every outlier is a centre

    def radius(chosen: torch.Tensor) -> float:
        return float(torch.cdist(points, points[chosen]).amin(dim=1).max())

    random = torch.randperm(len(points), generator=torch.Generator().manual_seed(5))[:64]
    assert radius(index) < radius(random)


def test_pool_refuses_a_bank_it_cannot_hold_twice() -> None:
    with pytest.raises(ValueError, match="pool of 1000 candidates cannot give a bank of 600"):
        CoresetPool(capacity=1000, size=600, dims=4)


class _Generated(Sequence[np.ndarray]):
    """Input tensors made on access; counts how many of them are alive at once."""

    def __init__(self, count: int, side: int = 64) -> None:  # 64 px: an 8 × 8 grid, quick
        self.count, self.side = count, side
        self.alive = self.most_alive = self.reads = 0

    def __len__(self) -> int:
        return self.count

    def _make(self, i: int) -> np.ndarray:
        if not 0 <= i < self.count:
            raise IndexError(i)
        rng = np.random.default_rng(i)  # the same item every time it is read
        tensor = rng.normal(0, 0.5, (3, self.side, self.side)).astype(np.float32)
        self.reads += 1
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        weakref.finalize(tensor, self._gone)
        return tensor

    def _gone(self) -> None:
        self.alive -= 1

    @overload
    def __getitem__(self, key: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, key: slice) -> list[np.ndarray]: ...
    def __getitem__(self, key: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(key, slice):
            return [self._make(i) for i in range(self.count)[key]]
        return self._make(key)


def _fit(tensors: Sequence[np.ndarray], **kwargs: object) -> patchcore.PatchCoreModel:
    torch.set_num_threads(2)
    with contextlib.redirect_stdout(io.StringIO()):
        return patchcore.fit(tensors, **kwargs)  # type: ignore[arg-type]


# 40 images: 8 held out, 32 × 64 = 2,048 bank patches, a bank of 20 % (410); a pool of 1,024
# cannot hold them all
@pytest.mark.parametrize("pool", [patchcore.DEFAULT_CORESET_POOL, 1024])  # held, streamed
def test_fit_reads_the_images_a_batch_at_a_time(pool: int) -> None:
    images = _Generated(40)
    model = _fit(images, coreset_pool=pool)
    assert images.reads >= 40  # every image was used
    assert images.most_alive <= patchcore.BATCH_SIZE + 1  # never the 40 at once
    assert model.bank.shape == (410, patchcore.DEFAULT_DIMS)


def test_fit_keeps_the_exact_coreset_of_every_patch_while_they_fit() -> None:
    """The bank of a dataset that fits the pool is what the unbounded training gave."""
    images = _Generated(12)
    model = _fit(images, seed=7, max_bank=128)
    # the unbounded training, step by step: balance, PCA of all patches, coreset of all
    extractor = patchcore.FeatureExtractor(patchcore.load_backbone()).eval()
    tensors = [images[i] for i in range(len(images))]
    extractor.weight = patchcore.balance_taps(extractor, tensors, patchcore.default_tap_gain(3))
    order = np.random.default_rng(7).permutation(12)
    patches = patchcore.extract_patches(extractor, [tensors[i] for i in order[2:]])
    axes = patchcore.principal_axes(patches, patchcore.DEFAULT_DIMS)
    projected = patches @ axes[:, :, 0, 0].t()
    index = greedy_coreset(projected, 128, seed=7)
    assert torch.equal(model.extractor.projection, axes)
    assert torch.equal(model.bank, projected[index])


def test_streamed_fit_is_deterministic() -> None:
    first = _fit(_Generated(30), coreset_pool=512, max_bank=128, seed=2)
    again = _fit(_Generated(30), coreset_pool=512, max_bank=128, seed=2)
    assert torch.equal(first.bank, again.bank)
    assert torch.equal(first.center, again.center) and torch.equal(first.scale, again.scale)


def test_image_tensors_load_each_image_when_read(sample: Path, tmp_path: Path) -> None:
    spec = input_spec()
    paths = sorted((sample / "brick" / "good").glob("*.png"))[:3]
    missing = tmp_path / "gone.png"
    tensors = ImageTensors([*paths, missing], spec)  # nothing is read yet: no error
    assert len(tensors) == 4
    assert np.array_equal(tensors[1], load_frame(paths[1], spec)[0])
    batch = tensors[0:2]
    assert isinstance(batch, list) and np.array_equal(batch[0], load_frame(paths[0], spec)[0])
    with pytest.raises((DatasetError, OSError), match="gone.png"):
        tensors[3]


def test_image_tensors_give_every_tile_of_every_frame(sample: Path) -> None:
    spec = input_spec(tiles=TileSpec(rows=2, cols=2))
    paths = sorted((sample / "brick" / "good").glob("*.png"))[:3]
    tensors = ImageTensors(paths, spec)
    assert len(tensors) == 12
    expected = [tile for p in paths for tile in load_frame(p, spec)]
    assert all(np.array_equal(t, e) for t, e in zip(tensors[0:12], expected, strict=True))
    assert np.array_equal(tensors[-1], expected[-1]) and np.array_equal(tensors[6], expected[6])
    with pytest.raises(IndexError):
        tensors[12]

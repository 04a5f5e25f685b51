"""The anomaly map a sample keeps: reduced by the engine from the real model's map output, stored
by the sampler with the image, read back by the review station; off, the map is never read."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inspector.anomaly_map import (
    AT_THRESHOLD,
    MAX_CELLS,
    decode_map,
    encode_map,
    frame_map,
    reduce_map,
)
from inspector.engine import Inspector
from inspector.journal import Journal
from inspector.messages import Identity
from inspector.model_package import TileSpec, write_manifest
from inspector.runner import ModelRunner
from inspector.runtime_config import RuntimeConfig
from inspector.sampler import Sampler
from inspector.sources import Frame
from tests.support.tiny_model import REJECT, build_tiny_package, image_bytes, reference_array

IDENTITY = Identity("p1", "l1", "s1", "dev-1")


def spotted(size: int, box: tuple[int, int, int, int], delta: float = 0.5) -> bytes:
    """A reference frame with a dark rectangle ``box`` (left, top, right, bottom)."""
    pixels = reference_array(size).astype(np.float64)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] -= delta * 255
    return image_bytes(Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)))


def test_a_map_is_reduced_to_block_means_of_at_most_32_cells() -> None:
    big = np.zeros((1, 1, 224, 224), dtype=np.float32)
    big[0, 0, :7, :7] = 1.0  # one 7 × 7 block
    grid = reduce_map(big)
    assert grid.shape == (MAX_CELLS, MAX_CELLS)
    assert grid[0, 0] == pytest.approx(1.0) and grid[0, 1] == 0 and grid.sum() == pytest.approx(1)
    small = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(reduce_map(small), small)  # already small: as it is
    wide = reduce_map(np.ones((40, 400), dtype=np.float32))
    assert wide.shape == (3, 30) and np.allclose(wide, 1.0)
    assert reduce_map(np.array([[np.nan, np.inf]], dtype=np.float32)).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\): not one 2-D plane"):
        reduce_map(np.zeros((2, 3, 4)))


def test_a_region_map_is_placed_where_the_region_is_in_the_frame() -> None:
    roi = np.ones((10, 20), dtype=np.float32)  # the map of a 100 × 50 region, 0.2 cells/pixel
    placed = frame_map(roi, (50, 100, 150, 150), (200, 200))
    assert placed.shape == (40, 40)
    assert placed[20:30, 10:30].sum() == 200 and placed.sum() == 200
    whole = np.ones((1, 8, 8), dtype=np.float32)
    assert frame_map(whole, (0, 0, 64, 64), (64, 64)).shape == (8, 8)


def test_an_encoded_map_is_scaled_to_the_reject_threshold() -> None:
    grid = np.array([[0.0, 0.1, 0.2, 0.3, 1.0, -1.0]], dtype=np.float32)
    cells = decode_map(encode_map(grid, 0.2)).tolist()
    assert cells == [[0, AT_THRESHOLD // 2, AT_THRESHOLD, 255, 255, 0]]
    with pytest.raises(ValueError, match="threshold 0.0: must be a positive number"):
        encode_map(grid, 0.0)


@pytest.fixture
def runner(tmp_path: Path) -> ModelRunner:
    return ModelRunner.load(build_tiny_package(tmp_path / "tiny"))


class Counting:
    """A runner wrapper counting calls that read the map output."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self.map_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def score_maps(self, tensors: Any) -> Any:
        self.map_calls += 1
        return self._runner.score_maps(tensors)


def test_the_engine_keeps_the_models_map_of_the_defect(runner: ModelRunner) -> None:
    counting = Counting(runner)
    engine = Inspector(
        IDENTITY, runner=counting, config=RuntimeConfig(deadline_ms=10_000), keep_maps=True
    )  # type: ignore[arg-type]
    frames = [
        Frame("cam0", "spot", data=spotted(64, (40, 8, 56, 24))),  # top right
        Frame("cam0", "unreadable", data=b"not an image"),
    ]
    maps: list[Any] = []
    results = engine.judge_batch(frames, maps)
    assert counting.map_calls >= 1
    assert results[1]["decision"] == "manual" and maps[1] is None
    grid = maps[0]
    assert grid.shape == (32, 32)  # the tiny model's own map, 32 × 32
    hot = np.argwhere(grid > 0.25)
    assert hot.size and hot[:, 0].max() < 13 and hot[:, 1].min() > 18  # where the rectangle is
    assert grid[20:, :10].max() < 0.02
    # the score is the map's mean, as the tiny model defines it
    assert results[0]["score"] == pytest.approx(float(grid.mean()), rel=1e-4)


def test_without_keep_maps_the_map_output_is_never_read(runner: ModelRunner) -> None:
    counting = Counting(runner)
    engine = Inspector(IDENTITY, runner=counting, config=RuntimeConfig(deadline_ms=10_000))  # type: ignore[arg-type]
    maps: list[Any] = []
    engine.judge_batch([Frame("cam0", "spot", data=spotted(64, (40, 8, 56, 24)))], maps)
    assert maps == [None] and counting.map_calls == 0
    keeping = Inspector(
        IDENTITY, runner=counting, config=RuntimeConfig(deadline_ms=10_000), keep_maps=True
    )  # type: ignore[arg-type]
    keeping.judge_batch([Frame("cam0", "spot", data=spotted(64, (40, 8, 56, 24)))])  # no list
    assert counting.map_calls == 0


def test_a_tiled_regions_map_is_stitched_and_placed_over_the_whole_frame(tmp_path: Path) -> None:
    root = tmp_path / "tiled"
    manifest = build_tiny_package(root).manifest
    tiled = replace(
        manifest,
        golden=None,  # the golden image was scored untiled
        input=replace(manifest.input, roi=(64, 0, 64, 64), tiles=TileSpec(rows=2, cols=2)),
    )
    write_manifest(root, tiled)
    runner = ModelRunner.load(root)
    engine = Inspector(
        IDENTITY, runner=runner, config=RuntimeConfig(deadline_ms=10_000), keep_maps=True
    )
    # a 128 × 64 frame; the model judges its right half in four 32 × 32 tiles, each of them
    # the reference (the tiny model's map is 0 there) but for a dark square in the lower left
    # tile of the region, and the left half (outside the region) is dark too
    tile = reference_array(32).astype(np.float64)
    region = np.concatenate([np.concatenate([tile, tile], axis=1)] * 2, axis=0)
    region[40:56, 4:20] -= 0.5 * 255
    frame = np.concatenate([np.zeros((64, 64, 3)), region], axis=1)
    data = image_bytes(Image.fromarray(np.clip(np.round(frame), 0, 255).astype(np.uint8)))
    maps: list[Any] = []
    (result,) = engine.judge_batch([Frame("cam0", "tiled", data=data)], maps)
    assert result["score"] is not None
    grid = maps[0]
    assert grid.shape == (16, 32)  # the whole frame at the tiles' map scale (1 cell: 4 px)
    hot = np.argwhere(grid > 0.25)
    assert hot.size
    assert hot[:, 0].min() >= 8 and hot[:, 1].min() >= 16 and hot[:, 1].max() < 24
    assert grid[:, :16].max() == 0  # outside the region: no anomaly is claimed


def test_the_sampler_stores_the_map_with_the_image_and_the_journal_serves_it(
    tmp_path: Path, runner: ModelRunner
) -> None:
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=8 << 20, synchronous="NORMAL")
    try:
        engine = Inspector(
            IDENTITY, runner=runner, config=RuntimeConfig(deadline_ms=10_000), keep_maps=True
        )
        data = spotted(64, (0, 0, 40, 40), 0.4)
        maps: list[Any] = []
        (result,) = engine.judge_batch([Frame("cam0", "part-1", data=data)], maps)
        assert result["decision"] in ("manual", "reject")
        (seq,) = journal.append_many([result], review=("manual", "reject"))
        result["seq"] = seq
        assert Sampler(journal).offer(result, data, maps[0])
        review = journal.review("part-1")
        assert review is not None and review.sample_id is not None and review.has_map
        png = journal.sample_map(review.sample_id)
        assert png is not None
        cells = decode_map(png)
        expected = np.clip(np.round(maps[0] / REJECT * AT_THRESHOLD), 0, 255)
        assert np.array_equal(cells, expected.astype(np.uint8))
        # a frame kept without a map (a package without one): the image only
        (seq2,) = journal.append_many([{**result, "part_id": "part-2"}], review=("manual",))
        assert Sampler(journal).offer({**result, "part_id": "part-2", "seq": seq2}, data)
        other = journal.review("part-2")
        assert other is not None and other.sample_id is not None and not other.has_map
        assert journal.sample_map(other.sample_id) is None
    finally:
        journal.close()


def test_a_journal_from_before_maps_gains_the_column_and_keeps_its_samples(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    journal = Journal(path, device="dev-1", cap_bytes=8 << 20, synchronous="NORMAL")
    sample = journal.add_sample(part_id="old", reason="reject", data=b"\x89PNG old", score=0.3)
    journal.close()
    db = sqlite3.connect(path)  # the file as the release before maps left it
    db.execute("ALTER TABLE samples DROP COLUMN anomaly_map")
    db.commit()
    db.close()
    journal = Journal(path, device="dev-1", cap_bytes=8 << 20, synchronous="NORMAL")
    try:
        kept = journal.sample(sample)
        assert kept is not None and kept.data == b"\x89PNG old"
        assert journal.sample_map(sample) is None
        new = journal.add_sample(part_id="new", reason="reject", data=b"x", anomaly_map=b"m")
        assert journal.sample_map(new) == b"m"
    finally:
        journal.close()

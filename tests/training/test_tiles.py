"""Tiling a 5 MP frame: a defect of a few pixels survives, and the device judges as training.

A real PatchCore package is trained on generated 2592x1944 frames of a smooth, mildly noisy
surface with 4x6 tiles (10 training frames, 10 validation frames that set the thresholds);
fresh good frames and the same frames with a 10 px dark pit are scored by the device's engine
and by training's frame path. The same data squashed whole to 224x224 loses the pit.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.engine import Inspector
from inspector.messages import Identity
from inspector.model_package import TileSpec, load_package
from inspector.runner import ModelRunner
from inspector.runtime_config import RuntimeConfig
from inspector.sources import Frame
from training.scoring import onnx_session, score_frames
from training.train import main as train_main
from training.train import train

WIDTH, HEIGHT = 2592, 1944
PIT, DEPTH = 10, 60  # a dark pit 10 px across, 60 grey levels deep: 0.0016 % of the frame
# a 10 px pit is ~4.7 px at the model's 224 px in a 4x6 tile, under 1 px in the whole frame
TILES = TileSpec(rows=4, cols=6, overlap=0.1)


def _surface(rng: np.random.Generator) -> np.ndarray:
    """A smooth product surface: gentle shading over ~64 px, mild sensor noise, a gain."""
    shade = rng.standard_normal((HEIGHT // 64, WIDTH // 64), dtype=np.float32)
    shade = Image.fromarray(shade, "F").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    noise = rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32)
    gain = rng.uniform(0.95, 1.05)
    return gain * (128 + 10 * np.asarray(shade) + 2 * noise)


def _pit(pixels: np.ndarray, x: int, y: int) -> np.ndarray:
    """The frame with a round dark pit of :data:`PIT` px across, top-left corner at ``x, y``."""
    out = pixels.copy()
    r = PIT / 2
    yy, xx = np.mgrid[:PIT, :PIT]
    disk = (xx + 0.5 - r) ** 2 + (yy + 0.5 - r) ** 2 <= r * r
    out[y : y + PIT, x : x + PIT][disk] -= DEPTH
    return out


def _save(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)).save(path)  # BMP: fast
    return path


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """10 good training and 10 validation frames; 4 fresh good frames and the same 4 pitted."""
    root = tmp_path_factory.mktemp("five-mp")
    rng = np.random.default_rng(11)
    for split in ("data", "validation"):
        for i in range(10):
            _save(_surface(rng), root / split / "good" / f"{i:02d}.bmp")
    fresh, pitted = [], []
    for i in range(4):
        pixels = _surface(rng)
        fresh.append(_save(pixels, root / "fresh" / f"{i}.bmp"))
        x, y = int(rng.integers(50, WIDTH - 50)), int(rng.integers(50, HEIGHT - 50))
        pitted.append(_save(_pit(pixels, x, y), root / "pitted" / f"{i}.bmp"))
    return {
        "data": [root / "data"],
        "validation": [root / "validation"],
        "fresh": fresh,
        "pitted": pitted,
    }


def _train(frames: dict[str, list[Path]], out: Path, tiles: TileSpec | None) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):
        train(
            frames["data"][0],
            out,
            frames["validation"][0],
            seed=0,
            max_bank=1024,
            top_k=1,  # the highest map cell: a pit covers one cell, a mean of three dilutes it
            norm="cell",  # tile corners vary more than their ring: their own spread
            tiles=tiles,
            model_kind="patchcore",
            threads=1,  # a shared machine: two threads spin on each other in the coreset
            # every tile's patches held (240 tiles × 784): the bank is the coreset of all of
            # them, as the thresholds below were measured with
            coreset_pool=1 << 18,
        )
    return out


@pytest.fixture(scope="module")
def tiled(frames: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(frames, tmp_path_factory.mktemp("tiled") / "pkg", TILES)


@pytest.fixture(scope="module")
def squashed(frames: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(frames, tmp_path_factory.mktemp("squashed") / "pkg", None)


def _scores(package: Path, paths: list[Path]) -> np.ndarray:
    loaded = load_package(package)
    session = onnx_session(loaded.model_path, threads=1)
    return score_frames(session, loaded.manifest.input, paths, loaded.manifest.frames, maps=False)[
        0
    ]


def test_the_device_judges_the_tiled_frame_as_training_scores_it(
    tiled: Path, frames: dict[str, list[Path]]
) -> None:
    engine = Inspector(
        Identity(plant="p", line="l", station="s", device="d"),
        runner=ModelRunner.load(tiled),
        config=RuntimeConfig(deadline_ms=60_000),
    )
    paths = [*frames["fresh"], *frames["pitted"]]
    results = engine.judge_batch(
        [Frame(camera="cam", part_id=p.name, data=p.read_bytes()) for p in paths]
    )
    engine.close()
    for result, want in zip(results, _scores(tiled, paths), strict=True):
        assert result["score"] == pytest.approx(float(want), abs=1e-4)


def test_a_pit_of_a_few_pixels_in_a_5_mp_frame_is_rejected_only_with_tiles(
    tiled: Path, squashed: Path, frames: dict[str, list[Path]]
) -> None:
    fresh, pitted = _scores(tiled, frames["fresh"]), _scores(tiled, frames["pitted"])
    reject = load_package(tiled).manifest.thresholds.reject
    assert pitted.min() >= reject, (pitted, reject)
    assert pitted.min() > fresh.max(), (pitted, fresh)
    # squashed whole to 224x224 the pit is under a pixel: no pitted frame stands out
    fresh, pitted = _scores(squashed, frames["fresh"]), _scores(squashed, frames["pitted"])
    reject = load_package(squashed).manifest.thresholds.reject
    assert pitted.max() < reject, (pitted, reject)
    assert pitted.min() <= fresh.max(), (pitted, fresh)


def test_training_records_the_choice_where_evaluate_finds_it(tiled: Path) -> None:
    record = json.loads((tiled / "training.json").read_text())
    assert record["input"] == {
        "roi": None,
        "fit": "stretch",
        "tiles": {"rows": 4, "cols": 6, "overlap": 0.1},
        "size": [224, 224],
        "align": False,
    }
    assert load_package(tiled).manifest.to_json()["input"]["tiles"] == record["input"]["tiles"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tiles", "3by4"], "expected ROWSxCOLS[:OVERLAP]"),
        (["--roi", "1,2,3"], "expected X,Y,W,H"),
        (["--tiles", "0x4"], "input.tiles.rows: must be an integer 1..16"),
        (["--roi", "0,0,4,400"], "input.roi: must be [x, y, width, height]"),
    ],
)
def test_a_bad_choice_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = None
    try:
        code = train_main(["--data", str(tmp_path), "--model-dir", str(tmp_path / "m"), *args])
    except SystemExit as exc:  # argparse refuses the malformed ones
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_training_frames_that_do_not_hold_the_region_are_named(
    frames: dict[str, list[Path]], tmp_path: Path
) -> None:
    from training.errors import DatasetError

    with pytest.raises(DatasetError, match=r"needs images of at least 2600x100 px.*good/00\.bmp"):
        train(frames["data"][0], tmp_path / "m", roi=(100, 0, 2500, 100))

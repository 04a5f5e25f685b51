"""Tiling a 5 MP frame: the device judges a tiled frame as training scores it.

A real PatchCore package is trained on generated 2592x1944 frames of a mottled surface with
3x4 tiles; fresh good frames and the same frames with a 12 px pit are scored by the device's
engine and by training's frame path.
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
PIT, DEPTH = 12, 100  # a 12x12 px dark pit: 0.003 % of the frame
TILES = TileSpec(rows=3, cols=4, overlap=0.1)


def _surface(rng: np.random.Generator) -> np.ndarray:
    coarse = rng.standard_normal((HEIGHT // 32, WIDTH // 32), dtype=np.float32)
    coarse = Image.fromarray(coarse, "F").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    mid = rng.standard_normal((HEIGHT // 4, WIDTH // 4), dtype=np.float32)
    mid = Image.fromarray(mid, "F").resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    fine = rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32)
    gain = rng.uniform(0.95, 1.05)
    return gain * (128 + 18 * np.asarray(coarse) + 3 * np.asarray(mid) + fine)


def _save(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)).save(path)  # BMP: fast
    return path


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """10 good training frames; 3 fresh good frames and the same 3 with a pit."""
    root = tmp_path_factory.mktemp("five-mp")
    rng = np.random.default_rng(11)
    for i in range(10):
        _save(_surface(rng), root / "data" / "good" / f"{i:02d}.bmp")
    fresh, pitted = [], []
    for i in range(3):
        pixels = _surface(rng)
        fresh.append(_save(pixels, root / "fresh" / f"{i}.bmp"))
        x, y = int(rng.integers(50, WIDTH - 50)), int(rng.integers(50, HEIGHT - 50))
        pixels[y : y + PIT, x : x + PIT] -= DEPTH
        pitted.append(_save(pixels, root / "pitted" / f"{i}.bmp"))
    return {"data": [root / "data"], "fresh": fresh, "pitted": pitted}


def _train(data: Path, out: Path, tiles: TileSpec | None) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):
        # the highest map cell: a pit covers one cell, a mean of three would dilute it
        train(data, out, seed=0, max_bank=512, top_k=1, tiles=tiles, threads=2)
    return out


@pytest.fixture(scope="module")
def tiled(frames: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(frames["data"][0], tmp_path_factory.mktemp("tiled") / "pkg", TILES)


def _scores(package: Path, paths: list[Path]) -> np.ndarray:
    loaded = load_package(package)
    session = onnx_session(loaded.model_path, threads=2)
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


def test_training_records_the_choice_where_evaluate_finds_it(tiled: Path) -> None:
    record = json.loads((tiled / "training.json").read_text())
    assert record["input"] == {
        "roi": None,
        "fit": "stretch",
        "tiles": {"rows": 3, "cols": 4, "overlap": 0.1},
        "size": [224, 224],
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

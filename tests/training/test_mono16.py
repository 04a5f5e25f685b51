"""16-bit mono training data: trained, evaluated and judged by the device alike."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.model_package import load_package
from training.errors import DatasetError
from training.evaluate import evaluate
from training.scoring import describe_frames
from training.train import train

ROOT = Path(__file__).resolve().parents[2]


def _mono12(source: Path, target: Path) -> None:
    """The 8-bit grey image as a Mono12 camera frame in a 16-bit PNG."""
    grey = np.asarray(Image.open(source).convert("L"), dtype=np.float64)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(grey * 4095 / 255).astype(np.uint16)).save(target)


@pytest.fixture(scope="module")
def mono12_data(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny brick sample as 16-bit PNGs holding 12-bit data."""
    root = tmp_path_factory.mktemp("mono12")
    brick = sample / "brick"
    for path in sorted(brick.rglob("*.png")):
        rel = path.relative_to(brick)
        if rel.parts[0] in ("good", "defect"):
            _mono12(path, root / rel)
    return root


@pytest.fixture(scope="module")
def mono12_package(mono12_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pkg12") / "brick12"
    with contextlib.redirect_stdout(io.StringIO()):
        # float: the parity check below holds the export to the torch model
        train(mono12_data, out, seed=1, max_bank=256, precision="float")
    return out


def test_sixteen_bit_training_declares_its_frames(mono12_package: Path) -> None:
    manifest = load_package(mono12_package).manifest
    assert manifest.input.bit_depth == 12  # no value above 4095 in 16-bit containers
    assert manifest.frames is not None and manifest.frames.channels == 1
    assert manifest.frames.min_size == (64, 64) and manifest.frames.max_size == (256, 256)


def test_sixteen_bit_package_evaluates_and_the_device_agrees(
    mono12_package: Path, mono12_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.json"
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluate(mono12_package, mono12_data, out, latency_runs=3, plots=False)
    assert metrics["score_parity_max_abs_diff"] < 1e-3
    assert metrics["image_auroc"] is not None
    expected = {
        Path(row["file"]).name: row["score"]
        for row in metrics["per_image"]
        if row["file"].startswith("good/")
    }
    good = tmp_path / "frames"
    good.mkdir()
    for name in expected:
        (good / name).write_bytes((mono12_data / "good" / name).read_bytes())
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "inspect", "--model", str(mono12_package)]
        + ["--images", str(good), "--out", str(results), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    seen = {m["part_id"]: m for m in map(json.loads, results.read_text().splitlines())}
    assert set(seen) == set(expected)
    for part, score in expected.items():
        assert seen[part]["score"] == pytest.approx(score, abs=1e-4)


def test_an_eight_bit_frame_for_a_sixteen_bit_model_is_manual(
    mono12_package: Path, sample: Path, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    source = sorted((sample / "brick" / "good").glob("*.png"))[0]
    Image.open(source).convert("L").save(frames / "eight.png")
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "inspect", "--model", str(mono12_package)]
        + ["--images", str(frames), "--out", str(results), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    (result,) = map(json.loads, results.read_text().splitlines())
    assert result["decision"] == "manual", proc.stderr[-500:]
    assert result["reason"].startswith("image_bit_depth: 8-bit L frame, the model takes 12-bit")


def test_evaluating_eight_bit_images_with_a_sixteen_bit_model_names_them(
    mono12_package: Path, sample: Path, tmp_path: Path
) -> None:
    expected = r"good/.*\.png: the model does not take this image"
    with pytest.raises(DatasetError, match=expected), contextlib.redirect_stdout(io.StringIO()):
        evaluate(mono12_package, sample / "brick", tmp_path / "m.json", plots=False)


def test_training_images_of_mixed_bit_depth_are_named(mono12_data: Path, tmp_path: Path) -> None:
    paths = sorted((mono12_data / "good").glob("*.png"))
    odd = tmp_path / "odd.png"
    Image.open(paths[0]).point(lambda v: v / 16).convert("L").save(odd)
    with pytest.raises(DatasetError, match=r"most are 16-bit 1-channel, these are not: .*odd\.png"):
        describe_frames([*paths, odd])


def test_sixteen_bit_data_above_4095_declares_sixteen_bits(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(np.full((32, 40), 60000, np.uint16)).save(path)
    bits, frames = describe_frames([path])
    assert bits == 16 and frames.channels == 1
    assert frames.min_size == (20, 16) and frames.max_size == (80, 64)


def test_eight_bit_training_declares_its_frames_where_older_inspectors_read_them(
    package: Path,
) -> None:
    doc = json.loads((package / "manifest.json").read_text())
    assert "bit_depth" not in doc["input"]  # 8-bit: the input section is as it was
    assert doc["metrics"]["frames"] == {
        "channels": 1,
        "min_size": [64, 64],
        "max_size": [256, 256],
    }


def test_a_declared_bit_depth_is_kept_when_every_value_fits(tmp_path: Path) -> None:
    mono10 = tmp_path / "mono10.png"
    Image.fromarray(np.full((32, 40), 1000, np.uint16)).save(mono10)
    # read from the data alone, 1000 fits 12 bits; the camera is Mono10
    assert describe_frames([mono10])[0] == 12
    assert describe_frames([mono10], bit_depth=10)[0] == 10
    with pytest.raises(DatasetError, match=r"values up to 1000, beyond 9 bits \(0\.\.511\)"):
        describe_frames([mono10], bit_depth=9)
    with pytest.raises(DatasetError, match="bit depth must be 9..16, got 8"):
        describe_frames([mono10], bit_depth=8)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 40), 100, np.uint8)).save(grey)
    with pytest.raises(DatasetError, match="for 16-bit mono images; these are 8-bit"):
        describe_frames([grey], bit_depth=12)


def test_train_cli_declares_the_bit_depth_it_is_given(mono12_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", "--data", str(mono12_data), "--model-dir",
         str(out), "--max-bank", "64", "--bit-depth", "14"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_package(out).manifest.input.bit_depth == 14

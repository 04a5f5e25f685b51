"""``python -m inspector``: the one-shot mode on a folder of good and bad images, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.cli import main
from inspector.messages import MAX_RESULT_BYTES, validate_result
from tests.inspector.conftest import bad_images
from tests.support.tiny_model import image_bytes, part_image

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'edge_component'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "inspector", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    (folder / "good-1.png").write_bytes(image_bytes(part_image(0.0, 64)))
    (folder / "good-2.jpg").write_bytes(image_bytes(part_image(0.02, 48), "JPEG"))
    (folder / "edge-3.png").write_bytes(image_bytes(part_image(0.15, 32)))
    (folder / "bad-4.bmp").write_bytes(image_bytes(part_image(0.3, 32), "BMP"))
    for name, (data, _) in bad_images().items():
        (folder / f"x-{name}.img").write_bytes(data)
    noise = np.random.default_rng(3).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    (folder / "x-huge_bytes.png").write_bytes(image_bytes(Image.fromarray(noise)))  # ~270 kB
    (folder / "subdir").mkdir()  # not a file: not judged
    return folder


def test_one_shot_writes_one_result_per_file(
    tiny_package_dir: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "results.jsonl"
    proc = _cli(
        "inspect",
        "--model",
        str(tiny_package_dir),
        "--images",
        str(images),
        "--out",
        str(out),
        "--plant",
        "p1",
        "--line",
        "l2",
        "--station",
        "s3",
        "--device",
        "d4",
        "--max-image-bytes",
        "200000",
    )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_bytes().splitlines()
    files = sorted(p for p in images.iterdir() if p.is_file())
    assert len(lines) == len(files)
    results = {}
    for line in lines:
        assert len(line) <= MAX_RESULT_BYTES
        result = validate_result(json.loads(line))
        results[result["part_id"]] = result
    assert set(results) == {p.name for p in files}
    assert [r["seq"] for r in map(json.loads, lines)] == list(range(1, len(files) + 1))
    assert {r["model"] for r in results.values()} == {"tiny@1.0.0"}
    assert {(r["plant"], r["line"], r["station"], r["device"]) for r in results.values()} == {
        ("p1", "l2", "s3", "d4")
    }
    assert results["good-1.png"]["decision"] == "pass"
    assert results["good-2.jpg"]["decision"] == "pass"
    assert (results["edge-3.png"]["decision"], results["edge-3.png"]["reason"]) == (
        "manual",
        "manual_band",
    )
    assert results["bad-4.bmp"]["decision"] == "reject"
    for name, (_, reason) in bad_images().items():
        result = results[f"x-{name}.img"]
        assert result["decision"] == "manual", name
        assert result["reason"].startswith(reason), (name, result["reason"])
    assert results["x-huge_bytes.png"]["decision"] == "manual"
    assert results["x-huge_bytes.png"]["reason"] == "image_oversized: 200001 bytes > 200000"
    assert f"wrote {len(files)} result(s)" in proc.stderr
    assert "[1/" in proc.stderr


def test_help() -> None:
    proc = _cli("--help")
    assert proc.returncode == 0 and "inspect" in proc.stdout and "run" in proc.stdout
    proc = _cli("inspect", "--help")
    assert proc.returncode == 0 and "--images" in proc.stdout


def test_bad_model_is_one_clear_line_and_exit_2(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "inspect",
            "--model",
            str(tmp_path / "nope"),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "r.jsonl"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: cannot load model package") and "not found" in err[-1]


def test_missing_images_folder_is_exit_2(
    tiny_package_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "inspect",
            "--model",
            str(tiny_package_dir),
            "--images",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "r.jsonl"),
        ]
    )
    assert code == 2
    assert "image directory not found" in capsys.readouterr().err


def test_empty_folder_writes_an_empty_file(tiny_package_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "r.jsonl"
    assert (
        main(
            [
                "inspect",
                "-q",
                "--model",
                str(tiny_package_dir),
                "--images",
                str(tmp_path / "empty"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes() == b""

"""The sample data generator: deterministic, several products, small masked defects."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.sample_data import DEFECT_TYPES, PRODUCTS, Size, generate_product, main

TINY = Size(good=3, per_defect_type=1, side=96)


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    product = PRODUCTS[0]
    generate_product(product, tmp_path / "a", TINY, seed=1)
    generate_product(product, tmp_path / "b", TINY, seed=1)
    generate_product(product, tmp_path / "c", TINY, seed=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_products_modes_and_small_masked_defects(sample: Path) -> None:
    assert Image.open(sample / "brick" / "good" / "0000.png").mode == "L"
    assert Image.open(sample / "tissue" / "good" / "0000.png").mode == "RGB"
    for kind in DEFECT_TYPES:
        image_path = sample / "brick" / "defect" / kind / f"{kind}_000.png"
        mask = np.asarray(Image.open(sample / "brick" / "masks" / kind / image_path.name)) > 0
        assert mask.shape == (128, 128)
        assert 0 < mask.mean() < 0.12, (kind, mask.mean())


def test_good_images_vary(sample: Path) -> None:
    images = [
        np.asarray(Image.open(p), dtype=np.float32)
        for p in sorted((sample / "brick" / "good").glob("*.png"))[:4]
    ]
    assert all(np.abs(images[0] - other).mean() > 5 for other in images[1:])


def test_cli_unknown_product_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path), "--products", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown product")

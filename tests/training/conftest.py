"""Fixtures for the training tests: a tiny generated sample and one package trained on it."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from training.sample_data import PRODUCTS, Size, generate_product

TINY = Size(good=16, per_defect_type=1, side=128)


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sample: grayscale ``brick`` and colour ``tissue`` (16 good, 6 defect each)."""
    root = tmp_path_factory.mktemp("sample")
    for product in PRODUCTS:
        if product.name in ("brick", "tissue"):
            generate_product(product, root / product.name, TINY, seed=3)
    return root


@pytest.fixture(scope="session")
def package(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model package trained on the tiny brick sample (small bank: the test is about plumbing)."""
    from training.train import train

    out = tmp_path_factory.mktemp("package") / "brick"
    with contextlib.redirect_stdout(io.StringIO()):
        train(sample / "brick", out, seed=1, max_bank=256, version="1.2.3")
    return out


def assert_onnx_scores_alike(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """``model`` exported (dynamic batch) to ``path`` scores ``x`` in ONNX Runtime as in torch."""
    from training.model import _export
    from training.scoring import onnx_session

    _export(model.eval(), x[:1], path, dynamic_batch=True)
    session = onnx_session(path)
    score, amap = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected_score, expected_map = model(x)
    assert np.allclose(score, expected_score.numpy(), atol=1e-4)
    assert np.allclose(amap, expected_map.numpy(), atol=1e-4)

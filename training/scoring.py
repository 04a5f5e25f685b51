"""Scoring images with an exported package exactly as the device does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from inspector.model_package import InputSpec
from inspector.preprocess import to_tensor


def load_tensor(path: Path, spec: InputSpec) -> np.ndarray:
    """Decode an image file and preprocess it through the device's :func:`to_tensor`."""
    with Image.open(path) as image:
        image.load()
        return to_tensor(image, spec)


def onnx_session(model_path: Path, threads: int = 1):  # noqa: ANN201 - onnxruntime type
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def score_tensors(
    session, input_name: str, tensors: Sequence[np.ndarray], batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime image scores ``(N,)`` and anomaly maps ``(N, H, W)`` for input tensors."""
    scores, maps = [], []
    for start in range(0, len(tensors), batch_size):
        batch = np.stack(tensors[start : start + batch_size]).astype(np.float32)
        score, amap = session.run(None, {input_name: batch})
        scores.append(score)
        maps.append(amap)
    if not scores:
        return np.zeros(0, np.float32), np.zeros((0, 0, 0), np.float32)
    return np.concatenate(scores), np.concatenate(maps)

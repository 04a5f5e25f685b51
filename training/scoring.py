"""Scoring images with an exported package exactly as the device does, and threshold rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from inspector.model_package import InputSpec, Thresholds
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


def calibrate(good: np.ndarray, defect: np.ndarray) -> tuple[Thresholds, str]:
    """Decision thresholds from validation scores only; returns them and the rule used.

    With defect images: ``reject`` is the F1-best cut (midway between neighbouring scores) and
    ``manual`` is the lower of ``reject`` and the 2nd percentile of defect scores, but never below
    the good images' 90th percentile (so the manual band stays narrow). Good images only:
    ``manual`` is their 99th percentile and ``reject`` their maximum plus half the spread above
    the median — rejecting needs a clear outlier, near-misses go to a person.
    """
    good = np.sort(np.asarray(good, dtype=np.float64))
    defect = np.sort(np.asarray(defect, dtype=np.float64))
    if good.size == 0:
        raise ValueError("calibration needs at least one good validation image")
    if defect.size:
        values = np.unique(np.concatenate([good, defect]))
        cuts = np.concatenate([(values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
        best_f1, best_cut = -1.0, float(cuts[-1])
        for cut in cuts:
            tp = float((defect >= cut).sum())
            fp = float((good >= cut).sum())
            fn = defect.size - tp
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            if f1 > best_f1 + 1e-12:
                best_f1, best_cut = f1, float(cut)
        reject = best_cut
        manual = min(reject, float(np.quantile(defect, 0.02)))
        manual = min(reject, max(manual, float(np.quantile(good, 0.9))))
        return Thresholds(reject=reject, manual=manual), "validation F1-best (good + defect)"
    top = float(good[-1])
    median = float(np.median(good))
    reject = top + 0.5 * max(top - median, 1e-6)
    manual = min(reject, float(np.quantile(good, 0.99)))
    return Thresholds(reject=reject, manual=manual), "validation good-score quantiles"

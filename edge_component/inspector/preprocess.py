"""Frame → model input, exactly as the model package's manifest says.

Training, evaluation and the device all call :func:`to_tensor`, so a score computed at
evaluation time is the score the device computes for the same image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from inspector.model_package import InputSpec

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
}


def to_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """Convert a decoded image to a ``(channels, height, width)`` float32 array.

    Steps: convert to ``spec.color`` (any mode, grayscale included), resize to
    ``spec.width × spec.height`` with ``spec.resize``, then ``(pixel - mean) / std`` per channel.
    """
    converted = image.convert(spec.color)
    if converted.size != (spec.width, spec.height):
        converted = converted.resize((spec.width, spec.height), _RESAMPLE[spec.resize])
    array = np.asarray(converted, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1))

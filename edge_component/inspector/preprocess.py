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
    # convert() copies even when the mode already matches; skip that copy
    converted = image if image.mode == spec.color else image.convert(spec.color)
    if converted.size != (spec.width, spec.height):
        converted = converted.resize((spec.width, spec.height), _RESAMPLE[spec.resize])
    pixels = np.asarray(converted)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    # Normalise straight into the (C, H, W) result: the same float32 operations as
    # ``(float32(pixels) - mean) / std``, hence the same values, without three temporaries.
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    chw = pixels.transpose(2, 0, 1)
    out = np.empty(chw.shape, dtype=np.float32)
    np.subtract(chw, mean, out=out, dtype=np.float32)
    np.divide(out, std, out=out)
    return out

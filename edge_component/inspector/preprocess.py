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


MONO16_MODES = ("I;16", "I;16B", "I;16L")
# the containers of 16-bit mono data (Mono10/12/14/16): without a declared bit depth, the
# smallest one holding the frame's largest value (12-bit data in a 16-bit PNG has max 4095)
_MONO16_BITS = (10, 12, 14, 16)


def mono16_bits(pixels: np.ndarray, declared: int | None) -> int:
    """Significant bits of a 16-bit mono frame: the manifest's, else the frame's own range."""
    if declared is not None:
        return declared
    top = int(pixels.max()) if pixels.size else 0
    return next(bits for bits in _MONO16_BITS if top < 1 << bits)


def to_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """Convert a decoded image to a ``(channels, height, width)`` float32 array.

    Steps: convert to ``spec.color`` (any mode, grayscale included; RGBA drops its alpha),
    resize to ``spec.width × spec.height`` with ``spec.resize``, then ``(pixel - mean) / std``
    per channel. 16-bit mono frames are first brought to 0..255 by their bit depth
    (:func:`mono16_bits`), kept in floats, so no precision is lost to an 8-bit round trip.
    """
    if image.mode in MONO16_MODES:
        pixels = _mono16(image, spec)
    else:
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
    # the result's shape is the formula's broadcast (a 1-channel frame under 3-channel stats)
    out = np.empty(np.broadcast_shapes(chw.shape, mean.shape, std.shape), dtype=np.float32)
    np.subtract(chw, mean, out=out, dtype=np.float32)
    np.divide(out, std, out=out)
    return out


def _mono16(image: Image.Image, spec: InputSpec) -> np.ndarray:
    pixels = np.asarray(image).astype(np.float32)
    scale = 255.0 / ((1 << mono16_bits(pixels, spec.bit_depth)) - 1)
    plane = Image.fromarray(np.clip(pixels * scale, 0.0, 255.0), mode="F")
    if plane.size != (spec.width, spec.height):
        plane = plane.resize((spec.width, spec.height), _RESAMPLE[spec.resize])
    grey = np.asarray(plane, dtype=np.float32)
    # grey to RGB repeats the value in every channel, as PIL's L → RGB does
    return np.repeat(grey[:, :, None], 3, axis=2) if spec.color == "RGB" else grey

"""Frame → model input, exactly as the model package's manifest says.

Training, evaluation and the device all call :func:`to_tensor`, so a score computed at
evaluation time is the score the device computes for the same image. A frame the model does
not take (:func:`check_frame`) raises :class:`~inspector.decode.FrameError`, which the engine
turns into ``manual`` with its reason.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from inspector.decode import SIXTEEN_BIT_MODES, FrameError
from inspector.model_package import FrameSpec, InputSpec

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
}

# Reason codes of frames that decode but do not fit the model's declared input.
BIT_DEPTH = "image_bit_depth"
CHANNELS = "image_channels"
SIZE = "image_size"


def frame_channels(image: Image.Image) -> int:
    """1 for grey and 16-bit mono frames, 3 for colour (RGBA's alpha is dropped)."""
    return 1 if image.mode == "L" or image.mode in SIXTEEN_BIT_MODES else 3


def check_frame(image: Image.Image, spec: InputSpec, frames: FrameSpec | None = None) -> None:
    """Raise :class:`FrameError` unless the model takes this frame (bit depth, channels, size).

    A model without a declared bit depth takes 8-bit frames only; one with ``bit_depth`` above
    8 takes 16-bit mono frames only. With ``frames`` (``metrics.frames``), a grey frame is
    refused by a colour model (a colour frame for a grey model is converted to grey) and a frame
    outside the size range is refused.
    """
    sixteen = image.mode in SIXTEEN_BIT_MODES
    if sixteen and not spec.sixteen_bit:
        raise FrameError(BIT_DEPTH, f"16-bit {image.mode} frame, the model takes 8-bit frames")
    if spec.sixteen_bit and not sixteen:
        raise FrameError(
            BIT_DEPTH, f"8-bit {image.mode} frame, the model takes {spec.bit_depth}-bit mono"
        )
    if frames is None:
        return
    if frames.channels == 3 and frame_channels(image) == 1:
        raise FrameError(CHANNELS, f"1-channel {image.mode} frame, the model takes 3 (colour)")
    width, height = image.size
    (low_w, low_h), (high_w, high_h) = frames.min_size, frames.max_size
    if not (low_w <= width <= high_w and low_h <= height <= high_h):
        raise FrameError(SIZE, f"{width}x{height} px outside {low_w}x{low_h}..{high_w}x{high_h}")


def to_tensor(image: Image.Image, spec: InputSpec, frames: FrameSpec | None = None) -> np.ndarray:
    """Convert a decoded image to a ``(channels, height, width)`` float32 array.

    First :func:`check_frame`. Then: convert to ``spec.color`` (any mode, grayscale included;
    RGBA drops its alpha; a colour frame for a grey model, per ``frames``, goes to grey first),
    resize to ``spec.width × spec.height`` with ``spec.resize``, then ``(pixel - mean) / std``
    per channel. 16-bit mono frames are first brought to 0..255 by the declared bit depth,
    ``value * 255 / (2**bit_depth - 1)``, never by the frame's own range (the same scene gives
    the same input in any frame), kept in floats so no precision is lost to an 8-bit round trip;
    a value above the bit depth's range raises :class:`FrameError` (``image_bit_depth``).
    """
    check_frame(image, spec, frames)
    if image.mode in SIXTEEN_BIT_MODES:
        pixels = _mono16(image, spec)
    else:
        if frames is not None and frames.channels == 1 and image.mode != "L":
            image = image.convert("L")
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
    bits = spec.bit_depth or 16
    pixels = np.asarray(image).astype(np.float32)
    top = (1 << bits) - 1
    if pixels.size and (pixels.max() > top or pixels.min() < 0):
        raise FrameError(
            BIT_DEPTH,
            f"values {int(pixels.min())}..{int(pixels.max())} outside the {bits}-bit range 0..{top}",
        )
    plane = Image.fromarray(pixels * np.float32(255.0 / top), mode="F")
    if plane.size != (spec.width, spec.height):
        plane = plane.resize((spec.width, spec.height), _RESAMPLE[spec.resize])
    grey = np.asarray(plane, dtype=np.float32)
    # grey to RGB repeats the value in every channel, as PIL's L → RGB does
    return np.repeat(grey[:, :, None], 3, axis=2) if spec.color == "RGB" else grey

"""Frame → model input(s), and model outputs → the frame's score, as the manifest says.

Training, evaluation and the device all call :func:`frame_tensors` (a decoded frame → one
tensor per tile) and :func:`combine_tiles` (the tiles' scores and maps → the frame's), so a
score computed at evaluation time is the score the device computes for the same image. A frame
the model does not take (:func:`check_frame`) raises :class:`~inspector.decode.FrameError`,
which the engine turns into ``manual`` with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from inspector.decode import SIXTEEN_BIT_MODES, FrameError
from inspector.model_package import FrameSpec, InputSpec

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), in pixels

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
}

# Reason codes of frames that decode but do not fit the model's declared input.
BIT_DEPTH = "image_bit_depth"
CHANNELS = "image_channels"
SIZE = "image_size"
ROI = "image_roi"


def frame_channels(image: Image.Image) -> int:
    """1 for grey and 16-bit mono frames, 3 for colour (RGBA's alpha is dropped)."""
    return 1 if image.mode == "L" or image.mode in SIXTEEN_BIT_MODES else 3


def check_frame(image: Image.Image, spec: InputSpec, frames: FrameSpec | None = None) -> None:
    """Raise :class:`FrameError` unless the model takes this frame (bit depth, channels, size).

    A model without a declared bit depth takes 8-bit frames only; one with ``bit_depth`` above
    8 takes 16-bit mono frames only. With ``frames`` (``metrics.frames``), a grey frame is
    refused by a colour model (a colour frame for a grey model is converted to grey) and a frame
    outside the size range is refused. A frame that does not contain the region of interest
    (``spec.roi``) is refused with ``image_roi``.
    """
    sixteen = image.mode in SIXTEEN_BIT_MODES
    if sixteen and not spec.sixteen_bit:
        raise FrameError(BIT_DEPTH, f"16-bit {image.mode} frame, the model takes 8-bit frames")
    if spec.sixteen_bit and not sixteen:
        raise FrameError(
            BIT_DEPTH, f"8-bit {image.mode} frame, the model takes {spec.bit_depth}-bit mono"
        )
    if spec.roi is not None:
        x, y, w, h = spec.roi
        if x + w > image.width or y + h > image.height:
            raise FrameError(
                ROI,
                f"{image.width}x{image.height} px frame does not contain the region of interest "
                f"{w}x{h} at {x},{y} (needs at least {x + w}x{y + h})",
            )
    if frames is None:
        return
    if frames.channels == 3 and frame_channels(image) == 1:
        raise FrameError(CHANNELS, f"1-channel {image.mode} frame, the model takes 3 (colour)")
    width, height = image.size
    (low_w, low_h), (high_w, high_h) = frames.min_size, frames.max_size
    if not (low_w <= width <= high_w and low_h <= height <= high_h):
        raise FrameError(SIZE, f"{width}x{height} px outside {low_w}x{low_h}..{high_w}x{high_h}")


@dataclass(frozen=True)
class Tile:
    """Where one model input comes from and where its pixels sit in that input.

    ``box`` is in frame pixels; ``content`` is the part of the model's ``width × height`` the
    box fills (all of it with ``fit: stretch``, centred with its aspect kept with ``pad``).
    """

    box: Box
    content: Box


def region(size: tuple[int, int], spec: InputSpec) -> Box:
    """The part of a ``(width, height)`` frame the model judges: the ROI, else all of it."""
    if spec.roi is None:
        return (0, 0, size[0], size[1])
    x, y, w, h = spec.roi
    return (x, y, x + w, y + h)


def frame_layout(size: tuple[int, int], spec: InputSpec) -> list[Tile]:
    """The model inputs of a ``(width, height)`` frame, row by row (one without tiles)."""
    left, top, right, bottom = region(size, spec)
    out = []
    for tile in _tiles((right - left, bottom - top), spec):
        x0, y0, x1, y1 = tile.box
        out.append(Tile((left + x0, top + y0, left + x1, top + y1), tile.content))
    return out


def _tiles(size: tuple[int, int], spec: InputSpec) -> list[Tile]:
    """The tiles of a region of ``(width, height)``, in the region's own pixels."""
    tiles = spec.tiles
    rows, cols, overlap = (tiles.rows, tiles.cols, tiles.overlap) if tiles else (1, 1, 0.0)
    return [
        Tile(box=(x0, y0, x1, y1), content=_content((x1 - x0, y1 - y0), spec))
        for y0, y1 in _spans(size[1], rows, overlap)
        for x0, x1 in _spans(size[0], cols, overlap)
    ]


def _spans(length: int, count: int, overlap: float) -> list[tuple[int, int]]:
    """``count`` spans of equal size covering ``0..length``, neighbours sharing ``overlap``."""
    if count == 1:
        return [(0, length)]
    size = min(length, max(1, math.ceil(length / (count - (count - 1) * overlap))))
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    return [(start, start + size) for start in starts]


def _content(size: tuple[int, int], spec: InputSpec) -> Box:
    if spec.fit == "stretch":
        return (0, 0, spec.width, spec.height)
    scale = min(spec.width / size[0], spec.height / size[1])
    width = min(spec.width, max(1, round(size[0] * scale)))
    height = min(spec.height, max(1, round(size[1] * scale)))
    left, top = (spec.width - width) // 2, (spec.height - height) // 2
    return (left, top, left + width, top + height)


def frame_tensors(
    image: Image.Image,
    spec: InputSpec,
    frames: FrameSpec | None = None,
    *,
    align_strict: bool = True,
) -> np.ndarray:
    """Convert a decoded frame to the model's inputs, ``(tiles, channels, height, width)``.

    First :func:`check_frame`. Then: convert to ``spec.color`` (any mode, grayscale included;
    RGBA drops its alpha; a colour frame for a grey model, per ``frames``, goes to grey first),
    cut the region of interest (``spec.roi``, default the whole frame) into the tiles of
    :func:`frame_layout` (one without ``spec.tiles``), resize each to ``spec.width ×
    spec.height`` with ``spec.resize`` (``fit: pad`` keeps its aspect and leaves the rest 0,
    the normalised mean), then ``(pixel - mean) / std`` per channel. 16-bit mono frames are
    first brought to 0..255 by the declared bit depth, ``value * 255 / (2**bit_depth - 1)``,
    never by the frame's own range (the same scene gives the same input in any frame), kept in
    floats so no precision is lost to an 8-bit round trip; a value above the bit depth's range
    raises :class:`FrameError` (``image_bit_depth``). With ``spec.align`` each input is
    registered to the part's reference pose before it is normalised (:mod:`inspector.align`); one
    that does not register raises :class:`FrameError` (``image_align``) — unless
    ``align_strict`` is false (training and evaluation score every image they are given: they
    take the best registration found and count such images instead, docs/training.md).
    """
    check_frame(image, spec, frames)
    aligner = None
    if spec.align is not None:
        from inspector.align import registrar  # numpy FFTs: only models that align load it

        aligner = registrar(spec.align)
    area = region(image.size, spec)
    whole = area == (0, 0, image.width, image.height)
    if image.mode in SIXTEEN_BIT_MODES:
        source = _mono16(image, spec, area)
    else:
        if not whole:
            image = image.crop(area)  # before converting: a 5 MP frame is converted once, cut
        if frames is not None and frames.channels == 1 and image.mode != "L":
            image = image.convert("L")
        # convert() copies even when the mode already matches; skip that copy
        source = image if image.mode == spec.color else image.convert(spec.color)
    layout = _tiles(source.size, spec)  # the source is the region alone
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    # the result's channels are the formula's broadcast (a 1-channel frame under 3-channel stats)
    channels = np.broadcast_shapes((spec.channels, 1, 1), mean.shape, std.shape)[0]
    shape = (len(layout), channels, spec.height, spec.width)
    padded = any(t.content != (0, 0, spec.width, spec.height) for t in layout)
    # padding is 0 after normalisation: the mean, whatever the mean is
    out = np.zeros(shape, dtype=np.float32) if padded else np.empty(shape, dtype=np.float32)
    for index, tile in enumerate(layout):
        part = source if tile.box == (0, 0, *source.size) else source.crop(tile.box)
        left, top, right, bottom = tile.content
        if part.size != (right - left, bottom - top):
            part = part.resize((right - left, bottom - top), _RESAMPLE[spec.resize])
        pixels = np.asarray(part, dtype=np.float32 if part.mode == "F" else None)
        if part.mode == "F" and spec.color == "RGB":
            # grey to RGB repeats the value in every channel, as PIL's L → RGB does
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if aligner is not None:
            pixels, _ = aligner.align(pixels.astype(np.float32, copy=False), strict=align_strict)
        # Normalise straight into the (C, H, W) result: the same float32 operations as
        # ``(float32(pixels) - mean) / std``, hence the same values, without three temporaries.
        view = out[index, :, top:bottom, left:right]
        np.subtract(pixels.transpose(2, 0, 1), mean, out=view, dtype=np.float32)
        np.divide(view, std, out=view)
    return out


def to_tensor(
    image: Image.Image,
    spec: InputSpec,
    frames: FrameSpec | None = None,
    *,
    align_strict: bool = True,
) -> np.ndarray:
    """The one ``(channels, height, width)`` input of a model without tiles (:func:`frame_tensors`).

    A tiled model has several inputs per frame: ask :func:`frame_tensors` for them.
    """
    if spec.tiles is not None and spec.tiles.count > 1:
        raise ValueError(f"{spec.tiles.count} tiles per frame: use frame_tensors")
    return frame_tensors(image, spec, frames, align_strict=align_strict)[0]


def combine_tiles(
    scores: Sequence[float],
    maps: Sequence[np.ndarray] | None,
    spec: InputSpec,
    size: tuple[int, int],
) -> tuple[float, np.ndarray | None]:
    """The frame's score (the highest of its tiles') and its anomaly map, stitched.

    ``scores`` and ``maps`` are the model's outputs for :func:`frame_tensors`' inputs of a
    ``(width, height)`` frame, in order. A NaN tile score makes the frame's score NaN (never
    judged as good). The map covers the region of interest (padding cut away) at the model's
    map resolution per tile; where tiles overlap it keeps the highest value. Without tiles,
    ROI and padding it is the model's own map. ``maps`` None: the map is None.
    """
    layout = frame_layout(size, spec)
    if len(scores) != len(layout):
        raise ValueError(f"{len(scores)} tile scores for a frame of {len(layout)} tiles")
    score = float(np.max(np.asarray(scores, dtype=np.float64)))
    if maps is None:
        return score, None
    if len(maps) != len(layout):
        raise ValueError(f"{len(maps)} tile maps for a frame of {len(layout)} tiles")
    planes = [_plane(m) for m in maps]
    map_h, map_w = planes[0].shape
    sx, sy = map_w / spec.width, map_h / spec.height
    crops = []
    for tile, plane in zip(layout, planes, strict=True):
        left, top, right, bottom = tile.content
        crops.append(
            plane[round(top * sy) : round(bottom * sy), round(left * sx) : round(right * sx)]
        )
    first = layout[0]
    # map cells per frame pixel: the tiles' own scale (all tiles are one size)
    fx = crops[0].shape[1] / (first.box[2] - first.box[0])
    fy = crops[0].shape[0] / (first.box[3] - first.box[1])
    rx, ry, rr, rb = region(size, spec)
    canvas = np.full((round((rb - ry) * fy), round((rr - rx) * fx)), -np.inf, dtype=np.float32)
    for tile, crop in zip(layout, crops, strict=True):
        x0, y0 = round((tile.box[0] - rx) * fx), round((tile.box[1] - ry) * fy)
        x1, y1 = round((tile.box[2] - rx) * fx), round((tile.box[3] - ry) * fy)
        if crop.shape != (y1 - y0, x1 - x0):
            crop = np.asarray(
                Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F").resize(
                    (x1 - x0, y1 - y0), Image.Resampling.BILINEAR
                ),
                dtype=np.float32,
            )
        np.maximum(canvas[y0:y1, x0:x1], crop, out=canvas[y0:y1, x0:x1])
    if len(layout) == 1 and canvas.shape == planes[0].shape:
        return score, planes[0]  # the model's own map, untouched
    return score, canvas


def _plane(anomaly_map: np.ndarray) -> np.ndarray:
    """A tile's map as ``(height, width)``: models may keep a channel axis of one."""
    plane = np.asarray(anomaly_map)
    while plane.ndim > 2 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2:
        raise ValueError(f"anomaly map of shape {np.shape(anomaly_map)}, expected (height, width)")
    return plane


def _mono16(image: Image.Image, spec: InputSpec, area: Box) -> Image.Image:
    """The region of a 16-bit mono frame as a float plane in 0..255, by the declared bit depth."""
    bits = spec.bit_depth or 16
    pixels = np.asarray(image)
    top = (1 << bits) - 1
    if pixels.size and (pixels.max() > top or pixels.min() < 0):
        raise FrameError(
            BIT_DEPTH,
            f"values {int(pixels.min())}..{int(pixels.max())} outside the {bits}-bit range 0..{top}",
        )
    left, upper, right, lower = area
    plane = pixels[upper:lower, left:right].astype(np.float32)
    return Image.fromarray(plane * np.float32(255.0 / top), mode="F")

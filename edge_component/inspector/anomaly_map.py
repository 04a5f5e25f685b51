"""The anomaly map a sample keeps: the model's map, reduced to a small grid, as a grey PNG.

A model package may name an ``anomaly_map`` output (``outputs.anomaly_map`` in its manifest):
per-pixel (or per-patch) anomaly on the same scale as the image score. The engine reduces the
frame's stitched map to at most :data:`MAX_CELLS` cells on its longer side (the mean of each
block: a heat map for a person, not a measurement) and the sampler stores it with the image, as
an 8-bit grey PNG in which :data:`AT_THRESHOLD` is the reject threshold the part was judged
against, 0 is a score of 0 or less and 255 is 1.5 × the threshold or more. The review station
draws it over the image as a translucent heat overlay.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

MAX_CELLS = 32
AT_THRESHOLD = 170  # the grey level of a cell whose anomaly equals the reject threshold
FULL_SCALE = 255 / AT_THRESHOLD  # the anomaly, in thresholds, of a white cell (1.5)


def reduce_map(anomaly_map: np.ndarray, max_cells: int = MAX_CELLS) -> np.ndarray:
    """A 2-D float32 grid of at most ``max_cells`` per side: block means of ``anomaly_map``.

    Leading unit dimensions (``(1, 1, H, W)``) are dropped; non-finite cells count as 0.
    """
    plane = np.asarray(anomaly_map, dtype=np.float32)
    while plane.ndim > 2 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2 or plane.size == 0:
        raise ValueError(f"anomaly map of shape {np.shape(anomaly_map)}: not one 2-D plane")
    plane = np.nan_to_num(plane, nan=0.0, posinf=0.0, neginf=0.0)
    height, width = plane.shape
    step = max(1, math.ceil(max(height, width) / max_cells))
    if step == 1:
        return np.ascontiguousarray(plane)
    rows, cols = height // step, width // step
    if rows and cols:  # whole blocks: a reshape and a mean, no resampling
        blocks = plane[: rows * step, : cols * step].reshape(rows, step, cols, step)
        return np.ascontiguousarray(blocks.mean(axis=(1, 3)), dtype=np.float32)
    size = (max(1, round(width / step)), max(1, round(height / step)))
    image = Image.fromarray(np.ascontiguousarray(plane))
    return np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float32)


def frame_map(
    anomaly_map: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]
) -> np.ndarray:
    """A map of the region ``box`` (left, top, right, bottom) of a ``(width, height)`` frame,
    placed on a zero map of the whole frame at the map's own scale, so it overlays the image."""
    plane = np.asarray(anomaly_map, dtype=np.float32)
    while plane.ndim > 2 and plane.shape[0] == 1:
        plane = plane[0]
    left, top, right, bottom = box
    width, height = size
    if (left, top, right, bottom) == (0, 0, width, height) or plane.ndim != 2:
        return plane
    fy, fx = plane.shape[0] / max(1, bottom - top), plane.shape[1] / max(1, right - left)
    canvas = np.zeros((max(1, round(height * fy)), max(1, round(width * fx))), dtype=np.float32)
    y0, x0 = round(top * fy), round(left * fx)
    part = plane[: canvas.shape[0] - y0, : canvas.shape[1] - x0]
    canvas[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]] = part
    return canvas


def encode_map(grid: np.ndarray, threshold: float) -> bytes:
    """The grid as an 8-bit grey PNG scaled to the reject ``threshold`` (see the module doc)."""
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"anomaly map threshold {threshold!r}: must be a positive number")
    scaled = np.clip(np.asarray(grid, dtype=np.float32) / threshold * AT_THRESHOLD, 0, 255)
    out = io.BytesIO()
    Image.fromarray(np.round(scaled).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def decode_map(png: bytes) -> np.ndarray:
    """An encoded map back to its uint8 grid (tests, tools)."""
    with Image.open(io.BytesIO(png)) as image:
        if image.mode != "L":
            raise ValueError(f"anomaly map PNG of mode {image.mode}; expected L")
        return np.asarray(image, dtype=np.uint8)

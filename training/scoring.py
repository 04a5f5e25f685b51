"""Scoring images with an exported package exactly as the device does.

A frame becomes its model inputs through the device's :func:`~inspector.preprocess.frame_tensors`
(region of interest, fit, tiles) and its score through
:func:`~inspector.preprocess.combine_tiles`; training, calibration and evaluation go through
:func:`load_frame` and :func:`score_frames` here, so they see what the device sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from inspector.decode import SIXTEEN_BIT_MODES, FrameError
from inspector.model_package import FrameSpec, InputSpec
from inspector.preprocess import combine_tiles, frame_channels, frame_tensors, to_tensor
from training.errors import DatasetError

# A frame may be half to twice the training images' sides: beyond that the resize changes the
# scale of the texture the model learned, so the device refuses it (``image_size``).
SIZE_FACTOR = 2
# 16-bit training data declares the smallest of these holding its largest value
_SIXTEEN_BIT_DEPTHS = (12, 16)
MIN_DECLARED_BITS = 9


def load_tensor(path: Path, spec: InputSpec, frames: FrameSpec | None = None) -> np.ndarray:
    """Decode an image file and preprocess it through the device's :func:`to_tensor`."""
    return _decoded(path, to_tensor, spec, frames)


def load_frame(path: Path, spec: InputSpec, frames: FrameSpec | None = None) -> np.ndarray:
    """Decode an image file into its model inputs ``(tiles, C, H, W)`` (:func:`frame_tensors`)."""
    return _decoded(path, frame_tensors, spec, frames)


def _decoded(
    path: Path,
    convert: Callable[..., np.ndarray],
    spec: InputSpec,
    frames: FrameSpec | None,
) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        try:
            # an image that registers poorly is still scored (the device would route it to
            # manual: training counts the validation good images it would refuse)
            return convert(image, spec, frames, align_strict=False)
        except FrameError as exc:
            raise DatasetError(f"{path}: the model does not take this image ({exc})") from None


def score_frames(
    session,  # noqa: ANN001 - onnxruntime type
    spec: InputSpec,
    paths: Sequence[Path],
    frames: FrameSpec | None = None,
    *,
    maps: bool = True,
    batch_size: int = 8,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Frame scores ``(N,)`` and stitched anomaly maps of image files, as the device scores them.

    Each frame's tiles are scored together and combined by :func:`combine_tiles` (the highest
    tile score; the maps stitched over the region of interest). ``maps=False`` keeps no map.
    """
    scores: list[float] = []
    stitched: list[np.ndarray] = []
    for path in paths:
        tensors = load_frame(path, spec, frames)
        with Image.open(path) as image:
            size = image.size
        tile_scores, tile_maps = score_tensors(session, spec.name, list(tensors), batch_size)
        score, amap = combine_tiles(
            [float(v) for v in tile_scores], list(tile_maps) if maps else None, spec, size
        )
        scores.append(score)
        if amap is not None:
            stitched.append(amap)
    return np.asarray(scores, dtype=np.float32), stitched


def describe_frames(
    paths: Sequence[Path],
    bit_depth: int | None = None,
    roi: tuple[int, int, int, int] | None = None,
) -> tuple[int | None, FrameSpec]:
    """The bit depth (None for 8-bit) and :class:`FrameSpec` all ``paths`` share.

    Every image must be of one kind, 8-bit or 16-bit mono, and of one channel count; the
    error names the images that differ from the first. A 16-bit set declares 12 bits when no
    value exceeds 4095 (Mono12 in a 16-bit container), else 16 — or ``bit_depth`` (9..16) when
    given (Mono10, Mono14, or a dark Mono16 set that reads as 12-bit), which every value must
    fit. With a region of interest ``roi`` (``x, y, width, height``) every image must contain
    it (the error names those that do not), and the smallest frame taken is at least the
    region's extent.
    """
    if bit_depth is not None and not MIN_DECLARED_BITS <= bit_depth <= 16:
        raise DatasetError(f"bit depth must be {MIN_DECLARED_BITS}..16, got {bit_depth}")
    kinds: dict[tuple[bool, int], list[Path]] = {}
    sizes: list[tuple[int, int]] = []
    top = 0
    for path in paths:
        with Image.open(path) as image:
            sixteen = image.mode in SIXTEEN_BIT_MODES
            kinds.setdefault((sixteen, frame_channels(image)), []).append(path)
            sizes.append(image.size)
            if sixteen:
                top = max(top, int(np.asarray(image).max()))
    if not sizes:
        raise DatasetError("no images to describe")
    if len(kinds) > 1:
        (first, firsts), *others = sorted(kinds.items(), key=lambda kv: -len(kv[1]))
        odd = [str(p) for _, group in others for p in group]
        raise DatasetError(
            f"training images must share bit depth and channels; most are {_kind(first)}, "
            f"these are not: {', '.join(odd[:10])}{' ...' if len(odd) > 10 else ''}"
        )
    ((sixteen, channels),) = kinds
    if bit_depth is not None:
        if not sixteen:
            raise DatasetError(
                f"a bit depth ({bit_depth}) is for 16-bit mono images; these are 8-bit"
            )
        if top >= 1 << bit_depth:
            raise DatasetError(
                f"the images hold values up to {top}, beyond {bit_depth} bits "
                f"(0..{(1 << bit_depth) - 1}); use a larger bit depth"
            )
        bits: int | None = bit_depth
    else:
        bits = next(b for b in _SIXTEEN_BIT_DEPTHS if top < 1 << b) if sixteen else None
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    low = [max(1, min(widths) // SIZE_FACTOR), max(1, min(heights) // SIZE_FACTOR)]
    if roi is not None:
        x, y, w, h = roi
        outside = [
            f"{p} ({iw}x{ih})"
            for p, (iw, ih) in zip(paths, sizes, strict=True)
            if x + w > iw or y + h > ih
        ]
        if outside:
            raise DatasetError(
                f"the region of interest {w}x{h} at {x},{y} needs images of at least "
                f"{x + w}x{y + h} px; these are smaller: {', '.join(outside[:10])}"
                f"{' ...' if len(outside) > 10 else ''}"
            )
        # a frame that does not contain the region cannot be judged (``image_roi``)
        low = [max(low[0], x + w), max(low[1], y + h)]
    return bits, FrameSpec(
        channels=channels,
        min_size=(low[0], low[1]),
        max_size=(max(widths) * SIZE_FACTOR, max(heights) * SIZE_FACTOR),
    )


def frame_plan(spec: InputSpec) -> dict[str, object]:
    """How a frame becomes the model's input, for ``training.json``: ``roi``, ``fit``, ``tiles``."""
    tiles = spec.tiles
    return {
        "roi": None if spec.roi is None else list(spec.roi),
        "fit": spec.fit,
        "tiles": None
        if tiles is None
        else {"rows": tiles.rows, "cols": tiles.cols, "overlap": tiles.overlap},
        "size": [spec.width, spec.height],
        "align": spec.align is not None,
    }


def describe_input(spec: InputSpec) -> str:
    """One line saying how a frame becomes the model's input, for the logs."""
    where = "whole frame" if spec.roi is None else "region {2}x{3} at {0},{1}".format(*spec.roi)
    tiles = spec.tiles
    cut = "" if tiles is None else f", {tiles.rows}x{tiles.cols} tiles (overlap {tiles.overlap:g})"
    aligned = ", registered to the reference pose" if spec.align is not None else ""
    return f"input: {where}{cut}, {spec.fit} to {spec.width}x{spec.height}{aligned}"


def _kind(kind: tuple[bool, int]) -> str:
    sixteen, channels = kind
    return f"{'16-bit' if sixteen else '8-bit'} {channels}-channel"


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
    """ONNX Runtime image scores ``(N,)`` and anomaly maps ``(N, H, W)`` for input tensors,
    ``batch_size`` at a time when the graph's batch dimension is dynamic, else one by one."""
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int):
        batch_size = fixed  # a fixed-batch graph (training exports batch 1) takes that many
    scores, maps = [], []
    for start in range(0, len(tensors), batch_size):
        batch = np.stack(tensors[start : start + batch_size]).astype(np.float32)
        score, amap = session.run(None, {input_name: batch})
        scores.append(score)
        maps.append(amap)
    if not scores:
        return np.zeros(0, np.float32), np.zeros((0, 0, 0), np.float32)
    return np.concatenate(scores), np.concatenate(maps)

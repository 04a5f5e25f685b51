"""Registration of a frame to the part's reference pose, before the model sees it.

A part on a line sits a little differently in every frame: shifted, turned a few degrees,
nearer or farther. The anomaly model compares each cell with good cells anywhere in the frame,
so a missing or extra object that leaves something normal-looking elsewhere goes unseen, and
the per-cell statistics average over several places of the part. With ``input.align`` in the
manifest, :func:`inspector.preprocess.frame_tensors` brings every model input into the pose of
the package's reference image first — in training, evaluation and on the device alike, with this
code.

The estimate is a similarity (rotation, scale, shift) found by phase correlation, the classical
Fourier-domain registration (Kuglin & Hines 1975), searched over a grid of rotations and scales
(no log-polar transform: a grid is robust to the part's own texture and its cost is bounded):

1. **Coarse** (a quarter of the input's side): the reference, seen at every angle and scale of a
   grid (``angle_step`` degrees up to ``max_angle``, ``scale_step`` up to ``max_scale``), is
   phase-correlated with the frame; the pose whose correlation peak is highest wins and its
   peak gives the shift. Then, ``ALIGN_ROUNDS`` times, the same with the 3 × 3 poses around
   the best at half the previous step. The reference's spectra at every pose of each level
   are computed once, when the model loads, so this stage resamples nothing per frame.
2. **Fine** (half the side): the frame, undone by the 3 × 3 finest poses around the best, is
   phase-correlated with the reference (a quarter of the side resolves the angle to about a
   degree only); the best gives the peak and a sub-pixel residual shift, and a parabola
   through its neighbours' peaks the angle and scale between the finest poses.

The input is then resampled (bilinear) into the reference's pose; pixels that came from outside
the frame take the reference's own pixels, so the seam does not score. Those pixels show
nothing of this part, so their share is bounded: above ``max_outside`` (calibrated on the
training good images) the frame is refused, as it is when the final correlation peak — how
well the frame matched — is below ``min_peak``, or when the frame is flat (nothing to
register: lens cap, lights off). A refused frame raises ``image_align``; the engine routes it
to manual with that reason, never passes it. Content of the frame beyond the reference's field
of view (after the pose is undone) is not in the model's input.

The peak is phase correlation's: the inverse transform of the whitened cross-power spectrum at
its maximum. It is relative, not a coherence in [0, 1] — an input identical to the reference
gives about 0.5–0.9 with this regulariser and high-pass, by how much of the part's spectrum
is structure rather than noise — so ``min_peak`` means something only for the part it was
calibrated on, which is how training sets it.

Numpy and Pillow only, as the rest of the device's preprocessing.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image

from inspector.decode import FrameError
from inspector.model_package import ALIGN_ROUNDS, MAX_ALIGN_SIDE, AlignSpec

ALIGN = "image_align"  # reason code of a frame that does not register to the reference

COARSE = 4  # the pose search works on 1/4 of the input's side, the last step on 1/2
FINE = 2
# times the last step's 3 × 3 window may move onto a better neighbour: on the tests' photograph
# at 32 random poses, 0 moves left the worst angle error at 1.1–2.6°, 2 at 0.5–1.6°, for about
# 1.2 ms more a frame (moves are rare); the model's accuracy did not change between 0.3° and
# 0.6° (p90) of angle error (docs/training.md)
FINE_MOVES = 2
HIGH_PASS_SIGMA = 1.0  # px at the level's scale: removes lighting gradients before correlating
FLAT_RANGE = 1.0  # grey levels: an input whose values span less has nothing to register
_EPS = 1e-3  # phase correlation's regulariser, relative to the largest cross-power magnitude


@dataclass(frozen=True)
class Pose:
    """``aligned(q) = frame(c + shift + R(-angle) (q - c) / scale)``, ``c`` the centre.

    Points are ``(row, col)``; ``R(a)`` is ``[[cos a, -sin a], [sin a, cos a]]`` in those
    coordinates. ``angle`` in radians: the frame shows the part turned by ``R(-angle)`` from
    the reference (clockwise on screen for a positive angle). ``scale`` is the reference's size
    of the part over the frame's (above 1: the part looks smaller in the frame). ``shift``
    (rows, cols) in input pixels. ``peak`` is the final phase-correlation peak (relative:
    about 0.5–0.9 for an input identical to the reference, by the part; near 0 for unrelated
    images; 0 for a flat one); ``outside`` the share of the aligned input's pixels that lie
    beyond the frame; ``flat`` an input with no structure to register (the identity pose, peak 0).
    """

    angle: float
    scale: float
    shift: tuple[float, float]
    peak: float
    outside: float = 0.0
    flat: bool = False


def encode_reference(pixels: np.ndarray) -> str:
    """A reference image (``(H, W)`` or ``(H, W, 3)``, 0..255) as the manifest's base64 PNG."""
    values = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(values, "L" if values.ndim == 2 else "RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def reference_size(text: str) -> tuple[int, int, int]:
    """Width, height and channels of the manifest's reference, from the PNG's header (nothing
    decoded); :class:`ValueError` if unreadable."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as image:
            return image.width, image.height, 3 if image.mode == "RGB" else 1
    except Exception as exc:  # a corrupt reference names itself, whatever PIL raised
        raise ValueError(f"input.align.reference is not a base64 PNG image ({exc})") from None


def decode_reference(text: str) -> np.ndarray:
    """The manifest's reference as float32 ``(H, W, C)``; :class:`ValueError` if unreadable."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as image:
            if max(image.size) > MAX_ALIGN_SIDE:  # checked before the pixels are decoded
                raise ValueError(f"{image.width}x{image.height} px, at most {MAX_ALIGN_SIDE}")
            image.load()
            pixels = np.asarray(image.convert("RGB" if image.mode == "RGB" else "L"), np.float32)
    except Exception as exc:  # a corrupt reference names itself, whatever PIL raised
        raise ValueError(f"input.align.reference is not a base64 PNG image ({exc})") from None
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def _grey(pixels: np.ndarray) -> np.ndarray:
    """The channels' mean, float32 (a matrix product: ten times numpy's ``mean`` here)."""
    if pixels.ndim == 2:
        return pixels.astype(np.float32, copy=False)
    weights = np.full(pixels.shape[2], 1.0 / pixels.shape[2], np.float32)
    return np.ascontiguousarray(pixels, dtype=np.float32) @ weights


def _shrink(grey: np.ndarray, factor: int) -> np.ndarray:
    """Block mean over ``factor × factor`` pixels (the input cropped to a multiple of it;
    Pillow's ``reduce``, a box filter, five times numpy's reshaped mean)."""
    h, w = grey.shape[0] // factor, grey.shape[1] // factor
    crop = np.ascontiguousarray(grey[: h * factor, : w * factor], dtype=np.float32)
    return np.asarray(Image.fromarray(crop, "F").reduce(factor), dtype=np.float32)


def _similarity(
    angle: float, scale: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``A``, ``t`` of ``source = A @ q + t`` for ``source = c + scale R(angle) (q - c)``."""
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = scale * np.array([[cos, -sin], [sin, cos]])
    return matrix, centre - matrix @ centre


class _Grid:
    """Pixel coordinates of one output shape (every ``step``-th pixel of each axis), computed
    once."""

    def __init__(self, shape: tuple[int, int], step: int = 1) -> None:
        rows, cols = np.mgrid[0 : shape[0] : step, 0 : shape[1] : step]
        self.shape = (int(rows.shape[0]), int(rows.shape[1]))
        self.rows = rows.astype(np.float32)
        self.cols = cols.astype(np.float32)


def _pil_affine(matrix: np.ndarray, offset: np.ndarray) -> tuple[float, ...]:
    """Pillow's ``AFFINE`` data for ``source = matrix @ (row, col) + offset``.

    Pillow maps an output pixel's centre ``(x + 0.5, y + 0.5)`` to ``(a x' + b y' + c, ...)``
    in coordinates where a pixel's centre is at ``+0.5`` (``libImaging/Geometry.c``), so the
    half pixel is moved in and out of the offsets; columns are Pillow's x.
    """
    (m_rr, m_rc), (m_cr, m_cc) = matrix.tolist()
    t_r, t_c = float(offset[0]), float(offset[1])
    return (
        m_cc,
        m_cr,
        t_c + 0.5 - 0.5 * (m_cc + m_cr),
        m_rc,
        m_rr,
        t_r + 0.5 - 0.5 * (m_rr + m_rc),
    )


def _warp_plane(
    plane: np.ndarray, matrix: np.ndarray, offset: np.ndarray, shape: tuple[int, int], fill: float
) -> np.ndarray:
    """``out[q] = plane(matrix @ q + offset)``, bilinear (Pillow, in float32); ``fill`` where
    the source lies outside the plane."""
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), "F")
    warped = image.transform(
        (shape[1], shape[0]),
        Image.Transform.AFFINE,
        _pil_affine(matrix, offset),
        resample=Image.Resampling.BILINEAR,
        fillcolor=float(fill),
    )
    return np.asarray(warped, dtype=np.float32)


def _inside(
    matrix: np.ndarray, offset: np.ndarray, grid: _Grid, height: int, width: int
) -> np.ndarray:
    """Where ``matrix @ q + offset`` falls inside a ``height × width`` image."""
    src_r = matrix[0, 0] * grid.rows + matrix[0, 1] * grid.cols + offset[0]
    src_c = matrix[1, 0] * grid.rows + matrix[1, 1] * grid.cols + offset[1]
    return (src_r >= 0) & (src_r <= height - 1) & (src_c >= 0) & (src_c <= width - 1)


def _warp(
    image: np.ndarray, matrix: np.ndarray, offset: np.ndarray, grid: _Grid, fill: np.ndarray
) -> np.ndarray:
    """``out[q] = image(matrix @ q + offset)``, bilinear, per channel; outside the image
    ``fill[q]`` (an array of the output's shape, or a number)."""
    height, width = image.shape[:2]
    planes = image[:, :, None] if image.ndim == 2 else image
    out = np.stack(
        [
            _warp_plane(planes[:, :, c], matrix, offset, grid.shape, 0.0)
            for c in range(planes.shape[2])
        ],
        axis=2,
    )
    inside = _inside(matrix, offset, grid, height, width)[:, :, None]
    fill = np.asarray(fill, np.float32)
    if image.ndim == 2:
        return np.where(inside[:, :, 0], out[:, :, 0], fill)
    return np.where(inside, out, fill if fill.ndim != 2 else fill[:, :, None])


def _whiten_spectrum(level: np.ndarray, window: np.ndarray, high_pass: np.ndarray) -> np.ndarray:
    """The spectrum that phase correlation compares: zero-mean, windowed, high-passed."""
    spectrum = np.fft.rfft2(((level - level.mean()) * window).astype(np.float32))
    return (spectrum * high_pass).astype(np.complex64)


def _high_pass(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """``1 - Gaussian`` in the frequency domain (removes what a σ-px blur keeps)."""
    fr = np.fft.fftfreq(shape[0])[:, None]
    fc = np.fft.rfftfreq(shape[1])[None, :]
    return (1.0 - np.exp(-2.0 * (math.pi * sigma) ** 2 * (fr**2 + fc**2))).astype(np.float32)


def _correlate(
    frames: np.ndarray, references: np.ndarray, shape: tuple[int, int]
) -> tuple[int, float, np.ndarray]:
    best, peak, shift, _ = _correlate_all(frames, references, shape)
    return best, peak, shift


def _correlate_all(
    frames: np.ndarray, references: np.ndarray, shape: tuple[int, int]
) -> tuple[int, float, np.ndarray, np.ndarray]:
    """Phase correlation of spectra with conjugate reference spectra, pair by pair.

    ``frames`` and ``references`` are real-input spectra (``rfft2``) of images of ``shape``,
    ``(k, h, w // 2 + 1)`` or ``(1, h, w // 2 + 1)`` (broadcast). Returns the
    best pair's index, its peak value and the sub-pixel shift ``e`` (rows, cols) with
    ``frame(p) ≈ reference(p - e)``.
    """
    cross = frames * references
    magnitude = np.abs(cross)
    largest = float(magnitude.max())
    if not math.isfinite(largest) or largest <= 0.0:  # a flat input: no pose, and no peak
        return 0, 0.0, np.zeros(2), np.zeros(len(cross))
    cross /= magnitude + _EPS * largest
    surfaces = np.fft.irfft2(cross, s=shape)
    flat = surfaces.reshape(len(surfaces), -1)
    peaks = flat.max(axis=1)
    best = int(np.argmax(peaks))
    surface = surfaces[best]
    index = np.unravel_index(int(np.argmax(surface)), surface.shape)
    peak = float(surface[index])
    shift = []
    for axis in range(2):
        n = surface.shape[axis]
        before, after = list(index), list(index)
        before[axis] = (index[axis] - 1) % n
        after[axis] = (index[axis] + 1) % n
        low, high = float(surface[tuple(before)]), float(surface[tuple(after)])
        curvature = low - 2 * peak + high
        sub = 0.5 * (low - high) / curvature if curvature < 0 else 0.0
        value = index[axis] + sub
        shift.append(value - n if value > n / 2 else value)
    return best, peak, np.array(shift), peaks


def _vertex(values: np.ndarray) -> float:
    """Offset in (-0.5, 0.5) of the maximum of the parabola through three equally spaced
    values whose middle one is the largest (0 when they are not curved down)."""
    low, mid, high = (float(v) for v in values)
    curvature = low - 2 * mid + high
    return float(np.clip(0.5 * (low - high) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


class _Level:
    """One level of the pose pyramid: the reference's conjugate spectra at its poses."""

    def __init__(self, coarse: np.ndarray, owner: Registrar, angles: range, scales: range) -> None:
        self.indices = [(i, j) for i in angles for j in scales]
        self.row = {index: n for n, index in enumerate(self.indices)}
        self.stride = angles.step
        fill = float(coarse.mean())
        stack = []
        for index in self.indices:
            angle, scale = owner.pose_of(index)
            matrix, offset = _similarity(math.radians(angle), scale, coarse.shape)
            seen = _warp_plane(coarse, matrix, offset, coarse.shape, fill)
            stack.append(_whiten_spectrum(seen, owner.coarse_window, owner.coarse_pass))
        self.spectra = np.conj(np.stack(stack))

    def around(self, index: tuple[int, int]) -> list[int]:
        """Rows of the 3 × 3 poses around a pose of the level above (all in this level)."""
        i, j = index
        steps = (-self.stride, 0, self.stride)
        return [self.row[(i + di, j + dj)] for di in steps for dj in steps]


class Registrar:
    """The reference of one :class:`AlignSpec`, prepared for registering inputs to it.

    The reference is seen, at a quarter of its side, at every pose of a pyramid of grids: the
    spec's grid (level 0), then ``ALIGN_ROUNDS`` levels each at half the previous step and
    wide enough for the poses around any pose of the level above. Their conjugate spectra are
    computed once, so registering a frame resamples nothing until the last step: each level
    correlates the frame's spectrum with those of the 3 × 3 poses around the best so far.
    """

    def __init__(self, spec: AlignSpec) -> None:
        self.spec = spec
        self.reference = decode_reference(spec.reference)
        height, width = self.reference.shape[:2]
        if height < 8 * COARSE or width < 8 * COARSE:
            raise ValueError(f"input.align.reference is {width}x{height} px, at least 32x32")
        self.shape = (height, width)
        grey = _grey(self.reference)
        self.centre = np.array([(height - 1) / 2, (width - 1) / 2])
        self.grey_reference = grey  # the fill of a grey input against a colour reference
        self.grid = _Grid(self.shape)
        self.sparse = _Grid(self.shape, COARSE)
        coarse = _shrink(grey, COARSE)
        self.coarse_window = np.outer(np.hanning(coarse.shape[0]), np.hanning(coarse.shape[1]))
        self.coarse_pass = _high_pass(coarse.shape, HIGH_PASS_SIGMA)
        # poses in units of the finest level's steps: angle i * angle_unit, scale 1 + j * scale_unit
        self.angle_unit = spec.angle_step / 2**ALIGN_ROUNDS
        self.scale_unit = spec.scale_step / 2**ALIGN_ROUNDS
        self.levels = [_Level(coarse, self, *limits) for limits in spec.pyramid_levels]
        # the last step: the frame, undone by the pose found, against the reference at half side
        self.fine = _shrink(grey, FINE)
        self.fine_window = np.outer(np.hanning(self.fine.shape[0]), np.hanning(self.fine.shape[1]))
        self.fine_pass = _high_pass(self.fine.shape, HIGH_PASS_SIGMA)
        self.fine_spectrum = np.conj(_whiten_spectrum(self.fine, self.fine_window, self.fine_pass))[
            None
        ]

    def pose_of(self, index: tuple[int, int]) -> tuple[float, float]:
        """Degrees and scale of a pose's grid index."""
        return index[0] * self.angle_unit, 1.0 + index[1] * self.scale_unit

    def estimate(self, pixels: np.ndarray) -> Pose:
        """The pose of an input ``(H, W[, C])`` of the reference's size against the reference."""
        if pixels.shape[:2] != self.shape:
            raise FrameError(
                ALIGN,
                f"{pixels.shape[1]}x{pixels.shape[0]} px model input, the alignment reference "
                f"is {self.shape[1]}x{self.shape[0]}",
            )
        grey = _grey(pixels)
        low, high = float(grey.min()), float(grey.max())
        if not (math.isfinite(low) and math.isfinite(high)) or high - low < FLAT_RANGE:
            return Pose(angle=0.0, scale=1.0, shift=(0.0, 0.0), peak=0.0, flat=True)
        coarse = _shrink(grey, COARSE)
        spectrum = _whiten_spectrum(coarse, self.coarse_window, self.coarse_pass)[None]
        # level 0: every pose of the grid; each further level: the 3 × 3 poses around the best
        top = self.levels[0]
        best, _, shift = _correlate(spectrum, top.spectra, coarse.shape)
        index = top.indices[best]
        for level in self.levels[1:]:
            rows = level.around(index)
            best, _, shift = _correlate(spectrum, level.spectra[rows], coarse.shape)
            index = level.indices[rows[best]]
        angle, scale = self.pose_of(index)
        shift = shift * COARSE
        # the last step, at half the side (a quarter resolves the angle to about a degree, its
        # neighbouring poses' peaks differ by a hundredth): the input undone by the 3 × 3 finest
        # poses around the best, each against the reference, the window moved onto the best
        # until the best is its centre (``FINE_MOVES`` at most; undone inputs are reused).
        # frame(p) ≈ posed reference(p - e) made undone(q) ≈ reference(q - r) for the best, so
        # undone(q + r) ≈ reference(q): its residual r and its peak
        fine = _shrink(grey, FINE)
        centre = np.array([(fine.shape[0] - 1) / 2, (fine.shape[1] - 1) / 2])
        fill = float(fine.mean())
        undone: dict[tuple[int, int], np.ndarray] = {}
        at = (0, 0)
        for _ in range(FINE_MOVES + 1):
            window = [(at[0] + da, at[1] + ds) for da in (-1, 0, 1) for ds in (-1, 0, 1)]
            for key in window:
                if key not in undone:
                    a, sc = angle + key[0] * self.angle_unit, scale + key[1] * self.scale_unit
                    matrix, offset = self._undo(a, sc, shift / FINE, centre)
                    plane = _warp_plane(fine, matrix, offset, fine.shape, fill)
                    undone[key] = _whiten_spectrum(plane, self.fine_window, self.fine_pass)
            best, peak, residual, peaks = _correlate_all(
                np.stack([undone[key] for key in window]), self.fine_spectrum, fine.shape
            )
            if best == 4:
                break
            at = window[best]
        # ``at`` is the best pose: the window's centre, or where it was to move after the last
        angle, scale = angle + at[0] * self.angle_unit, scale + at[1] * self.scale_unit
        matrix, _ = self._undo(angle, scale, shift / FINE, centre)
        shift = shift + FINE * (matrix @ residual)
        if best == 4:  # between the finest poses: a parabola's vertex along each axis
            grid = peaks.reshape(3, 3)  # rows: angle -, 0, +; columns: scale -, 0, +
            angle += _vertex(grid[:, 1]) * self.angle_unit
            scale += _vertex(grid[1, :]) * self.scale_unit
        pose = Pose(angle=math.radians(angle), scale=scale, shift=(shift[0], shift[1]), peak=peak)
        return replace(pose, outside=self.outside(pose))

    def outside(self, pose: Pose) -> float:
        """The share of the aligned input's pixels that ``pose`` takes from beyond the frame
        (on every fourth pixel of each axis: within about 1 % of the exact share)."""
        matrix, offset = self._affine(pose)
        inside = _inside(matrix, offset, self.sparse, self.shape[0], self.shape[1])
        return float(1.0 - inside.mean())

    @staticmethod
    def _undo(
        angle: float, scale: float, shift: np.ndarray, centre: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``source = c + shift + R(-angle) (q - c) / scale`` as ``A @ q + t``."""
        rad = -math.radians(angle)
        cos, sin = math.cos(rad), math.sin(rad)
        matrix = np.array([[cos, -sin], [sin, cos]]) / scale
        return matrix, centre + shift - matrix @ centre

    def _affine(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """``pose`` as ``source = A @ q + t`` over the input's pixels."""
        return self._undo(math.degrees(pose.angle), pose.scale, np.array(pose.shift), self.centre)

    def apply(self, pixels: np.ndarray, pose: Pose, fill: float | None = None) -> np.ndarray:
        """``pixels`` (``(H, W, C)`` or ``(H, W)`` float) in the reference's pose; pixels from
        beyond the input take the reference's (or ``fill``, e.g. 0 for a defect mask)."""
        matrix, offset = self._affine(pose)
        if fill is not None:
            return _warp(pixels, matrix, offset, self.grid, np.full((1,), fill, np.float32))
        if pixels.ndim == 2:
            reference = self.grey_reference
        elif pixels.shape[2] != self.reference.shape[2]:
            reference = self.grey_reference[:, :, None]
        else:
            reference = self.reference
        return _warp(pixels, matrix, offset, self.grid, reference)

    def refusal(self, pose: Pose) -> str | None:
        """Why the device refuses an input registered at ``pose`` (None: it is judged)."""
        if pose.flat:
            return "the frame is flat: nothing to register to the part's reference pose"
        if not pose.peak >= self.spec.min_peak:  # also a NaN peak
            return (
                f"the frame does not register to the part's reference pose (correlation peak "
                f"{pose.peak:.3f} < {self.spec.min_peak:.3f}): not the part, or moved beyond "
                f"±{self.spec.max_angle:g}° / ±{self.spec.max_scale:.0%} scale"
            )
        if pose.outside > self.spec.max_outside:
            return (
                f"{pose.outside:.0%} of the registered frame lies beyond the camera's view "
                f"(at most {self.spec.max_outside:.0%}): the part is partly out of the frame"
            )
        return None

    def align(self, pixels: np.ndarray, strict: bool = True) -> tuple[np.ndarray, Pose]:
        """Register and resample one input. With ``strict`` an input the device does not
        judge (:meth:`refusal`) raises :class:`FrameError` (``image_align``); without, it is
        resampled at the best pose found (a flat one is left as it is)."""
        pose = self.estimate(pixels)
        if strict:
            reason = self.refusal(pose)
            if reason is not None:
                raise FrameError(ALIGN, reason)
        return self.apply(pixels, pose), pose


@lru_cache(maxsize=4)  # the served model, a shadow, one loading beside them (25 MiB each at 224 px)
def registrar(spec: AlignSpec) -> Registrar:
    """The prepared :class:`Registrar` of a spec (cached: a device builds it once a model)."""
    return Registrar(spec)

"""Benchmark data from real photographs: parts that vary more than their defects show.

``python -m training.photo_data --out <dir> [--seed N] [--size small|large] [--sources ...]``
writes one dataset per source in the documented layout::

    <out>/<source>/good/*.png
    <out>/<source>/defect/<type>/*.png      types depend on the source (see SOURCES)
    <out>/<source>/masks/<type>/*.png       the defect's pixels (255), same file names
    <out>/<source>/groups.csv               sources photographed in bursts: path,group

Every source is one fixed view of a photograph bundled with scikit-image (no download): a tray of
coins, a printed page, a retina's vessels, the Hubble deep field and a motorcycle seen by a
stereo pair (its left and right cameras are two real viewpoints). Each good image is that view
as a camera on a line would see it from part to part: position jitter, zoom, a small rotation,
lighting (gain, offset, gradient, gamma, a colour cast), defocus blur, sensor noise and JPEG
compression. Those changes are larger than the defects, which look like the part's own
structure: a patch of its own texture pasted elsewhere (CutPaste-like, blended), a duplicated or
missing coin, character or star, an extra or broken vessel branch, a faint smudge, a small
misregistration. Defects are drawn on the part before the camera, so they see the same lighting,
blur, noise and compression. Sources photographed in bursts (near-identical frames of one part)
list their frames in ``groups.csv``. Everything is deterministic by ``--seed``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

SIDE = 256  # output side in pixels, as the synthetic sample's
BURST = 3  # good frames per burst of a bursting source
DEFECT_BURST = 2  # frames per defective part of a bursting source


@dataclass(frozen=True)
class Source:
    """A benchmark data source: its name, what it shows, colour, defect types, bursts."""

    name: str
    title: str
    color: bool
    defect_types: tuple[str, ...]
    bursts: bool


SOURCES = (
    Source(
        "coins",
        "a tray of coins",
        False,
        ("missing_coin", "extra_coin", "cutpaste", "smudge"),
        bursts=True,
    ),
    Source(
        "print",
        "a printed page",
        False,
        ("missing_character", "extra_character", "misregistration", "smudge"),
        bursts=False,
    ),
    Source(
        "retina",
        "a retina's vessels",
        True,
        ("extra_vessel", "broken_vessel", "microaneurysm", "cutpaste"),
        bursts=False,
    ),
    Source(
        "stars",
        "a star field (Hubble deep field)",
        True,
        ("extra_star", "missing_star", "cutpaste", "smudge"),
        bursts=True,
    ),
    Source(
        "stereo",
        "a motorcycle seen by the left and the right camera of a stereo pair",
        True,
        ("cutpaste", "misregistration", "smudge", "missing_part"),
        bursts=True,
    ),
)
SOURCE_NAMES = tuple(s.name for s in SOURCES)
LOW_CONTRAST = ("smudge", "extra_vessel", "broken_vessel")
"""Defect types drawn faint: their mean change inside the mask is under 15 grey levels."""
LOW_CONTRAST_LEVELS = 15.0


@dataclass(frozen=True)
class Size:
    """How many good images and defect images of each type per source."""

    good: int
    per_defect_type: int


SIZES = {
    "small": Size(good=30, per_defect_type=2),
    "large": Size(good=150, per_defect_type=18),
    # a plant's labelled folder: several hundred good and several hundred labelled defects
    "plant": Size(good=300, per_defect_type=75),
}


@dataclass(frozen=True)
class Scene:
    """A source's photograph(s), the structure found in them and the nominal view of the part.

    ``labels`` numbers the source's objects (coins, characters, stars) or marks its vessels,
    one array per view; ``window`` is the nominal view's side in photograph pixels.
    """

    source: Source
    views: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    centre: tuple[float, float]
    window: float


# ------------------------------------------------------------------ the photographs


def _float(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    return array[:, :, None] if array.ndim == 2 else array[:, :, :3]


def _components(mask: np.ndarray, smallest: int, largest: int) -> np.ndarray:
    labels, _ = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = (sizes >= smallest) & (sizes <= largest)
    keep[0] = False
    relabelled = np.zeros_like(sizes)
    relabelled[keep] = np.arange(1, int(keep.sum()) + 1)
    return relabelled[labels].astype(np.int32)


def _coins() -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float], float]:
    from skimage import data, filters

    image = _float(data.coins())
    smooth = ndimage.gaussian_filter(image[:, :, 0], 2)
    bright = smooth > filters.threshold_local(smooth, 101, offset=-10)
    coins = ndimage.binary_fill_holes(ndimage.binary_opening(bright, iterations=2))
    return [image], [_components(coins, 150, 4000)], (151.0, 192.0), 200.0


def _print() -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float], float]:
    from skimage import data

    image = _float(data.page())
    paper = ndimage.grey_closing(image[:, :, 0], size=(7, 7))
    ink = (paper - image[:, :, 0]) > 40
    return [image], [_components(ink, 8, 400)], (95.0, 250.0), 120.0


def _retina() -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float], float]:
    from skimage import data

    image = _float(data.retina())[::2, ::2]  # 706 px: vessels of 2-8 px
    green = image[:, :, 1]
    field = ndimage.binary_erosion(image.mean(axis=2) > 25, iterations=12)
    vessels = ((ndimage.grey_closing(green, size=(9, 9)) - green) > 8) & field
    window = 240.0
    # the part: the most vessel-rich window well inside the field of view
    density = ndimage.uniform_filter(vessels.astype(np.float32), size=int(window))
    inside = ndimage.distance_transform_edt(field) > window * 0.85
    y, x = np.unravel_index(int(np.argmax(np.where(inside, density, -1))), density.shape)
    return [image], [vessels.astype(np.int32)], (float(y), float(x)), window


def _stars() -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float], float]:
    from skimage import data

    image = _float(data.hubble_deep_field())
    luminance = image.mean(axis=2)
    peaks = (luminance - ndimage.grey_opening(luminance, size=(9, 9))) > 60
    stars = ndimage.binary_dilation(peaks, iterations=1)
    return [image], [_components(stars, 5, 600)], (436.0, 500.0), 280.0


def _stereo() -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float], float]:
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    views = [_float(left), _float(right)]
    return views, [np.zeros(v.shape[:2], np.int32) for v in views], (250.0, 370.0), 300.0


LOADERS: dict[str, Callable[[], tuple[list[np.ndarray], list[np.ndarray], tuple, float]]] = {
    "coins": _coins,
    "print": _print,
    "retina": _retina,
    "stars": _stars,
    "stereo": _stereo,
}


def load_scene(source: Source) -> Scene:
    """Load a source's photograph(s) and find its structure (offline, deterministic)."""
    views, labels, centre, window = LOADERS[source.name]()
    return Scene(source, tuple(views), tuple(labels), centre, window)


# ------------------------------------------------------------------ the part and the camera


@dataclass(frozen=True)
class Camera:
    """One exposure: lighting, colour cast, gamma, defocus, noise and JPEG quality."""

    gain: float
    offset: float
    gradient: tuple[float, float]
    cast: tuple[float, float, float]
    gamma: float
    blur: float
    noise: float
    quality: int
    noise_seed: int


def _draw_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        gain=float(rng.uniform(0.75, 1.25)),
        offset=float(rng.uniform(-15, 15)),
        gradient=(float(rng.uniform(-30, 30)), float(rng.uniform(-30, 30))),
        cast=tuple(float(c) for c in rng.uniform(0.9, 1.1, 3)),  # type: ignore[arg-type]
        gamma=float(rng.uniform(0.85, 1.15)),
        blur=float(rng.uniform(0.0, 1.2)),
        noise=float(rng.uniform(1.0, 5.0)),
        quality=int(rng.integers(55, 96)),
        noise_seed=int(rng.integers(2**32)),
    )


def expose(view: np.ndarray, camera: Camera, color: bool) -> np.ndarray:
    """The camera's picture of a part's view: uint8, JPEG-compressed and decoded again."""
    image = view
    if camera.blur > 0.3:
        image = ndimage.gaussian_filter(image, (camera.blur, camera.blur, 0))
    side = image.shape[0]
    yy, xx = np.mgrid[0:side, 0:side] / side - 0.5
    gradient = camera.gradient[0] * yy + camera.gradient[1] * xx
    cast = np.asarray(camera.cast[: image.shape[2]], np.float32) if color else np.float32(1)
    image = image * camera.gain * cast + camera.offset + gradient[:, :, None]
    image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** camera.gamma
    image = image + np.random.default_rng(camera.noise_seed).normal(0, camera.noise, image.shape)
    pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels if color else pixels[:, :, 0], "RGB" if color else "L")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=camera.quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB" if color else "L"))


@dataclass(frozen=True)
class Pose:
    """Where the part sits in the frame: which view, shift, zoom and rotation."""

    view: int
    shift: tuple[float, float]
    zoom: float
    angle: float


def _draw_pose(scene: Scene, rng: np.random.Generator) -> Pose:
    return Pose(
        view=int(rng.integers(len(scene.views))),
        shift=(
            float(rng.uniform(-0.08, 0.08) * scene.window),
            float(rng.uniform(-0.08, 0.08) * scene.window),
        ),
        zoom=float(rng.uniform(0.85, 1.15)),
        angle=float(np.deg2rad(rng.uniform(-6, 6))),
    )


def view_of(scene: Scene, pose: Pose, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The part as ``pose`` frames it, ``side`` px square (float 0-255), and its structure."""
    step = scene.window / pose.zoom / side
    cos, sin = np.cos(pose.angle), np.sin(pose.angle)
    matrix = step * np.array([[cos, -sin], [sin, cos]])
    centre = np.array(scene.centre) + np.array(pose.shift)
    offset = centre - matrix @ np.array([side / 2, side / 2])
    source = scene.views[pose.view]
    channels = [
        ndimage.affine_transform(
            source[:, :, c], matrix, offset, (side, side), order=1, mode="reflect"
        )
        for c in range(source.shape[2])
    ]
    labels = ndimage.affine_transform(
        scene.labels[pose.view], matrix, offset, (side, side), order=0, mode="constant"
    )
    return np.stack(channels, axis=2).astype(np.float32), labels


# ------------------------------------------------------------------ defects

Defect = tuple[np.ndarray, np.ndarray]  # image (float 0-255), mask (bool)


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), sigma) if sigma > 0 else mask * 1.0
    return np.clip(alpha / max(float(alpha.max()), 1e-6), 0, 1)


def _composite(view: np.ndarray, alpha: np.ndarray, target: np.ndarray) -> np.ndarray:
    return view * (1 - alpha[:, :, None]) + target * alpha[:, :, None]


def _fill(
    view: np.ndarray, hole: np.ndarray, avoid: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The background a hole would show: a normalised convolution of the pixels around it that
    are neither the hole nor structure (``avoid``), with the background's fine grain added."""
    keep = (~hole & ~avoid).astype(np.float32)
    smooth = np.zeros_like(view)
    covered = np.zeros(keep.shape, bool)
    for sigma in (6.0, 16.0, 48.0):  # wider where a large hole leaves no pixels nearby
        num = ndimage.gaussian_filter(view * keep[:, :, None], (sigma, sigma, 0))
        den = ndimage.gaussian_filter(keep, sigma)
        here = ~covered & (den > 0.05)
        smooth[here] = num[here] / den[here, None]
        covered |= here
    smooth[~covered] = view[keep > 0].mean(axis=0) if keep.any() else view.mean(axis=(0, 1))
    grain = (view - ndimage.gaussian_filter(view, (2, 2, 0)))[keep > 0]
    spread = float(grain.std()) if grain.size else 0.0
    return smooth + rng.normal(0, 0.8 * spread, view.shape)


def _disc(shape: tuple[int, ...], cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2


def _busy_point(view: np.ndarray, rng: np.random.Generator, margin: int) -> tuple[int, int]:
    """A point with more local detail than most (a defect on blank sky would be trivial)."""
    grey = view.mean(axis=2)
    energy = ndimage.uniform_filter(np.hypot(*np.gradient(grey)), 15)
    side = grey.shape[0]
    inner = np.zeros_like(energy, dtype=bool)
    inner[margin : side - margin, margin : side - margin] = True
    candidates = np.argwhere(inner & (energy >= np.percentile(energy[inner], 50)))
    y, x = candidates[int(rng.integers(len(candidates)))]
    return int(y), int(x)


def _object(
    labels: np.ndarray, rng: np.random.Generator, margin: int = 3, share: float = 0.5
) -> np.ndarray | None:
    """One whole object of the view (not cut by the frame's edge) of the largest ``share``."""
    side = labels.shape[0]
    objects = ndimage.find_objects(labels)
    whole = [
        i + 1
        for i, box in enumerate(objects)
        if box is not None
        and box[0].start >= margin
        and box[1].start >= margin
        and box[0].stop <= side - margin
        and box[1].stop <= side - margin
    ]
    if not whole:
        return None
    # a missing speck of a few pixels would be no defect a person could see
    sizes = np.bincount(labels.ravel())[whole]
    smallest = np.quantile(sizes, 1 - share)
    whole = [n for n, size in zip(whole, sizes, strict=True) if size >= smallest]
    return labels == whole[int(rng.integers(len(whole)))]


def _paste(
    view: np.ndarray, piece: np.ndarray, rng: np.random.Generator, avoid: np.ndarray | None
) -> Defect | None:
    """Copy the view's pixels under ``piece`` (a mask) to another place, blended at its edge."""
    ys, xs = np.nonzero(piece)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = view.shape[0]
    for _ in range(40):
        ty = int(rng.integers(4, side - 4 - (y1 - y0)))
        tx = int(rng.integers(4, side - 4 - (x1 - x0)))
        if abs(ty - y0) + abs(tx - x0) < (y1 - y0) + (x1 - x0):
            continue  # overlaps where it came from
        placed = np.zeros_like(piece)
        placed[ty : ty + y1 - y0, tx : tx + x1 - x0] = piece[y0:y1, x0:x1]
        if avoid is not None and (placed & avoid).any():
            continue
        moved = np.zeros_like(view)
        moved[ty : ty + y1 - y0, tx : tx + x1 - x0] = view[y0:y1, x0:x1]
        alpha = _feather(ndimage.binary_dilation(placed, iterations=1), 1.0)
        out = _composite(view, alpha, moved)
        mask = alpha > 0.5
        if np.abs(out - view)[mask].mean() >= 8:
            return out, mask
    return None


def _cutpaste(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """A patch of the part's own texture pasted elsewhere, blended (CutPaste)."""
    side = view.shape[0]
    h, w = int(rng.integers(16, 36)), int(rng.integers(16, 36))
    y, x = _busy_point(view, rng, 40)
    piece = np.zeros((side, side), bool)
    piece[y - h // 2 : y - h // 2 + h, x - w // 2 : x - w // 2 + w] = True
    return _paste(view, piece, rng, None)


def _smudge(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """A faint, soft-edged smudge: a few grey levels lighter or darker, slightly blurred."""
    side = view.shape[0]
    y, x = _busy_point(view, rng, 40)
    ry, rx = rng.uniform(10, 22, 2)
    yy, xx = np.mgrid[0:side, 0:side]
    shape = ((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= 1
    alpha = _feather(shape, min(ry, rx) / 3)
    amount = (1 if rng.random() < 0.5 else -1) * rng.uniform(4, 8)
    target = ndimage.gaussian_filter(view, (1.0, 1.0, 0)) + amount
    out = _composite(view, alpha, np.clip(target, 0, 255))
    return out, alpha >= 0.5


def _misregistration(
    view: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> Defect | None:
    """A band of the part shifted by a few pixels (a misprint, a displaced layer)."""
    side = view.shape[0]
    for _ in range(20):
        h, w = int(rng.integers(24, 48)), int(rng.integers(40, 90))
        y, x = _busy_point(view, rng, 50)
        band = np.zeros((side, side), bool)
        band[max(y - h // 2, 0) : y + h // 2, max(x - w // 2, 0) : x + w // 2] = True
        dy, dx = rng.integers(2, 5, 2) * np.where(rng.random(2) < 0.5, -1, 1)
        if rng.random() < 0.5:
            dy = 0  # most misregistrations are along one axis
        moved = np.roll(view, (int(dy), int(dx)), axis=(0, 1))
        alpha = _feather(band, 0.7)
        out = _composite(view, alpha, moved)
        mask = alpha >= 0.5
        if np.abs(out - view)[mask].mean() >= 4:
            return out, mask
    return None


def _missing_part(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """A small piece of the part gone: the background fills in where it was."""
    y, x = _busy_point(view, rng, 30)
    hole = _disc(view.shape, y, x, rng.uniform(7, 13))
    alpha = _feather(hole, 1.0)
    out = _composite(view, alpha, _fill(view, hole, np.zeros_like(hole), rng))
    return out, alpha >= 0.5


def _missing_object(
    view: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> Defect | None:
    """One coin, character or star gone, the background filled in."""
    chosen = _object(labels, rng)
    if chosen is None:
        return None
    hole = ndimage.binary_dilation(chosen, iterations=2)
    avoid = ndimage.binary_dilation(labels > 0, iterations=2)
    alpha = _feather(hole, 1.0)
    out = _composite(view, alpha, _fill(view, hole, avoid, rng))
    return out, alpha >= 0.5


def _extra_object(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """One coin, character or star duplicated in another place."""
    chosen = _object(labels, rng)
    if chosen is None:
        return None
    return _paste(view, ndimage.binary_dilation(chosen, iterations=1), rng, None)


STAR_SHARE = 0.25  # most sources of the deep field are specks: stars and galaxies one can see


def _missing_star(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """One of the larger stars or galaxies gone, halo and all, the sky filled in."""
    chosen = _object(labels, rng, share=STAR_SHARE)
    if chosen is None:
        return None
    luminance = view.mean(axis=2)
    dark = ~ndimage.binary_dilation(labels > 0, iterations=3)
    level = float(np.median(luminance[dark]))
    sky = dark & (luminance < level + 2 * float(luminance[dark].std()))
    # the threshold found a galaxy's core; its halo is what stays above the sky around it
    halo = ndimage.binary_propagation(chosen, mask=chosen | ~sky)
    hole = ndimage.binary_dilation(halo, iterations=2)
    alpha = _feather(hole, 1.0)
    return _composite(view, alpha, _fill(view, hole, ~sky, rng)), alpha >= 0.5


def _extra_star(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """One of the larger stars or galaxies duplicated onto empty sky."""
    chosen = _object(labels, rng, share=STAR_SHARE)
    if chosen is None:
        return None
    return _paste(
        view, ndimage.binary_dilation(chosen, iterations=2), rng,
        ndimage.binary_dilation(labels > 0, iterations=3),
    )  # fmt: skip


def _star_cutpaste(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """A patch of the field around one of its larger sources pasted onto sky (CutPaste)."""
    chosen = _object(labels, rng, share=STAR_SHARE)
    if chosen is None:
        return None
    side = view.shape[0]
    cy, cx = (int(round(c)) for c in ndimage.center_of_mass(chosen))
    h, w = int(rng.integers(16, 36)), int(rng.integers(16, 36))
    piece = np.zeros((side, side), bool)
    piece[max(cy - h // 2, 0) : cy - h // 2 + h, max(cx - w // 2, 0) : cx - w // 2 + w] = True
    large = _object_sizes(labels) >= np.quantile(_object_sizes(labels)[1:], 1 - STAR_SHARE)
    large[0] = False
    return _paste(view, piece, rng, ndimage.binary_dilation(large[labels], iterations=3))


def _object_sizes(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel())


def _vessel_colour(view: np.ndarray, vessels: np.ndarray) -> np.ndarray:
    near = ndimage.binary_dilation(vessels, iterations=4) & ~vessels
    inside = view[vessels].mean(axis=0) if vessels.any() else view.mean(axis=(0, 1)) * 0.7
    outside = view[near].mean(axis=0) if near.any() else view.mean(axis=(0, 1))
    return np.clip(inside / np.maximum(outside, 1), 0.3, 0.95)


def _extra_vessel(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """A vessel branch that is not there: a thin, tapering dark curve leaving a vessel."""
    vessels = labels > 0
    side = view.shape[0]
    starts = np.argwhere(vessels[30:-30, 30:-30]) + 30
    if not len(starts):
        return None
    point = starts[int(rng.integers(len(starts)))].astype(float)
    heading = rng.uniform(0, 2 * np.pi)
    steps = int(rng.integers(12, 26))
    mask = np.zeros((side, side), bool)
    for i in range(steps):
        heading += rng.normal(0, 0.25)
        point = point + 3 * np.array([np.sin(heading), np.cos(heading)])
        if not (2 <= point[0] < side - 2 and 2 <= point[1] < side - 2):
            break
        width = 2.0 - 1.2 * i / steps
        mask |= _disc((side, side), point[0], point[1], width)
    mask &= ~vessels
    if mask.sum() < 20:
        return None
    alpha = _feather(mask, 0.8)
    out = _composite(view, alpha, view * _vessel_colour(view, vessels))
    return out, alpha >= 0.5


def _broken_vessel(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """A gap in a vessel: a short stretch of it replaced by the background around it."""
    vessels = labels > 0
    thick = ndimage.binary_erosion(vessels, iterations=1)
    starts = np.argwhere(thick[30:-30, 30:-30]) + 30
    if not len(starts):
        return None
    y, x = starts[int(rng.integers(len(starts)))]
    hole = _disc(vessels.shape, y, x, rng.uniform(5, 9)) & ndimage.binary_dilation(
        vessels, iterations=2
    )
    if hole.sum() < 15:
        return None
    alpha = _feather(hole, 0.8)
    out = _composite(
        view, alpha, _fill(view, hole, ndimage.binary_dilation(vessels, iterations=2), rng)
    )
    return out, alpha >= 0.5


def _microaneurysm(view: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Defect | None:
    """A small dark dot of the vessels' colour beside a vessel."""
    vessels = labels > 0
    ring = ndimage.binary_dilation(vessels, iterations=10) & ~ndimage.binary_dilation(
        vessels, iterations=4
    )
    ring[:20] = ring[-20:] = False
    ring[:, :20] = ring[:, -20:] = False
    spots = np.argwhere(ring)
    if not len(spots):
        return None
    y, x = spots[int(rng.integers(len(spots)))]
    dot = _disc(vessels.shape, y, x, rng.uniform(2.5, 4.5))
    alpha = _feather(dot, 0.8)
    out = _composite(view, alpha, view * _vessel_colour(view, vessels) * 0.9)
    return out, alpha >= 0.5


DefectFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], Defect | None]
DEFECTS: dict[str, DefectFn] = {
    "cutpaste": _cutpaste,
    "smudge": _smudge,
    "misregistration": _misregistration,
    "missing_part": _missing_part,
    "missing_coin": _missing_object,
    "extra_coin": _extra_object,
    "missing_character": _missing_object,
    "extra_character": _extra_object,
    "missing_star": _missing_star,
    "extra_star": _extra_star,
    "extra_vessel": _extra_vessel,
    "broken_vessel": _broken_vessel,
    "microaneurysm": _microaneurysm,
}
SOURCE_DEFECTS: dict[tuple[str, str], DefectFn] = {
    # a busy point of a star field is mostly sky: paste the field around a source one can see
    ("stars", "cutpaste"): _star_cutpaste,
}


# ------------------------------------------------------------------ frames and datasets


@dataclass(frozen=True)
class Frame:
    """One picture: the camera's image, the defect's mask (None when good), the clean image."""

    image: np.ndarray
    mask: np.ndarray | None
    clean: np.ndarray


def _defective_view(
    scene: Scene, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for _ in range(50):
        view, labels = view_of(scene, _draw_pose(scene, rng))
        draw = SOURCE_DEFECTS.get((scene.source.name, kind), DEFECTS[kind])
        drawn = draw(view, labels, rng)
        if drawn is not None:
            return view, drawn[0], drawn[1]
    raise RuntimeError(f"{scene.source.name}: could not draw a {kind} defect in 50 views")


def _jitter(array: np.ndarray, shift: tuple[float, ...], order: int) -> np.ndarray:
    if not any(shift):
        return array
    return ndimage.shift(array, (*shift, 0)[: array.ndim], order=order, mode="nearest")


def _burst(
    clean: np.ndarray,
    image: np.ndarray,
    mask: np.ndarray | None,
    frames: int,
    color: bool,
    rng: np.random.Generator,
) -> list[Frame]:
    """``frames`` near-identical pictures of one part: a pixel of jitter, new noise each."""
    camera = _draw_camera(rng)
    out = []
    for i in range(frames):
        shift = (0.0, 0.0) if i == 0 else tuple(float(d) for d in rng.uniform(-1, 1, 2))
        shot = Camera(**{**camera.__dict__, "noise_seed": int(rng.integers(2**32))})
        frame_mask = None if mask is None else _jitter(mask.astype(np.uint8), shift, 0) > 0
        out.append(
            Frame(
                image=expose(_jitter(image, shift, 1), shot, color),
                mask=frame_mask,
                clean=expose(_jitter(clean, shift, 1), shot, color),
            )
        )
    return out


def example(source: str, kind: str | None, seed: int = 0, *, scene: Scene | None = None) -> Frame:
    """One good (``kind`` None) or defect picture of ``source``, with its defect-free twin."""
    chosen = _source(source)
    if kind is not None and kind not in chosen.defect_types:
        raise ValueError(
            f"{source}: unknown defect type {kind!r}; known: {list(chosen.defect_types)}"
        )
    scene = scene or load_scene(chosen)
    rng = np.random.default_rng([seed, zlib.crc32(chosen.name.encode()), 1])
    if kind is None:
        view, _ = view_of(scene, _draw_pose(scene, rng))
        return _burst(view, view, None, 1, chosen.color, rng)[0]
    clean, image, mask = _defective_view(scene, kind, rng)
    return _burst(clean, image, mask, 1, chosen.color, rng)[0]


def _source(name: str) -> Source:
    for source in SOURCES:
        if source.name == name:
            return source
    raise ValueError(f"unknown source {name!r}; known: {list(SOURCE_NAMES)}")


def _save(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, optimize=False, compress_level=1)


def _bursts(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def generate_source(source: Source, out: Path, size: Size, seed: int) -> dict[str, int]:
    """Write one source's dataset under ``out``; return image counts by kind."""
    rng = np.random.default_rng([seed, zlib.crc32(source.name.encode())])
    scene = load_scene(source)
    groups: list[tuple[str, str]] = []
    burst_size = BURST if source.bursts else 1
    number = part_number = 0
    for frames in _bursts(size.good, burst_size):
        view, _ = view_of(scene, _draw_pose(scene, rng))
        for frame in _burst(view, view, None, frames, source.color, rng):
            rel = f"good/{number:04d}.png"
            _save(frame.image, out / rel)
            if source.bursts:
                groups.append((rel, f"part-{part_number:04d}"))
            number += 1
        part_number += 1
    counts = {"good": size.good}
    for kind in source.defect_types:
        index = 0
        for frames in _bursts(size.per_defect_type, DEFECT_BURST if source.bursts else 1):
            clean, image, mask = _defective_view(scene, kind, rng)
            for frame in _burst(clean, image, mask, frames, source.color, rng):
                name = f"{kind}_{index:03d}.png"
                _save(frame.image, out / "defect" / kind / name)
                assert frame.mask is not None
                _save((frame.mask * 255).astype(np.uint8), out / "masks" / kind / name)
                if source.bursts:
                    groups.append((f"defect/{kind}/{name}", f"part-{part_number:04d}"))
                index += 1
            part_number += 1
        counts[kind] = size.per_defect_type
    if groups:
        with (out / "groups.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", "group"])
            writer.writerows(groups)
    return counts


def generate(
    out: Path, seed: int = 0, size: str = "small", sources: Sequence[str] | None = None
) -> dict[str, dict[str, int]]:
    """Write every (or the named) source's dataset under ``out/<source>``."""
    chosen = [_source(name) for name in sources] if sources else list(SOURCES)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {sorted(SIZES)}")
    summary = {}
    for source in chosen:
        started = time.perf_counter()
        summary[source.name] = generate_source(source, out / source.name, SIZES[size], seed)
        print(
            f"photo_data: {source.name}: {sum(summary[source.name].values())} images "
            f"in {time.perf_counter() - started:.1f}s -> {out / source.name}",
            flush=True,
        )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m training.photo_data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="small",
        help="small: 30 good + 2 per defect type; large: 150 good + 18 per type; plant: 300 good "
        "+ 75 per type, as a plant's labelled folder (default small)",
    )
    parser.add_argument(
        "--sources", nargs="+", metavar="NAME", help=f"subset of {list(SOURCE_NAMES)}"
    )
    args = parser.parse_args(argv)
    try:
        generate(args.out, args.seed, args.size, args.sources)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sample datasets: real texture photographs with procedurally injected defects.

``python -m training.sample_data --out <dir> [--seed N] [--size small|large]`` writes one dataset
per product type, each in the documented layout::

    <out>/<product>/good/*.png
    <out>/<product>/defect/<type>/*.png       scratch, crack, spot, hole, discolouration, missing
    <out>/<product>/masks/<type>/*.png        the defect's pixels (255) mirroring defect/

Product types come from scikit-image's bundled photographs that load offline (brick, grass and
gravel in grayscale, an immunohistochemistry slide in colour). Good images vary: random rotation,
crop, flip, lighting (gain, offset, gradient, gamma) and sensor noise. Defects are small (a few
per cent of the image at most) and of moderate contrast; on the busy textures (grass, gravel)
they are drawn larger, as a person would need to see them there too.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

DEFECT_TYPES = ("scratch", "crack", "spot", "hole", "discolouration", "missing")


@dataclass(frozen=True)
class Product:
    """A product type: the photograph it is cut from and whether it is colour."""

    name: str
    loader: str
    color: bool
    defect_scale: float = 1.0


PRODUCTS = (
    Product("brick", "brick", False),
    Product("grass", "grass", False, defect_scale=1.6),
    Product("gravel", "gravel", False, defect_scale=1.6),
    Product("tissue", "immunohistochemistry", True, defect_scale=1.2),
)


@dataclass(frozen=True)
class Size:
    """How many images of each kind per product, and their side in pixels."""

    good: int
    per_defect_type: int
    side: int


SIZES = {"small": Size(good=30, per_defect_type=2, side=256), "large": Size(150, 12, 256)}


def _source(product: Product) -> np.ndarray:
    from skimage import data

    image = getattr(data, product.loader)()
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return array[:, :, :3]


def _good(source: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random view of the product: rotation, crop, flip, lighting, noise."""
    # fixtured parts: a small skew, sometimes turned half round
    angle = float(rng.uniform(-10, 10) + (180 if rng.random() < 0.5 else 0))
    rotated = ndimage.rotate(source, angle, axes=(0, 1), reshape=False, order=1, mode="reflect")
    h, w = rotated.shape[:2]
    crop = int(side * rng.uniform(0.9, 1.1))
    # keep the crop inside the circle that stays valid under any rotation (no reflected corners)
    reach = max(0.0, min(h, w) / 2 - 4 - crop / np.sqrt(2))
    radius, theta = reach * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
    y = int(round(h / 2 + radius * np.sin(theta) - crop / 2))
    x = int(round(w / 2 + radius * np.cos(theta) - crop / 2))
    patch = rotated[y : y + crop, x : x + crop]
    if crop != side:
        zoom = (side / crop, side / crop, 1)
        patch = ndimage.zoom(patch, zoom, order=1)[:side, :side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    gain = rng.uniform(0.9, 1.1)
    offset = rng.uniform(-8, 8)
    yy, xx = np.mgrid[0:side, 0:side] / side
    gradient = rng.uniform(-8, 8) * (xx - 0.5) + rng.uniform(-8, 8) * (yy - 0.5)
    out = patch * gain + offset + gradient[:, :, None]
    out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** rng.uniform(0.95, 1.05)
    out = out + rng.normal(0, rng.uniform(1.0, 2.5), out.shape)
    return np.ascontiguousarray(out, dtype=np.float32)


def _disc(side: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    return ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2


def _polyline_mask(side: int, points: np.ndarray, width: float) -> np.ndarray:
    mask = np.zeros((side, side), dtype=bool)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:], strict=True):
        steps = int(max(abs(y1 - y0), abs(x1 - x0)) * 2) + 1
        ys = np.clip(np.round(np.linspace(y0, y1, steps)).astype(int), 0, side - 1)
        xs = np.clip(np.round(np.linspace(x0, x1, steps)).astype(int), 0, side - 1)
        mask[ys, xs] = True
    if width > 1:
        mask = ndimage.binary_dilation(mask, iterations=int(round((width - 1) / 2)) or 1)
    return mask


def _blend(image: np.ndarray, mask: np.ndarray, target: np.ndarray, soft: float) -> np.ndarray:
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), soft) if soft > 0 else mask * 1.0
    alpha = np.clip(alpha / max(float(alpha.max()), 1e-6), 0, 1)[:, :, None]
    return image * (1 - alpha) + target * alpha


def _center(side: int, rng: np.random.Generator, margin: int) -> tuple[float, float]:
    margin = min(margin, side // 4)
    return float(rng.uniform(margin, side - margin)), float(rng.uniform(margin, side - margin))


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _scratch(
    image: np.ndarray, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    side = image.shape[0]
    cy, cx = _center(side, rng, 40)
    length = rng.uniform(35, 80) * scale
    angle = rng.uniform(0, np.pi)
    t = np.linspace(-0.5, 0.5, 12)[:, None]
    bend = rng.uniform(-0.15, 0.15) * length * (t**2 - 0.25)
    direction = np.array([np.sin(angle), np.cos(angle)])
    normal = np.array([direction[1], -direction[0]])
    points = np.array([cy, cx]) + t * length * direction + bend * normal
    mask = _polyline_mask(side, points, rng.uniform(2, 3.5) * scale)
    shift = _sign(rng) * rng.uniform(60, 100)
    return _blend(image, mask, image + shift, 0.6), mask


def _crack(
    image: np.ndarray, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    side = image.shape[0]
    cy, cx = _center(side, rng, 50)
    heading = rng.uniform(0, 2 * np.pi)
    points = [np.array([cy, cx])]
    for _ in range(int(rng.integers(14, 26) * scale)):
        heading += rng.normal(0, 0.6)
        step = rng.uniform(2, 4)
        points.append(points[-1] + step * np.array([np.sin(heading), np.cos(heading)]))
    mask = _polyline_mask(side, np.array(points), rng.uniform(2, 3.5) * scale)
    dark = np.minimum(image * 0.35, image - 50)
    return _blend(image, mask, dark, 0.5), mask


def _spot(
    image: np.ndarray, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    side = image.shape[0]
    cy, cx = _center(side, rng, 20)
    radius = rng.uniform(5, 9) * scale
    mask = _disc(side, cy, cx, radius)
    shift = _sign(rng) * rng.uniform(70, 110)
    return _blend(image, mask, image + shift, radius / 3), mask


def _hole(
    image: np.ndarray, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    side = image.shape[0]
    cy, cx = _center(side, rng, 24)
    radius = rng.uniform(6, 11) * scale
    inner = _disc(side, cy, cx, radius)
    rim = _disc(side, cy, cx, radius + 2) & ~inner
    out = _blend(image, rim, np.minimum(image + 40, 255), 0.7)
    depth = rng.uniform(10, 30)
    return _blend(out, inner, np.full_like(image, depth), 0.8), inner | rim


def _discolouration(
    image: np.ndarray, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    side = image.shape[0]
    cy, cx = _center(side, rng, 30)
    radius = rng.uniform(12, 22) * scale
    yy, xx = np.mgrid[0:side, 0:side]
    wobble = 1 + 0.25 * np.sin(np.arctan2(yy - cy, xx - cx) * int(rng.integers(2, 5)))
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2) <= (radius * wobble) ** 2
    channels = image.shape[2]
    if channels == 3:
        tint = rng.uniform(-70, 70, 3)
        tint[int(rng.integers(0, 3))] = _sign(rng) * rng.uniform(50, 80)
    else:
        tint = np.array([_sign(rng) * rng.uniform(45, 70) * scale])
    return _blend(image, mask, image + tint, 3.0), mask


def _missing(
    image: np.ndarray, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    side = image.shape[0]
    cy, cx = _center(side, rng, 30)
    radius = rng.uniform(10, 17) * scale
    yy, xx = np.mgrid[0:side, 0:side]
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.3 * np.sin(angle * int(rng.integers(2, 6)) + rng.uniform(0, 6.3))
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2) <= (radius * wobble) ** 2
    # the surface is gone: a smooth substrate of another shade, with a shadowed edge
    substrate = ndimage.gaussian_filter(image, (12, 12, 0)) + _sign(rng) * rng.uniform(30, 50)
    flat = substrate + rng.normal(0, 1.5, image.shape)
    edge = ndimage.binary_dilation(mask, iterations=2) & ~mask
    out = _blend(image, edge, image * 0.6, 0.5)
    return _blend(out, mask, flat, 1.0), mask | edge


DefectFn = Callable[[np.ndarray, np.random.Generator, float], tuple[np.ndarray, np.ndarray]]
DEFECTS: dict[str, DefectFn] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "hole": _hole,
    "discolouration": _discolouration,
    "missing": _missing,
}


def _save(array: np.ndarray, path: Path, color: bool) -> None:
    pixels = np.clip(np.round(array), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels if color else pixels[:, :, 0], "RGB" if color else "L")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=False, compress_level=1)


def generate_product(product: Product, out: Path, size: Size, seed: int) -> dict[str, int]:
    """Write one product's dataset under ``out``; return image counts by kind."""
    rng = np.random.default_rng([seed, sum(map(ord, product.name))])
    source = _source(product)
    for i in range(size.good):
        _save(_good(source, size.side, rng), out / "good" / f"{i:04d}.png", product.color)
    counts = {"good": size.good}
    scale = product.defect_scale * size.side / 256  # defect sizes are drawn for 256 px
    for kind in DEFECT_TYPES:
        for i in range(size.per_defect_type):
            image, mask = DEFECTS[kind](_good(source, size.side, rng), rng, scale)
            name = f"{kind}_{i:03d}.png"
            _save(image, out / "defect" / kind / name, product.color)
            mask_img = Image.fromarray((mask * 255).astype(np.uint8), "L")
            (out / "masks" / kind).mkdir(parents=True, exist_ok=True)
            mask_img.save(out / "masks" / kind / name)
        counts[kind] = size.per_defect_type
    return counts


def generate(
    out: Path, seed: int = 0, size: str = "small", products: Sequence[str] | None = None
) -> dict[str, dict[str, int]]:
    """Write every (or the named) product's dataset under ``out/<product>``."""
    chosen = [p for p in PRODUCTS if products is None or p.name in products]
    unknown = set(products or ()) - {p.name for p in PRODUCTS}
    if unknown:
        raise ValueError(
            f"unknown product(s) {sorted(unknown)}; known: {[p.name for p in PRODUCTS]}"
        )
    summary = {}
    for product in chosen:
        started = time.perf_counter()
        summary[product.name] = generate_product(product, out / product.name, SIZES[size], seed)
        print(
            f"sample_data: {product.name}: {sum(summary[product.name].values())} images "
            f"in {time.perf_counter() - started:.1f}s -> {out / product.name}",
            flush=True,
        )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m training.sample_data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="dataset size")
    parser.add_argument(
        "--products", nargs="+", metavar="NAME", help=f"subset of {[p.name for p in PRODUCTS]}"
    )
    args = parser.parse_args(argv)
    try:
        generate(args.out, args.seed, args.size, args.products)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

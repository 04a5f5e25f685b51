"""Training memory benchmark: peak memory of training does not grow with the number of images.

    nice .venv/bin/python bench/training_memory.py [--images 10000] [--small 1000] \\
        [--defects 300] [--keep DIR] [--threads 2] [--code DIR]

Generates a dataset in the documented layout (``good/``, ``defect/<type>/``) of ``--images``
1000×1000 grayscale JPEG parts cut from scikit-image's bundled brick photograph (skew, crop,
flip, lighting, noise; defects drawn as in ``training.sample_data``), and a second one of the
first ``--small`` good images and the same defects (hard links, no copy). Trains on each with
``python -m training.train`` in a subprocess and reports that subprocess's peak resident memory
(``ru_maxrss`` of the child, from ``wait4``), its wall time and the package's figures, side by
side, with their ratio. ``--keep DIR`` keeps the datasets and packages there (and reuses a
dataset generated there with the same settings); ``--code DIR`` trains with the training code
of another checkout (before/after comparisons). Prints one JSON document; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge_component")]

SIDE = 1000
SEED = 20260101
QUALITY = 90
VARIANTS = 8  # pre-rotated views of the photograph that parts are cut from
DEFECT_WINDOW = 500  # defects are drawn in a window of the part (a fraction of its area)
DEFECT_SCALE = 2.0  # defect size relative to training.sample_data's 256 px parts


def _views(rng: np.random.Generator) -> list[np.ndarray]:
    """Skewed and turned views of the photograph, each larger than a part (uint8)."""
    from PIL import Image
    from scipy import ndimage
    from skimage import data

    photo = np.asarray(data.brick(), dtype=np.uint8)
    big = int(SIDE * 1.5)
    # the 512 px photograph, mirrored to twice its size and scaled to cover a skewed part
    tiled = np.block([[photo, photo[:, ::-1]], [photo[::-1], photo[::-1, ::-1]]])
    scaled = np.asarray(Image.fromarray(tiled).resize((big, big), Image.Resampling.BILINEAR))
    views = []
    for i in range(VARIANTS):
        angle = float(rng.uniform(-10, 10) + (180 if i % 2 else 0))
        views.append(ndimage.rotate(scaled, angle, reshape=False, order=1, mode="reflect"))
    return views


def _part(views: list[np.ndarray], noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One good part: a crop of a view, flipped, with its own lighting and noise (uint8)."""
    view = views[int(rng.integers(len(views)))]
    margin = (view.shape[0] - SIDE) // 2  # stay clear of the corners the rotation reflected
    y, x = (int(v) for v in rng.integers(margin // 2, margin + margin // 2, 2))
    crop = view[y : y + SIDE, x : x + SIDE]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain, offset, gamma = rng.uniform(0.9, 1.1), rng.uniform(-8, 8), rng.uniform(0.95, 1.05)
    levels = np.arange(256, dtype=np.float32) * gain + offset
    lut = np.clip(255.0 * (np.clip(levels, 0, 255) / 255.0) ** gamma, 0, 255).astype(np.int16)
    ny, nx = (int(v) for v in rng.integers(0, noise.shape[0] - SIDE, 2))
    out = lut[crop] + noise[ny : ny + SIDE, nx : nx + SIDE]
    return np.clip(out, 0, 255).astype(np.uint8)


def _defect(part: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The part with one defect of ``kind`` drawn in a window of it."""
    from training.sample_data import DEFECTS

    y, x = (int(v) for v in rng.integers(0, SIDE - DEFECT_WINDOW, 2))
    window = part[y : y + DEFECT_WINDOW, x : x + DEFECT_WINDOW].astype(np.float32)[:, :, None]
    drawn, _ = DEFECTS[kind](window, rng, DEFECT_SCALE)
    out = part.copy()
    out[y : y + DEFECT_WINDOW, x : x + DEFECT_WINDOW] = np.clip(np.round(drawn[:, :, 0]), 0, 255)
    return out


def generate(root: Path, good: int, defects: int, seed: int = SEED) -> dict[str, Any]:
    """Write ``good`` good parts and ``defects`` defect parts (evenly by type) under ``root``."""
    from PIL import Image

    from training.sample_data import DEFECT_TYPES

    settings = {"good": good, "defects": defects, "seed": seed, "side": SIDE, "quality": QUALITY}
    marker = root / "generated.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        print(f"training_memory: reusing {root}", file=sys.stderr, flush=True)
        return settings
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    views = _views(rng)
    noise = np.round(rng.normal(0, 2.0, (SIDE + 256, SIDE + 256))).astype(np.int16)
    (root / "good").mkdir(parents=True)
    for i in range(good):
        Image.fromarray(_part(views, noise, rng)).save(
            root / "good" / f"{i:05d}.jpg", quality=QUALITY
        )
        if (i + 1) % 1000 == 0 or i + 1 == good:
            print(f"training_memory: {i + 1}/{good} good parts in "
                  f"{time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)  # fmt: skip
    for i in range(defects):
        kind = DEFECT_TYPES[i % len(DEFECT_TYPES)]
        folder = root / "defect" / kind
        folder.mkdir(parents=True, exist_ok=True)
        image = _defect(_part(views, noise, rng), kind, rng)
        Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=QUALITY)
    marker.write_text(json.dumps(settings) + "\n")
    return settings


def subset(full: Path, root: Path, good: int) -> None:
    """A dataset of ``full``'s first ``good`` good images and all its defects (hard links)."""
    shutil.rmtree(root, ignore_errors=True)
    for path in sorted((full / "good").iterdir())[:good] + sorted((full / "defect").rglob("*.jpg")):
        target = root / path.relative_to(full)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)


def train_measured(data: Path, model_dir: Path, threads: int, code: Path) -> dict[str, Any]:
    """Train in a subprocess; its peak resident memory, wall time and package figures."""
    env = dict(os.environ, PYTHONPATH=f"{code}{os.pathsep}{code / 'edge_component'}")
    argv = [sys.executable, "-m", "training.train", "--data", str(data),
            "--model-dir", str(model_dir), "--threads", str(threads)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        sys.stderr.write(f"  {line}")
        sys.stderr.flush()
        tail = [*tail[-19:], line]
    # wait4 gives this child's own resource usage (RUSAGE_CHILDREN would be the maximum over
    # every child waited for so far, the earlier run included)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"training on {data} failed ({proc.returncode}): {''.join(tail)}")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    metrics = manifest["metrics"]
    return {
        "good_images": len(list((data / "good").iterdir())),
        "train_images": metrics["train_images"],
        "validation_good": metrics["validation"]["good"],
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "wall_seconds": round(wall, 1),
        "train_seconds": metrics["train_seconds"],
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "memory_bank": metrics["memory_bank"],
        "validation_auroc": metrics["validation"]["image_auroc"],
    }


def main(argv: list[str] | None = None) -> int:
    """Generate, train twice, print JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=10000, help="good images, large run")
    parser.add_argument("--small", type=int, default=1000, help="good images, small run")
    parser.add_argument("--defects", type=int, default=300, help="defect images (both runs)")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) datasets and packages here")
    parser.add_argument("--threads", type=int, default=2, help="torch/ORT threads of training")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose training runs")
    args = parser.parse_args(argv)
    if not 10 <= args.small < args.images:
        print("error: need 10 <= --small < --images", file=sys.stderr)
        return 2
    if args.defects < 2:
        print("error: --defects must be at least 2 (validation and test)", file=sys.stderr)
        return 2
    if not (args.code / "training" / "train.py").is_file():
        print(f"error: --code {args.code}: no training/train.py there", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="training-memory-"))
    try:
        started = time.perf_counter()
        full, small = work / f"parts-{args.images}", work / f"parts-{args.small}"
        settings = generate(full, args.images, args.defects)
        subset(full, small, args.small)
        generated = round(time.perf_counter() - started, 1)
        disk = sum(p.stat().st_size for p in (full / "good").iterdir()) / args.images / 1e3
        runs = []
        for data in (small, full):
            print(f"training_memory: training on {data}", file=sys.stderr, flush=True)
            runs.append(train_measured(data, work / f"model-{data.name}", args.threads, args.code))
            print(f"training_memory: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "training_memory",
        "dataset": {**settings, "format": "JPEG, 8-bit grey", "kb_per_image": round(disk, 1)},
        "generate_seconds": generated,
        "threads": args.threads,
        "runs": runs,
        "images_ratio": round(runs[1]["good_images"] / runs[0]["good_images"], 2),
        "peak_rss_ratio": round(runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
        "train_seconds_ratio": round(runs[1]["train_seconds"] / runs[0]["train_seconds"], 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The part's reference pose, from the training good images (``train --align``).

:mod:`inspector.align` registers every model input to a reference image before the model sees
it. Here training builds that reference and decides whether to use it:

* **Reference**: up to ``REFERENCE_IMAGES`` training good images are registered to one of
  them; their mean is moved into their median pose (the part's typical pose, so the search
  grid's range is spent on both sides of it, not on one side of the first image's) and
  becomes the reference for the next of ``REFERENCE_ROUNDS`` rounds (a mean image of the part
  in one pose; its noise and lighting average out). Images whose peak is under half the
  median are left out of the means (a poor registration blurs it).
* **Refusal levels**: ``min_peak`` is ``MIN_PEAK_FACTOR`` × the lowest correlation peak of up
  to ``MEASURE_IMAGES`` other training good images (those that did not make the reference,
  when there are ``MIN_HELD_APART`` of them) against the final reference, so a good part is
  refused only when it matches the reference much worse than every measured one did;
  ``max_outside`` is the largest share of registered pixels beyond the frame among them plus
  ``OUTSIDE_MARGIN`` (a part further out of view than any good one is refused).
* **``auto``** (the default) aligns when registration is consistent: the measured good
  images' median peak is at least ``AUTO_MIN_PEAK`` and registration raises their median
  correlation with the reference by at least ``AUTO_MIN_GAIN``. A part that sits in one place
  and random textures (nothing to register: their peaks stay near 0) train without it.

The figures behind the decision go to ``metrics.align``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from inspector.align import Pose, Registrar, encode_reference
from inspector.model_package import AlignSpec, FrameSpec, InputSpec
from inspector.preprocess import frame_tensors

ALIGN_MODES = ("auto", "similarity", "none")
DEFAULT_ALIGN = "auto"
REFERENCE_IMAGES = 40
MEASURE_IMAGES = 100
MIN_HELD_APART = 20
MIN_PEAK_FACTOR = 0.5
AUTO_MIN_PEAK = 0.25
AUTO_MIN_GAIN = 0.2
OUTSIDE_MARGIN = 0.1
REFERENCE_ROUNDS = 3  # the first moves the mean to the median pose, the others refine it


def pixels_of(path: Path, spec: InputSpec, frames: FrameSpec | None) -> np.ndarray:
    """A frame's model input before normalisation, ``(H, W, C)`` in 0..255 (no alignment)."""
    plain = replace(spec, align=None)
    with Image.open(path) as image:
        image.load()
        tensor = frame_tensors(image, plain, frames)[0]
    mean = np.asarray(plain.mean, np.float32)[:, None, None]
    std = np.asarray(plain.std, np.float32)[:, None, None]
    return (tensor * std + mean).transpose(1, 2, 0)


def registered_masks(
    paths: Sequence[Path],
    masks: Sequence[Path | None],
    spec: InputSpec,
    frames: FrameSpec | None,
) -> list[np.ndarray | None]:
    """Defect masks (frame pixels, a stretched whole frame) brought into the reference pose by
    their image's own registration, at the model's input size: the cells the head learns from
    are the cells the aligned input shows the defect in."""
    if spec.align is None:
        raise ValueError("registered_masks needs an input that aligns")
    from inspector.align import registrar

    reg = registrar(spec.align)
    out: list[np.ndarray | None] = []
    for path, mask_path in zip(paths, masks, strict=True):
        if mask_path is None:
            out.append(None)
            continue
        pose = reg.estimate(pixels_of(path, spec, frames))
        with Image.open(mask_path) as image:
            mask = image.convert("L").resize((spec.width, spec.height), Image.Resampling.BILINEAR)
        plane = (np.asarray(mask, np.float32) > 0).astype(np.float32)
        out.append(reg.apply(plane, pose, fill=0.0) >= 0.5)
    return out


def _centred_mean(registrar: Registrar, images: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of ``images`` registered to the registrar's reference (those that registered
    poorly, peak under half the median, left out), moved into the images' median pose: a
    reference in the part's typical pose, not in the first image's."""
    aligned = [registrar.align(p, strict=False) for p in images]
    poses = [pose for _, pose in aligned]
    peaks = np.array([pose.peak for pose in poses])
    keep = peaks >= 0.5 * float(np.median(peaks))
    mean = np.mean([pixels for (pixels, _), k in zip(aligned, keep, strict=True) if k], axis=0)
    angle = float(np.median([p.angle for p in poses]))
    scale = float(np.exp(np.median([np.log(p.scale) for p in poses])))
    shift = np.median([p.shift for p in poses], axis=0)
    # the median pose's inverse: aligned(q) = frame(c + t + M (q - c)) with M = R(-a) / s gives
    # frame(p) = aligned(c - s R(a) t + s R(a) (p - c)), the pose (-a, 1 / s, -s R(a) t)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    back = -scale * (turn @ shift)
    inverse = Pose(angle=-angle, scale=1 / scale, shift=(float(back[0]), float(back[1])), peak=1)
    return registrar.apply(mean, inverse)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two inputs' grey values over their central 70 % (edges excluded:
    they take the reference's pixels when aligned)."""
    h, w = a.shape[:2]
    rows, cols = slice(int(0.15 * h), int(0.85 * h)), slice(int(0.15 * w), int(0.85 * w))
    x = a[rows, cols].mean(axis=2).ravel()
    y = b[rows, cols].mean(axis=2).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def check_mode(mode: str, spec: InputSpec) -> str | None:
    """Refuse a mode that cannot apply to ``spec`` (:class:`ValueError`); return why ``auto``
    would not align it (None: it may)."""
    if mode not in ALIGN_MODES:
        raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)}, got {mode!r}")
    if spec.tiles is not None and spec.tiles.count > 1:
        if mode == "similarity":
            raise ValueError("--align similarity takes whole-frame models only, not --tiles")
        return "tiles: whole frames only"
    if spec.fit == "pad":
        if mode == "similarity":
            raise ValueError("--align similarity takes --fit stretch only, not pad")
        return "fit pad: stretch only"
    return None


def plan_alignment(
    paths: Sequence[Path],
    spec: InputSpec,
    frames: FrameSpec | None,
    mode: str = DEFAULT_ALIGN,
    *,
    seed: int = 0,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[AlignSpec | None, dict[str, Any]]:
    """The :class:`AlignSpec` for ``spec`` from training good images ``paths`` (None: no
    alignment) and the figures behind it, for ``metrics.align``."""
    unfit = check_mode(mode, spec)
    if mode == "none":
        return None, {"mode": mode, "aligned": False, "reason": "--align none"}
    if unfit is not None:
        return None, {"mode": mode, "aligned": False, "reason": unfit}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    chosen = [paths[i] for i in order[: REFERENCE_IMAGES + MEASURE_IMAGES]]
    images = [pixels_of(p, spec, frames) for p in chosen]
    if len(images) < 2:
        if mode == "similarity":
            raise ValueError("--align similarity needs at least 2 training good images")
        return None, {"mode": mode, "aligned": False, "reason": "fewer than 2 good images"}
    base = images[:REFERENCE_IMAGES]
    reference = base[0]
    for _ in range(REFERENCE_ROUNDS):
        registrar = Registrar(AlignSpec(reference=encode_reference(reference), min_peak=0.0))
        reference = _centred_mean(registrar, base)
    encoded = encode_reference(reference)
    registrar = Registrar(AlignSpec(reference=encoded, min_peak=0.0))
    reference = registrar.reference  # as the device decodes it (8-bit PNG)
    # measured on images that did not make the reference, where there are enough of them: an
    # image inside the mean matches it better than a new part would
    rest = images[len(base) :]
    measured = rest if len(rest) >= MIN_HELD_APART else images[:MEASURE_IMAGES]
    peaks, outside, before, after = [], [], [], []
    for pixels in measured:
        registered, pose = registrar.align(pixels, strict=False)
        peaks.append(pose.peak)
        outside.append(pose.outside)
        before.append(_correlation(pixels, reference))
        after.append(_correlation(registered, reference))
    peak = np.asarray(peaks)
    gain = float(np.median(after) - np.median(before))
    figures: dict[str, Any] = {
        "mode": mode,
        "images_measured": len(measured),
        "measured_apart_from_reference": measured is rest,
        "reference_images": len(base),
        "peak": {
            "min": round(float(peak.min()), 4),
            "median": round(float(np.median(peak)), 4),
            "max": round(float(peak.max()), 4),
        },
        "outside": {
            "median": round(float(np.median(outside)), 4),
            "max": round(float(np.max(outside)), 4),
        },
        "correlation": {
            "unaligned_median": round(float(np.median(before)), 4),
            "aligned_median": round(float(np.median(after)), 4),
        },
        "rule": (
            f"auto aligns when the median peak >= {AUTO_MIN_PEAK} and the median correlation "
            f"gain >= {AUTO_MIN_GAIN}"
        ),
    }
    consistent = float(np.median(peak)) >= AUTO_MIN_PEAK and gain >= AUTO_MIN_GAIN
    aligned = mode == "similarity" or consistent
    figures["aligned"] = aligned
    figures["reason"] = (
        "--align similarity"
        if mode == "similarity"
        else ("registration is consistent" if consistent else "registration is not consistent")
    )
    log(
        f"align ({mode}): peaks {figures['peak']['min']:.3f}..{figures['peak']['max']:.3f} "
        f"(median {figures['peak']['median']:.3f}), correlation with the reference "
        f"{figures['correlation']['unaligned_median']:.3f} -> "
        f"{figures['correlation']['aligned_median']:.3f}: "
        f"{'aligned' if aligned else 'not aligned'} ({figures['reason']})"
    )
    if not aligned:
        return None, figures
    min_peak = round(MIN_PEAK_FACTOR * float(peak.min()), 4)
    max_outside = round(min(1.0, float(np.max(outside)) + OUTSIDE_MARGIN), 4)
    figures["min_peak"] = min_peak
    figures["max_outside"] = max_outside
    return AlignSpec(reference=encoded, min_peak=min_peak, max_outside=max_outside), figures


def refused(paths: Sequence[Path], spec: InputSpec, frames: FrameSpec | None) -> list[str | None]:
    """For each image, why the device would refuse it at registration (None: judged)."""
    if spec.align is None:
        return [None] * len(paths)
    from inspector.align import registrar

    reg = registrar(spec.align)
    return [reg.refusal(reg.estimate(pixels_of(p, spec, frames))) for p in paths]

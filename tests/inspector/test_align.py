"""Registration to the part's reference pose (``input.align``): estimate, resample, refuse."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import data as skdata

from inspector.align import ALIGN, Registrar, decode_reference, encode_reference, registrar
from inspector.decode import FrameError
from inspector.model_package import (
    AlignSpec,
    InputSpec,
    ModelPackageError,
    TileSpec,
    load_package,
    parse_input,
    write_manifest,
)
from inspector.preprocess import frame_tensors
from inspector.runner import ModelLoadError, ModelRunner
from tests.inspector.conftest import frame
from tests.support.tiny_model import build_tiny_package, image_bytes

SIDE = 224
ORIGIN = 144  # the reference is the camera photograph's centre, SIDE px square


def _camera() -> np.ndarray:
    return skdata.camera().astype(np.float32)


def _reference() -> np.ndarray:
    return _camera()[ORIGIN : ORIGIN + SIDE, ORIGIN : ORIGIN + SIDE, None]


def _posed(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """The photograph as a camera sees the part turned, scaled and shifted.

    ``frame(p) = photo(origin + c + scale R(angle) (p - c - shift))``, resampled by scipy (not
    by the code under test): the pose :class:`inspector.align.Pose` documents.
    """
    c = np.array([(SIDE - 1) / 2, (SIDE - 1) / 2])
    a = math.radians(angle_deg)
    matrix = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    offset = ORIGIN + c - matrix @ (c + np.array(shift))
    out = ndimage.affine_transform(_camera(), matrix, offset, (SIDE, SIDE), order=1, mode="reflect")
    return out.astype(np.float32)[:, :, None]


def _spec(min_peak: float = 0.1, **extra: float) -> AlignSpec:
    return AlignSpec(reference=encode_reference(_reference()), min_peak=min_peak, **extra)


def _centre_correlation(a: np.ndarray, b: np.ndarray) -> float:
    inner = slice(40, SIDE - 40)
    return float(np.corrcoef(a[inner, inner].ravel(), b[inner, inner].ravel())[0, 1])


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [
        (0.0, 1.0, (9.0, -14.0)),
        (5.0, 0.9, (-12.0, 6.5)),
        (-6.5, 1.12, (3.0, 17.0)),
        (7.8, 0.86, (-5.0, 5.0)),  # at the grid's corner: the finer levels reach past it
    ],
)
def test_the_pose_is_recovered_and_undone(
    angle: float, scale: float, shift: tuple[float, float]
) -> None:
    reg = Registrar(_spec())
    posed = _posed(angle, scale, shift)
    before = _centre_correlation(posed, _reference())
    assert before < 0.8  # the frame is visibly off
    aligned, pose = reg.align(posed)
    assert math.degrees(pose.angle) == pytest.approx(angle, abs=0.4)
    assert pose.scale == pytest.approx(scale, rel=0.012)
    assert pose.shift == pytest.approx(shift, abs=1.5)
    assert _centre_correlation(aligned, _reference()) > 0.97
    assert pose.peak > 0.3


def test_pixels_from_outside_the_frame_take_the_reference() -> None:
    reg = Registrar(_spec())
    posed = _posed(0.0, 1.0, (0.0, 30.0))  # the part 30 px to the right: its right edge is
    aligned, _ = reg.align(posed)  # beyond the frame
    reference = reg.reference
    # the rightmost columns came from outside the frame: they are the reference's pixels
    assert np.array_equal(aligned[:, -20:], reference[:, -20:])
    # the rest is the frame's, resampled: close to the reference, not a copy of it
    assert not np.array_equal(aligned[:, :150], reference[:, :150])
    assert _centre_correlation(aligned, reference) > 0.97


def test_a_frame_of_something_else_is_refused_with_a_reason() -> None:
    reg = Registrar(_spec(min_peak=0.2))
    other = np.asarray(Image.fromarray(skdata.coins()).resize((SIDE, SIDE)), np.float32)[:, :, None]
    with pytest.raises(FrameError) as caught:
        reg.align(other)
    assert caught.value.reason == ALIGN
    assert "does not register to the part's reference pose" in str(caught.value)
    aligned, pose = reg.align(other, strict=False)  # training scores it all the same
    assert pose.peak < 0.2 and aligned.shape == other.shape


def test_an_input_of_another_size_is_refused() -> None:
    with pytest.raises(FrameError, match="alignment reference is 224x224"):
        Registrar(_spec()).align(np.zeros((100, 100, 1), np.float32))


def test_the_reference_round_trips_and_a_corrupt_one_is_named() -> None:
    reference = _reference()
    assert np.array_equal(decode_reference(encode_reference(reference)), reference)
    with pytest.raises(ValueError, match="input.align.reference is not a base64 PNG"):
        decode_reference("bm90IGEgcG5n")


def test_frame_tensors_align_before_normalising() -> None:
    align = _spec()
    spec = InputSpec(
        name="image",
        height=SIDE,
        width=SIDE,
        color="L",
        mean=(127.0,),
        std=(128.0,),
        align=align,
    )
    posed = _posed(3.0, 1.05, (5.0, -7.0))
    image = Image.fromarray(np.clip(np.rint(posed[:, :, 0]), 0, 255).astype(np.uint8), "L")
    tensor = frame_tensors(image, spec)[0]
    expected, _ = registrar(align).align(np.asarray(image, np.float32)[:, :, None])
    assert np.allclose(tensor, (expected.transpose(2, 0, 1) - 127.0) / 128.0, atol=1e-6)
    unaligned = frame_tensors(image, replace(spec, align=None))[0]
    assert _centre_correlation(tensor[0], _reference()[:, :, 0]) > 0.95
    assert _centre_correlation(unaligned[0], _reference()[:, :, 0]) < 0.8
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (SIDE, SIDE), np.uint8))
    with pytest.raises(FrameError) as caught:
        frame_tensors(noise, replace(spec, align=_spec(min_peak=0.2)))
    assert caught.value.reason == ALIGN
    loose = frame_tensors(noise, replace(spec, align=_spec(min_peak=0.2)), align_strict=False)
    assert loose.shape == (1, 1, SIDE, SIDE) and np.isfinite(loose).all()


@pytest.mark.parametrize("value", [0, 255])
def test_a_flat_frame_is_refused_and_left_as_it_is_when_not_strict(value: int) -> None:
    reg = Registrar(_spec())
    flat = np.full((SIDE, SIDE, 1), float(value), np.float32)
    with pytest.raises(FrameError) as caught:
        reg.align(flat)
    assert caught.value.reason == ALIGN and "flat" in str(caught.value)
    aligned, pose = reg.align(flat, strict=False)
    assert pose.flat and pose.peak == 0.0
    assert (pose.angle, pose.scale, pose.shift) == (0.0, 1.0, (0.0, 0.0))


def test_random_poses_are_recovered_within_the_documented_bounds() -> None:
    # docs/training.md "Registration to the part's pose": angle within 0.5° for 90 % of
    # random poses and 1.6° at worst, scale within 1.6 %, shift within 0.7 px
    reg = Registrar(_spec())
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(32):
        angle, scale = rng.uniform(-7.5, 7.5), rng.uniform(0.86, 1.14)
        shift = (float(rng.uniform(-18, 18)), float(rng.uniform(-18, 18)))
        pose = reg.estimate(_posed(angle, scale, shift))
        errors.append(
            (
                abs(math.degrees(pose.angle) - angle),
                abs(pose.scale / scale - 1),
                math.dist(pose.shift, shift),
            )
        )
    angle_err, scale_err, shift_err = np.array(errors).T
    assert np.percentile(angle_err, 90) < 0.5 and angle_err.max() < 1.6
    assert scale_err.max() < 0.016 and shift_err.max() < 0.7


@pytest.mark.parametrize(
    ("limits", "poses"),
    [
        # (2a + 1)(2s + 1) grid poses, then each level at half the step reaching one step
        # further: 9 × 9, 19 × 19, 39 × 39 by default
        ({}, 81 + 361 + 1521),
        ({"max_angle": 0.0}, 1 * 9 + 3 * 19 + 7 * 39),
        ({"max_scale": 0.0}, 9 * 1 + 19 * 3 + 39 * 7),
        ({"max_angle": 5.0}, 5 * 9 + 11 * 19 + 23 * 39),  # whole steps within the limit: ±4°
        ({"max_angle": 7.0, "angle_step": 1.5}, 9 * 9 + 19 * 19 + 39 * 39),  # ±6°
    ],
)
def test_the_pyramid_holds_the_poses_the_manifest_counts_and_reaches_every_corner(
    limits: dict, poses: int
) -> None:
    spec = _spec(**limits)
    reg = Registrar(spec)
    assert spec.pyramid_poses == poses == sum(len(level.indices) for level in reg.levels)
    for upper, lower in zip(reg.levels, reg.levels[1:], strict=False):
        for index in upper.indices:  # the window around any pose of a level is in the next
            assert len(lower.around(index)) == 9


def test_a_part_partly_out_of_view_is_refused() -> None:
    reg = Registrar(_spec(max_outside=0.2))
    _, pose = reg.align(_posed(0.0, 1.0, (0.0, 20.0)))  # 20 of 224 columns beyond the frame
    assert pose.outside == pytest.approx(20 / SIDE, abs=0.02)
    far = _posed(0.0, 1.0, (0.0, 70.0))  # 70 columns: the peak alone would let it through
    assert reg.estimate(far).peak > reg.spec.min_peak
    with pytest.raises(FrameError) as caught:
        reg.align(far)
    assert caught.value.reason == ALIGN and "beyond the camera's view" in str(caught.value)


# ---- the manifest ------------------------------------------------------------------------------


def _input_doc() -> dict:
    spec = InputSpec(name="image", height=SIDE, width=SIDE, align=_spec())
    return spec.to_json()


def test_the_align_field_round_trips_and_is_left_out_when_not_declared() -> None:
    doc = _input_doc()
    assert parse_input(doc).align == _spec()
    assert "align" not in InputSpec(name="image", height=8, width=8).to_json()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"min_peak": None}, "input.align.min_peak", "is required"),
        ({"max_angle": 45}, "input.align.max_angle", "a number 0..30"),
        ({"method": "affine"}, "input.align.method", "one of ('similarity',)"),
        ({"angle_step": 0.1, "scale_step": 0.005}, "input.align.angle_step", "poses in the search"),
        ({"colour": 1}, "input.align", "colour"),
        ({"max_outside": 1.5}, "input.align.max_outside", "a number 0..1"),
    ],
)
def test_bad_align_fields_are_refused_naming_the_field(
    change: dict, field: str, message: str
) -> None:
    doc = copy.deepcopy(_input_doc())
    for key, value in change.items():
        if value is None:
            del doc["align"][key]
        else:
            doc["align"][key] = value
    with pytest.raises(ModelPackageError) as caught:
        parse_input(doc)
    assert caught.value.field_path.startswith(field)
    assert message in str(caught.value)


def test_align_with_tiles_pad_or_a_large_input_is_refused() -> None:
    doc = _input_doc()
    doc["tiles"] = {"rows": 2, "cols": 2}
    with pytest.raises(ModelPackageError, match="whole-frame models only"):
        parse_input(doc)
    doc["tiles"] = {"rows": 1, "cols": 1}  # one tile is a whole frame
    assert parse_input(doc).tiles == TileSpec(1, 1) and parse_input(doc).align is not None
    padded = {**_input_doc(), "fit": "pad"}
    with pytest.raises(ModelPackageError, match="fit 'stretch', not 'pad'"):
        parse_input(padded)
    large = {**_input_doc(), "height": 2048}
    with pytest.raises(ModelPackageError, match="up to 1024 px a side"):
        parse_input(large)
    # the default grid's pyramid (1,963 poses) at 1,024 px would hold 495 MiB of spectra
    heavy = {**_input_doc(), "height": 1024, "width": 1024}
    with pytest.raises(ModelPackageError, match="1963 poses .* 495 MiB of spectra"):
        parse_input(heavy)


# ---- the device --------------------------------------------------------------------------------


def _aligned_package(root: Path, reference: np.ndarray, min_peak: float) -> Path:
    package = build_tiny_package(root, size=64, golden=False)
    align = AlignSpec(reference=encode_reference(reference), min_peak=min_peak)
    manifest = replace(package.manifest, input=replace(package.manifest.input, align=align))
    write_manifest(root, manifest)
    return load_package(root).root


def _camera_64(shift: int = 0) -> np.ndarray:
    small = np.asarray(Image.fromarray(skdata.camera()).resize((128, 128)), np.uint8)
    part = small[32 + shift : 96 + shift, 32:96]
    return np.repeat(part[:, :, None], 3, axis=2)


def test_the_device_routes_a_frame_that_does_not_register_to_manual(
    make_engine, tmp_path: Path
) -> None:
    root = _aligned_package(tmp_path / "aligned", _camera_64(), min_peak=0.25)
    engine = make_engine(runner=ModelRunner.load(root))
    moved = engine.judge(frame(image_bytes(Image.fromarray(_camera_64(shift=4)))))
    assert moved["score"] is not None, moved  # the same part, moved: registered and judged
    noise = np.random.default_rng(8).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    refused = engine.judge(frame(image_bytes(Image.fromarray(noise))))
    assert refused["decision"] == "manual" and refused["score"] is None
    assert refused["reason"].startswith("image_align: the frame does not register")


def test_a_package_whose_reference_does_not_decode_is_refused_at_load(tmp_path: Path) -> None:
    root = _aligned_package(tmp_path / "bad", _camera_64(), min_peak=0.25)
    doc = load_package(root).manifest
    broken = replace(doc.input.align, reference="bm90IGEgcG5n")
    write_manifest(root, replace(doc, input=replace(doc.input, align=broken)))
    with pytest.raises(ModelLoadError, match="input.align.reference is not a base64 PNG"):
        ModelRunner.load(root)


def test_a_package_whose_reference_is_of_another_size_is_refused_at_load(tmp_path: Path) -> None:
    root = _aligned_package(tmp_path / "small", _camera_64()[:48, :48], min_peak=0.25)
    with pytest.raises(ModelLoadError, match="reference is 48x48 px .* the input 64x64"):
        ModelRunner.load(root)

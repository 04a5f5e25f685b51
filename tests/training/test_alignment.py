"""Training's reference pose (``--align``): the decision, the package, device parity."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.align import Registrar
from inspector.model_package import TileSpec, load_package
from inspector.runner import ModelRunner
from training.alignment import AUTO_MIN_PEAK, pixels_of, plan_alignment, refused
from training.photo_data import SOURCES, Size, generate_source
from training.sample_data import PRODUCTS, generate_product
from training.sample_data import Size as SampleSize
from training.scoring import describe_frames, load_frame
from training.train import input_spec, train

PHOTO = Size(good=40, per_defect_type=2)


@pytest.fixture(scope="module")
def coins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A part photographed at a new pose each time (shift, zoom, rotation): 40 good."""
    root = tmp_path_factory.mktemp("align") / "coins"
    (source,) = [s for s in SOURCES if s.name == "coins"]
    generate_source(source, root, PHOTO, seed=3)
    return root


@pytest.fixture(scope="module")
def gravel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random texture: nothing to register."""
    root = tmp_path_factory.mktemp("align") / "gravel"
    (product,) = [p for p in PRODUCTS if p.name == "gravel"]
    generate_product(product, root, SampleSize(good=40, per_defect_type=1, side=128), seed=3)
    return root


def _plan(data: Path, mode: str, **spec: object):  # noqa: ANN202 - a tuple of two
    goods = sorted((data / "good").glob("*.png"))
    _, frames = describe_frames(goods)
    return plan_alignment(goods, input_spec(**spec), frames, mode)


def test_auto_aligns_a_part_that_moves_and_not_a_random_texture(coins: Path, gravel: Path) -> None:
    spec, figures = _plan(coins, "auto")
    assert spec is not None and figures["aligned"] is True
    assert figures["peak"]["median"] >= AUTO_MIN_PEAK
    # registration brings the moved parts onto the reference
    assert (
        figures["correlation"]["aligned_median"] > figures["correlation"]["unaligned_median"] + 0.3
    )
    assert spec.max_outside == pytest.approx(figures["outside"]["max"] + 0.1)
    # the reference sits in the parts' typical pose: the search range is spent on both sides
    reg = Registrar(spec)
    goods = sorted((coins / "good").glob("*.png"))
    _, frames = describe_frames(goods)
    poses = [reg.estimate(pixels_of(p, input_spec(), frames)) for p in goods]
    assert abs(np.median([math.degrees(p.angle) for p in poses])) < spec.angle_step
    assert abs(np.median([math.log(p.scale) for p in poses])) < spec.scale_step
    assert all(reg.refusal(p) is None for p in poses)  # every good part is judged
    other = sorted((gravel / "good").glob("*.png"))[:5]  # another product is not the part
    assert all(r is not None for r in refused(other, replace(input_spec(), align=spec), None))
    texture, figures = _plan(gravel, "auto")
    assert texture is None and figures["aligned"] is False
    assert figures["reason"] == "registration is not consistent"


def test_the_mode_overrides_the_rule(coins: Path, gravel: Path) -> None:
    assert _plan(coins, "none")[0] is None
    forced, figures = _plan(gravel, "similarity")
    assert forced is not None and figures["reason"] == "--align similarity"
    with pytest.raises(ValueError, match="whole-frame models only"):
        _plan(coins, "similarity", tiles=TileSpec(2, 2))
    assert _plan(coins, "auto", tiles=TileSpec(2, 2))[0] is None
    with pytest.raises(ValueError, match="stretch only, not pad"):
        _plan(coins, "similarity", fit="pad")
    assert _plan(coins, "auto", fit="pad")[0] is None
    with pytest.raises(ValueError, match="align must be one of"):
        _plan(coins, "rigid")


@pytest.fixture(scope="module")
def aligned_package(coins: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("aligned") / "coins"
    with contextlib.redirect_stdout(io.StringIO()):
        train(coins, out, seed=1, max_bank=256, model_kind="patchcore", precision="float")
    return out


def test_the_package_carries_the_reference_and_the_device_sees_what_training_saw(
    aligned_package: Path, coins: Path
) -> None:
    package = load_package(aligned_package)
    align = package.manifest.input.align
    assert align is not None and align.min_peak > 0
    assert package.manifest.metrics["align"]["aligned"] is True
    assert package.manifest.metrics["align"]["validation_good_refused"] == 0
    assert 0 < align.max_outside < 1
    record = json.loads((aligned_package / "training.json").read_text())
    assert record["input"]["align"] is True
    runner = ModelRunner.load(aligned_package)  # the golden self-test runs through alignment
    image_path = sorted((coins / "defect").rglob("*.png"))[0]
    with Image.open(image_path) as image:
        image.load()
        device = runner.frame_tensors(image)
    training = load_frame(image_path, package.manifest.input, package.manifest.frames)
    assert np.array_equal(device, training)
    unaligned = load_frame(
        image_path, replace(package.manifest.input, align=None), package.manifest.frames
    )
    assert not np.allclose(device, unaligned, atol=0.05)  # alignment changed the input


def test_evaluate_scores_the_aligned_package(
    aligned_package: Path, coins: Path, tmp_path: Path
) -> None:
    from training.evaluate import evaluate

    with contextlib.redirect_stdout(io.StringIO()):
        result = evaluate(aligned_package, coins, tmp_path / "eval", latency_runs=5, plots=False)
    # torch on the aligned tensors scores as the exported graph does on the device's inputs
    assert result["score_parity_max_abs_diff"] < 1e-3
    assert result["images"]["evaluated"] == len(result["per_image"]) > 0
    assert result["image_auroc"] is not None


def test_a_defect_mask_moves_with_its_image(aligned_package: Path, tmp_path: Path) -> None:
    from scipy import ndimage

    from inspector.align import registrar
    from training.alignment import pixels_of, registered_masks
    from training.photo_data import example

    spec = load_package(aligned_package).manifest.input
    assert spec.align is not None
    reg = registrar(spec.align)
    inside_registered, inside_plain = [], []
    for seed in range(4):
        shot = example("coins", "extra_coin", seed=seed)
        assert shot.mask is not None
        image, clean, mask = (
            tmp_path / f"d{seed}.png",
            tmp_path / f"c{seed}.png",
            tmp_path / f"m{seed}.png",
        )
        Image.fromarray(shot.image).save(image)
        Image.fromarray(shot.clean).save(clean)
        Image.fromarray(shot.mask.astype(np.uint8) * 255).save(mask)
        (registered,) = registered_masks([image], [mask], spec, None)
        assert registered is not None and registered.shape == (spec.height, spec.width)
        pose = reg.estimate(pixels_of(image, spec, None))
        # where the registered defect image differs from its twin, registered the same way
        changed = (
            np.abs(
                reg.apply(pixels_of(image, spec, None), pose)
                - reg.apply(pixels_of(clean, spec, None), pose)
            ).max(axis=2)
            > 25
        )
        plain = (
            np.asarray(
                Image.fromarray(shot.mask.astype(np.uint8) * 255).resize((spec.width, spec.height))
            )
            > 127
        )
        grown = ndimage.binary_dilation(registered, iterations=2)
        inside_registered.append(grown[changed].mean())
        inside_plain.append(ndimage.binary_dilation(plain, iterations=2)[changed].mean())
    assert min(inside_registered) > 0.9
    assert np.mean(inside_plain) < np.mean(inside_registered) - 0.2


def test_the_reference_is_the_mean_in_the_images_median_pose() -> None:
    from inspector.align import encode_reference
    from inspector.model_package import AlignSpec
    from tests.inspector.test_align import _posed
    from training.alignment import REFERENCE_ROUNDS, _centred_mean

    # nine views around one pose: angle 3° ± 1, scale 1.06 ± 0.02, shift (5, -7) ± 2 px
    poses = [
        (3.0 + da, 1.06 + ds, (5.0 + dr, -7.0 - dr))
        for da, ds, dr in [
            (0, 0, 0),
            (-1, 0.02, 2),
            (1, -0.02, -2),
            (-1, -0.02, 1),
            (1, 0.02, -1),
            (0.5, 0.01, 2),
            (-0.5, -0.01, -2),
            (1, 0.0, 0),
            (-1, 0.0, 0),
        ]
    ]
    images = [_posed(*pose) for pose in poses]
    reference = images[1]  # start from a view off the median, as the first image may be
    for _ in range(REFERENCE_ROUNDS):
        reg = Registrar(AlignSpec(reference=encode_reference(reference), min_peak=0.0))
        reference = _centred_mean(reg, images)
    centred = Registrar(AlignSpec(reference=encode_reference(reference), min_peak=0.0))
    pose = centred.estimate(images[0])  # the median view registers at about the identity
    assert abs(math.degrees(pose.angle)) < 0.6
    assert pose.scale == pytest.approx(1.0, abs=0.012)
    assert math.hypot(*pose.shift) < 1.5
    off = Registrar(AlignSpec(reference=encode_reference(images[1]), min_peak=0.0))
    assert abs(math.degrees(off.estimate(images[0]).angle)) > 0.6  # which the start did not

"""Region of interest, fit and tiles: the manifest's fields, the frame's tensors, the engine."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.engine import Inspector
from inspector.model_package import (
    InputSpec,
    ModelPackage,
    ModelPackageError,
    TileSpec,
    load_package,
    parse_manifest,
    write_manifest,
)
from inspector.preprocess import combine_tiles, frame_layout, frame_tensors, to_tensor
from inspector.runner import ModelRunner
from tests.inspector.conftest import frame
from tests.support.tiny_model import build_tiny_package, image_bytes, part_image

SPEC = InputSpec(name="image", height=16, width=16, mean=(127.0,) * 3, std=(128.0,) * 3)


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 5) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def _manifest_doc(tmp_path: Path) -> dict:
    return build_tiny_package(tmp_path / "doc").manifest.to_json()


def _planned(root: Path, **plan: object) -> ModelPackage:
    """The tiny package with ``roi``/``fit``/``tiles`` in its input (no golden image)."""
    package = build_tiny_package(root, golden=False)
    manifest = replace(package.manifest, input=replace(package.manifest.input, **plan))
    write_manifest(root, manifest)
    return load_package(root)


# ---- the manifest ------------------------------------------------------------------------------


def test_old_manifests_read_as_before_and_write_no_new_fields(tmp_path: Path) -> None:
    doc = _manifest_doc(tmp_path)
    assert {"roi", "fit", "tiles"}.isdisjoint(doc["input"])
    spec = parse_manifest(doc).input
    assert (spec.roi, spec.fit, spec.tiles, spec.tile_count) == (None, "stretch", None, 1)


def test_declared_fields_round_trip(tmp_path: Path) -> None:
    doc = _manifest_doc(tmp_path)
    doc["input"] |= {"roi": [4, 6, 40, 30], "fit": "pad", "tiles": {"rows": 2, "cols": 3}}
    spec = parse_manifest(doc).input
    assert spec.roi == (4, 6, 40, 30) and spec.fit == "pad"
    assert spec.tiles == TileSpec(rows=2, cols=3, overlap=0.0) and spec.tile_count == 6
    assert parse_manifest(parse_manifest(doc).to_json()).input == spec


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("roi", [0, 0, 100], r"input\.roi: must be \[x, y, width, height\]"),
        ("roi", [-1, 0, 100, 100], r"input\.roi: must be"),
        ("roi", [0, 0, 4, 100], r"input\.roi: must be .*width and height >= 8"),
        ("roi", [0, 0, 10.5, 100], r"input\.roi: must be"),
        ("fit", "crop", r"input\.fit: must be one of \('stretch', 'pad'\)"),
        ("tiles", {"rows": 0, "cols": 2}, r"input\.tiles\.rows: must be an integer 1\.\.16"),
        ("tiles", {"rows": 2}, r"input\.tiles\.cols: is required"),
        ("tiles", {"rows": 2, "cols": 2, "overlap": 0.7}, r"input\.tiles\.overlap: must be"),
        ("tiles", {"rows": 2, "cols": 2, "stride": 3}, r"input\.tiles\.stride: unknown field"),
        ("tiles", {"rows": 9, "cols": 9}, r"input\.tiles\.cols: 9x9 = 81 tiles, at most 64"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    doc = _manifest_doc(tmp_path)
    doc["input"][field] = value
    with pytest.raises(ModelPackageError, match=message):
        parse_manifest(doc)


def test_a_region_no_frame_can_hold_or_tiles_too_small_for_it_are_refused(
    tmp_path: Path,
) -> None:
    doc = _manifest_doc(tmp_path)
    doc["metrics"]["frames"] = {"channels": 3, "min_size": [32, 32], "max_size": [64, 64]}
    doc["input"]["roi"] = [40, 0, 32, 32]
    with pytest.raises(ModelPackageError, match=r"input\.roi: .*beyond metrics\.frames\.max_size"):
        parse_manifest(doc)
    doc["input"] |= {"roi": [0, 0, 32, 32], "tiles": {"rows": 1, "cols": 5}}
    with pytest.raises(ModelPackageError, match=r"input\.tiles\.rows: 1x5 tiles .* under 8 px"):
        parse_manifest(doc)


def test_an_inspector_without_these_fields_refuses_a_package_that_declares_them(
    tmp_path: Path,
) -> None:
    # what an older reader does: the input section's fields are a closed set
    doc = _manifest_doc(tmp_path)
    doc["input"]["tiles"] = {"rows": 2, "cols": 2}
    older = copy.deepcopy(doc)
    older["input"]["tiling"] = older["input"].pop("tiles")  # a field this reader does not know
    with pytest.raises(ModelPackageError, match=r"input\.tiling: unknown field"):
        parse_manifest(older)


# ---- the frame's tensors ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_without_the_new_fields_the_tensor_is_the_whole_frame_resized(mode: str) -> None:
    image = _noise(50, 30, mode)
    reference = image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)
    want = ((np.asarray(reference, np.float32) - 127) / 128).transpose(2, 0, 1)
    tensors = frame_tensors(image, SPEC)
    assert tensors.shape == (1, 3, 16, 16)
    assert tensors[0].tobytes() == np.ascontiguousarray(want).tobytes()
    assert to_tensor(image, SPEC).tobytes() == tensors[0].tobytes()


def test_a_region_of_interest_is_the_only_part_the_model_sees() -> None:
    image = _noise(80, 60)
    spec = replace(SPEC, roi=(10, 20, 32, 16))
    want = frame_tensors(image.crop((10, 20, 42, 36)), SPEC)
    assert frame_tensors(image, spec).tobytes() == want.tobytes()
    # pixels outside the region do not matter
    changed = image.copy()
    changed.paste((0, 0, 0), (0, 0, 80, 20))
    assert frame_tensors(changed, spec).tobytes() == want.tobytes()


def test_pad_keeps_the_aspect_and_pads_with_the_mean() -> None:
    image = Image.new("RGB", (64, 32), (255, 255, 255))
    tensor = frame_tensors(image, replace(SPEC, fit="pad"))[0]
    # 64x32 into 16x16: 16x8 of picture, centred, 4 rows of padding above and below
    np.testing.assert_allclose(tensor[:, 4:12, :], (255 - 127) / 128)
    assert not tensor[:, :4, :].any() and not tensor[:, 12:, :].any()  # the mean: 0
    square = _noise(40, 40)
    assert (
        frame_tensors(square, replace(SPEC, fit="pad")).tobytes()
        == frame_tensors(square, SPEC).tobytes()
    )


def test_tiles_cover_the_region_with_the_declared_overlap() -> None:
    spec = replace(SPEC, roi=(8, 4, 100, 60), tiles=TileSpec(rows=2, cols=3, overlap=0.2))
    boxes = [tile.box for tile in frame_layout((120, 80), spec)]
    assert len(boxes) == 6
    xs = sorted({(b[0], b[2]) for b in boxes})
    ys = sorted({(b[1], b[3]) for b in boxes})
    assert xs[0][0] == 8 and xs[-1][1] == 108 and ys[0][0] == 4 and ys[-1][1] == 64
    width = xs[0][1] - xs[0][0]
    assert all(right - left == width for left, right in xs)
    for (_, right), (left, _) in zip(xs, xs[1:], strict=False):
        # neighbours share at least 20 % (tiles round up to whole pixels)
        assert 0.2 * width <= right - left <= 0.2 * width + 2
    image = _noise(120, 80)
    tensors = frame_tensors(image, spec)
    assert tensors.shape == (6, 3, 16, 16)
    for tensor, box in zip(tensors, boxes, strict=True):
        assert tensor.tobytes() == frame_tensors(image.crop(box), SPEC)[0].tobytes()


def test_sixteen_bit_frames_take_the_same_region_and_tiles() -> None:
    grey = _noise(64, 48, "L")
    mono = Image.fromarray((np.asarray(grey, np.uint16) * 257).astype(np.uint16))
    plan = {"roi": (8, 8, 48, 32), "tiles": TileSpec(rows=1, cols=2, overlap=0.25)}
    eight = frame_tensors(grey, replace(SPEC, **plan))
    sixteen = frame_tensors(mono, replace(SPEC, bit_depth=16, **plan))
    assert sixteen.shape == eight.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(sixteen, eight, atol=0.01)


def test_combine_takes_the_highest_tile_and_stitches_the_map() -> None:
    spec = replace(SPEC, tiles=TileSpec(rows=1, cols=2))
    maps = [np.zeros((1, 16, 16), np.float32), np.ones((1, 16, 16), np.float32)]
    score, stitched = combine_tiles([0.2, 0.7], maps, spec, (64, 32))
    assert score == pytest.approx(0.7)
    # 32x32 tiles became 16x16 inputs: the frame's map at half its size
    assert stitched is not None and stitched.shape == (16, 32)
    assert not stitched[:, :16].any() and (stitched[:, 16:] == 1).all()
    assert np.isnan(combine_tiles([0.2, float("nan")], None, spec, (64, 32))[0])
    own = np.arange(256, dtype=np.float32).reshape(16, 16)
    assert combine_tiles([0.1], [own], SPEC, (50, 30))[1] is own  # untiled: the model's map
    with pytest.raises(ValueError, match="1 tile scores for a frame of 2 tiles"):
        combine_tiles([0.1], None, spec, (64, 32))


def test_pad_is_cut_from_the_stitched_map() -> None:
    spec = replace(SPEC, fit="pad")
    amap = np.zeros((16, 16), np.float32)
    amap[4:12] = 1.0  # the picture's rows (64x32 into 16x16)
    _, stitched = combine_tiles([1.0], [amap], spec, (64, 32))
    assert stitched is not None and stitched.shape == (8, 16) and (stitched == 1).all()


# ---- the device ------------------------------------------------------------------------------


def test_a_frame_smaller_than_the_region_of_interest_is_manual(make_engine, tmp_path: Path) -> None:
    package = _planned(tmp_path / "roi", roi=(16, 16, 32, 32))
    engine = make_engine(runner=ModelRunner.load(package.root))
    result = engine.judge(frame(image_bytes(part_image(0.0, 40))))
    assert result["decision"] == "manual" and result["score"] is None
    assert result["reason"].startswith(
        "image_roi: 40x40 px frame does not contain the region of interest 32x32 at 16,16"
    )
    judged = engine.judge(frame(image_bytes(_noise(64, 64))))
    assert judged["score"] is not None and judged.get("reason") != "image_roi"


@pytest.mark.parametrize("max_batch", [1, 8])
def test_the_device_scores_every_tile_and_takes_the_highest(
    make_engine, tmp_path: Path, max_batch: int
) -> None:
    from inspector.runner import RunnerOptions

    plan = {"roi": (4, 2, 90, 60), "fit": "pad", "tiles": TileSpec(rows=2, cols=3, overlap=0.1)}
    package = _planned(tmp_path / "tiles", **plan)
    runner = ModelRunner.load(package.root, RunnerOptions(max_batch=max_batch))
    image = _noise(100, 70)
    # each tile scored alone through the untiled model's path, then the highest
    spec = package.manifest.input
    singles = [
        runner.score([frame_tensors(image.crop(tile.box), replace(spec, roi=None, tiles=None))[0]])[
            0
        ]
        for tile in frame_layout(image.size, spec)
    ]
    engine: Inspector = make_engine(runner=runner)
    results = engine.judge_batch([frame(image_bytes(image)), frame(image_bytes(image))])
    for result in results:
        assert result["score"] == pytest.approx(max(singles), abs=1e-6)
    assert len(set(singles)) > 1  # the tiles differ: the maximum is a real choice


def test_a_tile_the_model_fails_on_makes_the_frame_manual(make_engine, tmp_path: Path) -> None:
    package = _planned(tmp_path / "tiles", tiles=TileSpec(rows=2, cols=2))
    runner = ModelRunner.load(package.root)
    image = _noise(64, 64)
    bad = runner.frame_tensors(image)[2]
    real = runner.score

    def third_tile_fails(tensors):  # noqa: ANN001, ANN202 - test double
        if any(np.array_equal(tensor, bad) for tensor in tensors):
            raise RuntimeError("tile exploded")
        return real(tensors)

    runner.score = third_tile_fails  # type: ignore[method-assign]
    result = make_engine(runner=runner).judge(frame(image_bytes(image)))
    assert result["decision"] == "manual" and result["score"] is None
    assert result["reason"].startswith("model_error: tile 3/4: RuntimeError: tile exploded")


def test_a_tiled_shadow_scores_its_frames_by_its_own_tiles(make_engine, tmp_path: Path) -> None:
    served = ModelRunner.load(_planned(tmp_path / "served", roi=(0, 0, 48, 48)).root)
    shadow_pkg = _planned(tmp_path / "shadow", tiles=TileSpec(rows=2, cols=2))
    engine = make_engine(runner=served)
    assert engine.set_shadow(shadow_pkg.root).ok
    engine.judge(frame(image_bytes(_noise(64, 64))))
    stats = engine.shadow_stats()
    assert (stats.frames, stats.errors) == (1, 0)

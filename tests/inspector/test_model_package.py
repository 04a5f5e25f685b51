"""The model package contract: what a valid package is, and the error a bad one gets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.model_package import (
    FrameSpec,
    Golden,
    InputSpec,
    Manifest,
    ModelPackageError,
    OutputSpec,
    Thresholds,
    load_package,
    parse_manifest,
    sha256_file,
    write_manifest,
)
from inspector.preprocess import to_tensor


def _manifest(sha: str, **changes: object) -> Manifest:
    base = Manifest(
        name="surface",
        version="1.2.3",
        sha256=sha,
        input=InputSpec(name="image", height=32, width=48, mean=(127.0,) * 3, std=(128.0,) * 3),
        outputs=OutputSpec(score="score", anomaly_map="anomaly_map"),
        thresholds=Thresholds(reject=0.8, manual=0.6),
        golden=Golden(file="golden.png", score=0.1),
    )
    return Manifest(**{**base.__dict__, **changes})  # type: ignore[arg-type]


@pytest.fixture
def package(tmp_path: Path) -> Path:
    (tmp_path / "model.onnx").write_bytes(b"graph bytes")
    Image.new("RGB", (48, 32), (10, 20, 30)).save(tmp_path / "golden.png")
    write_manifest(tmp_path, _manifest(sha256_file(tmp_path / "model.onnx")))
    return tmp_path


def test_written_package_loads_back_equal(package: Path) -> None:
    loaded = load_package(package)
    assert loaded.manifest == _manifest(sha256_file(package / "model.onnx"))
    assert loaded.manifest.ref == "surface@1.2.3"
    assert loaded.golden_path == package / "golden.png"


def test_checksum_mismatch_names_the_field(package: Path) -> None:
    (package / "model.onnx").write_bytes(b"another graph")
    with pytest.raises(ModelPackageError, match=r"manifest.json: sha256: model.onnx has sha256"):
        load_package(package)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": "1.2"}, "version"),
        ({"name": "Has Space"}, "name"),
        ({"thresholds": {"reject": 0.5, "manual": 0.9}}, "thresholds.manual"),
        ({"thresholds": {"reject": 0.5}}, "thresholds.manual"),
        ({"colour": "RGB"}, "colour"),
        ({"format": "other/2"}, "format"),
        ({"model_file": "../model.onnx"}, "model_file"),
    ],
)
def test_bad_manifest_field_is_named(package: Path, change: dict[str, object], field: str) -> None:
    doc = json.loads((package / "manifest.json").read_text())
    doc.update(change)
    (package / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelPackageError) as raised:
        load_package(package)
    assert raised.value.field_path == field
    assert str(package / "manifest.json") in str(raised.value)


def test_bad_input_spec_is_named() -> None:
    doc = _manifest("0" * 64).to_json()
    doc["input"]["std"] = [1.0, 0.0, 1.0]
    with pytest.raises(ModelPackageError, match=r"input.std: must be a list of 3 numbers"):
        parse_manifest(doc)


def test_missing_directory_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="directory not found"):
        load_package(tmp_path / "absent")
    with pytest.raises(ModelPackageError, match="manifest.json is missing"):
        load_package(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelPackageError, match="not valid JSON"):
        load_package(tmp_path)


def test_to_tensor_converts_mode_resizes_and_normalises() -> None:
    spec = InputSpec(name="image", height=32, width=48, mean=(127.0,) * 3, std=(128.0,) * 3)
    gray = Image.new("L", (200, 100), 255)
    tensor = to_tensor(gray, spec)
    assert tensor.shape == (3, 32, 48)
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor, (255 - 127) / 128)
    single = InputSpec(name="image", height=8, width=8, color="L", mean=(0.0,), std=(255.0,))
    assert to_tensor(Image.new("RGBA", (8, 8), (255, 255, 255, 0)), single).shape == (1, 8, 8)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
@pytest.mark.parametrize(
    "spec",
    [
        InputSpec(name="image", height=24, width=40, mean=(127.0,) * 3, std=(128.0,) * 3),
        InputSpec(
            name="image",
            height=17,
            width=17,
            resize="bicubic",
            mean=(123.675, 116.28, 103.53),
            std=(58.395, 57.12, 57.375),
        ),
        InputSpec(
            name="image", height=33, width=21, color="L", resize="nearest", mean=(0.3,), std=(0.7,)
        ),
    ],
)
def test_to_tensor_is_bitwise_the_reference_formula(spec: InputSpec, mode: str) -> None:
    # training scored its validation images with these exact float32 operations
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).convert(mode)
    resized = image.convert(spec.color).resize(
        (spec.width, spec.height), getattr(Image.Resampling, spec.resize.upper())
    )
    pixels = np.asarray(resized, dtype=np.float32).reshape(spec.height, spec.width, -1)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    reference = np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))
    tensor = to_tensor(image, spec)
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert tensor.tobytes() == reference.tobytes()


def test_bit_depth_of_sixteen_bit_frames_is_optional_and_checked() -> None:
    doc = _manifest("0" * 64).to_json()
    assert parse_manifest(doc).input.bit_depth is None  # older manifests stay valid
    doc["input"]["bit_depth"] = 12
    assert parse_manifest(doc).input.bit_depth == 12
    assert parse_manifest(parse_manifest(doc).to_json()).input.bit_depth == 12
    doc["input"]["bit_depth"] = 20
    with pytest.raises(ModelPackageError, match=r"input.bit_depth: must be an integer 8..16"):
        parse_manifest(doc)


def test_frames_in_the_metrics_are_optional_and_read_back() -> None:
    doc = _manifest("0" * 64).to_json()
    assert parse_manifest(doc).frames is None  # older manifests: today's 8-bit behaviour
    frames = FrameSpec(channels=1, min_size=(64, 48), max_size=(512, 384))
    doc["metrics"]["frames"] = frames.to_json()
    manifest = parse_manifest(doc)
    assert manifest.frames == frames
    assert parse_manifest(manifest.to_json()).frames == frames
    assert "frames" not in manifest.to_json()  # only under metrics: older inspectors read it


@pytest.mark.parametrize(
    ("key", "value", "field_path"),
    [
        ("channels", 2, "metrics.frames.channels: must be 1 or 3"),
        ("min_size", [0, 10], "metrics.frames.min_size: must be [width, height]"),
        ("max_size", [10], "metrics.frames.max_size: must be [width, height]"),
        ("max_size", [32, 32], "metrics.frames.min_size: must not exceed max_size"),
        ("bits", 12, "metrics.frames.bits: unknown field"),
    ],
)
def test_frames_errors_name_the_field(key: str, value: object, field_path: str) -> None:
    doc = _manifest("0" * 64).to_json()
    doc["metrics"]["frames"] = {"channels": 3, "min_size": [64, 64], "max_size": [128, 128]}
    doc["metrics"]["frames"][key] = value
    with pytest.raises(ModelPackageError, match=re.escape(field_path)):
        parse_manifest(doc)


def test_sixteen_bit_models_take_one_channel_frames() -> None:
    doc = _manifest("0" * 64).to_json()
    doc["input"]["bit_depth"] = 12
    doc["metrics"]["frames"] = {"channels": 3, "min_size": [8, 8], "max_size": [64, 64]}
    with pytest.raises(ModelPackageError, match=r"metrics.frames.channels: must be 1 for 16-bit"):
        parse_manifest(doc)

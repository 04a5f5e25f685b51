"""A small REAL ONNX model and model package for tests and benchmarks (no training needed).

The graph scores an image by its mean absolute deviation from a built-in reference image (pixels
scaled to 0..1): ``score = mean(|x - R|)`` of shape ``(N,)`` and ``anomaly_map = mean_c(|x - R|)``
of shape ``(N, 1, H, W)``. :func:`part_image` makes a frame whose score is about ``delta``, so a
test can aim at pass, manual band or reject. Used by tests/inspector, tests/line_bridge and bench/.

    pkg = build_tiny_package(tmp_path / "pkg")             # thresholds reject 0.2, manual 0.1
    image = part_image(0.25)                                # scores ≈ 0.25 → reject
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from inspector.model_package import (
    MODEL_FILE,
    FrameSpec,
    Golden,
    InputSpec,
    Manifest,
    ModelPackage,
    OutputSpec,
    Thresholds,
    load_package,
    sha256_file,
    write_manifest,
)

REJECT = 0.2
MANUAL = 0.1
GOLDEN_FILE = "golden.png"
GOLDEN_DELTA = 0.05


def reference_array(size: int = 32, channels: int = 3) -> np.ndarray:
    """The model's reference image as uint8 ``(H, W, C)``: smooth gradients in 77..178."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / max(1, size - 1)
    planes = [0.3 + 0.4 * xs, 0.3 + 0.4 * ys, 0.3 + 0.4 * (xs + ys) / 2][:channels]
    return np.round(np.stack(planes, axis=-1) * 255).astype(np.uint8)


def part_image(delta: float, size: int = 32, color: str = "RGB") -> Image.Image:
    """An image whose tiny-model score is about ``|delta|`` (the reference shifted by delta)."""
    channels = 3 if color == "RGB" else 1
    ref = reference_array(size, channels).astype(np.float64)
    pixels = np.clip(np.round(ref + delta * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, color)


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    """Encode an image (PNG by default)."""
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def mono16(image8: Image.Image, bits: int) -> Image.Image:
    """A Mono10/12/16 camera frame of an 8-bit grey image, stored in a 16-bit container."""
    values = np.asarray(image8, dtype=np.float64) * ((1 << bits) - 1) / 255.0
    return Image.fromarray(np.round(values).astype(np.uint16))


def expected_score(
    image: Image.Image, size: int = 32, color: str = "RGB", bit_depth: int | None = None
) -> float:
    """The tiny model's score computed with numpy (independent of ONNX Runtime)."""
    from inspector.preprocess import to_tensor

    spec = InputSpec(
        name="image", height=size, width=size, color=color, std=(255.0,) * 3, bit_depth=bit_depth
    )
    if color == "L":
        spec = InputSpec(
            name="image",
            height=size,
            width=size,
            color="L",
            mean=(0.0,),
            std=(255.0,),
            bit_depth=bit_depth,
        )
    x = to_tensor(image, spec).astype(np.float64)
    ref = reference_array(size, 3 if color == "RGB" else 1).transpose(2, 0, 1) / 255.0
    return float(np.mean(np.abs(x - ref)))


def tiny_onnx(
    size: int = 32,
    channels: int = 3,
    *,
    dynamic_batch: bool = True,
    broken: bool = False,
    nan_score: bool = False,
) -> bytes:
    """Serialised ONNX graph (opset 17). ``broken`` fails at run time; ``nan_score`` gives NaN."""
    batch: int | str = "N" if dynamic_batch else 1
    ref = (reference_array(size, channels).transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    nodes = [
        helper.make_node("Sub", ["image", "reference"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["absdiff"]),
        helper.make_node("ReduceMean", ["absdiff"], ["anomaly_map"], axes=[1], keepdims=1),
    ]
    inits = [numpy_helper.from_array(ref, "reference")]
    source = "absdiff"
    if broken:
        # a reshape that cannot succeed for any input: ONNX Runtime raises at run time
        inits.append(numpy_helper.from_array(np.array([7, -1], dtype=np.int64), "bad_shape"))
        nodes.append(helper.make_node("Reshape", ["absdiff", "bad_shape"], ["reshaped"]))
        source = "reshaped"
    axes = [1] if broken else [1, 2, 3]
    mean_out = "raw_score" if nan_score else "score"
    nodes.append(helper.make_node("ReduceMean", [source], [mean_out], axes=axes, keepdims=0))
    if nan_score:
        inits.append(numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"))
        nodes.append(helper.make_node("Sub", ["raw_score", "two"], ["shifted"]))
        nodes.append(helper.make_node("Log", ["shifted"], ["score"]))  # log of a negative: NaN
    graph = helper.make_graph(
        nodes,
        "tiny_mad",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, channels, size, size])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [batch, 1, size, size]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if not broken:
        onnx.checker.check_model(model)
    return model.SerializeToString()


def build_tiny_package(
    root: Path | str,
    *,
    name: str = "tiny",
    version: str = "1.0.0",
    size: int = 32,
    color: str = "RGB",
    dynamic_batch: bool = True,
    reject: float = REJECT,
    manual: float = MANUAL,
    golden: bool = True,
    golden_score: float | None = None,
    manifest_size: int | None = None,
    broken: bool = False,
    nan_score: bool = False,
    bit_depth: int | None = None,
    frames: FrameSpec | None = None,
    defect_types: tuple[str, ...] = (),
) -> ModelPackage:
    """Write a complete model package (graph, golden image, manifest) and load it back.

    With ``bit_depth`` above 8 the package takes 16-bit mono frames (its golden image is one);
    ``frames`` is written as ``metrics.frames``; ``defect_types`` as ``metrics.defect_types``
    (the review station's defect buttons).

    ``manifest_size`` makes the manifest disagree with the graph's input (for shape checks);
    ``golden_score`` overrides the golden image's expected score (for self-test failures).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    channels = 3 if color == "RGB" else 1
    model_path = root / MODEL_FILE
    model_path.write_bytes(
        tiny_onnx(size, channels, dynamic_batch=dynamic_batch, broken=broken, nan_score=nan_score)
    )
    gold = None
    if golden:
        image = part_image(GOLDEN_DELTA, size, color)
        if bit_depth is not None and bit_depth > 8:
            image = mono16(image.convert("L"), bit_depth)
        image.save(root / GOLDEN_FILE)
        score = (
            expected_score(image, size, color, bit_depth) if golden_score is None else golden_score
        )
        gold = Golden(file=GOLDEN_FILE, score=score, tolerance=1e-4)
    side = manifest_size or size
    manifest = Manifest(
        name=name,
        version=version,
        sha256=sha256_file(model_path),
        input=InputSpec(
            name="image",
            height=side,
            width=side,
            color=color,
            mean=(0.0,) * channels,
            std=(255.0,) * channels,
            bit_depth=bit_depth,
        ),
        outputs=OutputSpec(score="score", anomaly_map="anomaly_map"),
        thresholds=Thresholds(reject=reject, manual=manual),
        created="2026-11-28T00:00:00Z",
        golden=gold,
        metrics={
            "note": "tiny test model: mean absolute deviation from a reference",
            **({"frames": frames.to_json()} if frames else {}),
            **({"defect_types": list(defect_types)} if defect_types else {}),
        },
        data_fingerprint="tiny",
    )
    write_manifest(root, manifest)
    return load_package(root)

"""Fixtures for the inspector's tests: a real tiny ONNX model package and images of every kind."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.engine import Inspector
from inspector.messages import Identity
from inspector.runner import ModelRunner
from inspector.runtime_config import RuntimeConfig
from inspector.sources import Frame
from tests.support.tiny_model import build_tiny_package, image_bytes, part_image

IDENTITY = Identity(plant="plant-a", line="line-1", station="st-1", device="dev-1")


def _save(image: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


@functools.cache
def bad_images() -> dict[str, tuple[bytes, str]]:
    """Every kind of frame that cannot be judged → (bytes, expected reason code)."""
    good_png = image_bytes(part_image(0.0, 64))
    good_jpeg = image_bytes(part_image(0.0, 64), "JPEG")
    rgb = part_image(0.0, 32)
    frames = [part_image(d, 16) for d in (0.0, 0.1)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    noise = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return {
        "empty": (b"", "image_empty"),
        "truncated_png": (good_png[: len(good_png) // 2], "image_truncated"),
        "truncated_png_tail": (good_png[:-8], "image_truncated"),
        "truncated_jpeg": (good_jpeg[: len(good_jpeg) // 2], "image_truncated"),
        "corrupt_noise": (noise, "image_corrupt"),
        "corrupt_header": (good_png[:16] + b"\x00" * 64 + good_png[80:], "image_corrupt"),
        "text_file": (b"this is not an image\n", "image_corrupt"),
        "huge_pixels": (_save(Image.new("L", (8000, 6000)), "PNG"), "image_oversized"),
        "cmyk": (_save(rgb.convert("CMYK"), "JPEG"), "image_mode"),
        "palette": (_save(rgb.convert("P"), "PNG"), "image_mode"),
        "one_pixel": (_save(Image.new("L", (1, 1)), "PNG"), "image_too_small"),
        "few_pixels": (_save(Image.new("RGB", (3, 2)), "PNG"), "image_too_small"),
        "thin_strip": (_save(Image.new("L", (640, 4)), "PNG"), "image_too_small"),
        "bilevel": (_save(rgb.convert("1"), "PNG"), "image_mode"),
        "la": (_save(rgb.convert("LA"), "PNG"), "image_mode"),
        "animated_gif": (gif.getvalue(), "image_mode"),
    }


@pytest.fixture(scope="session")
def tiny_package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model package (tiny ONNX graph, golden image, manifest), built once."""
    root = tmp_path_factory.mktemp("pkg") / "tiny-1.0.0"
    build_tiny_package(root)
    return root


@pytest.fixture(scope="session")
def tiny_runner(tiny_package_dir: Path) -> ModelRunner:
    """The tiny package loaded with every check on."""
    return ModelRunner.load(tiny_package_dir)


@pytest.fixture
def make_engine(tiny_runner: ModelRunner) -> Callable[..., Inspector]:
    """Build an ``Inspector`` on the tiny model; keyword arguments override the defaults."""

    def make(**kw: object) -> Inspector:
        kw.setdefault("runner", tiny_runner)
        kw.setdefault("config", RuntimeConfig(deadline_ms=10_000))
        return Inspector(IDENTITY, **kw)  # type: ignore[arg-type]

    return make


def frame(data: bytes, part_id: str = "p1", camera: str = "cam-1", **kw: object) -> Frame:
    """A frame with the given bytes."""
    return Frame(camera=camera, part_id=part_id, data=data, **kw)  # type: ignore[arg-type]

"""The strict decoder: every unusable frame is a typed FrameError with its reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inspector.decode import DecodeLimits, FrameError, check_image, decode_image
from inspector.model_package import FrameSpec, InputSpec
from inspector.preprocess import to_tensor
from tests.inspector.conftest import bad_images
from tests.support.tiny_model import image_bytes, part_image

BAD = bad_images()


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_image_raises_frame_error_with_reason(kind: str) -> None:
    data, reason = BAD[kind]
    with pytest.raises(FrameError) as err:
        decode_image(data)
    assert err.value.reason == reason, str(err.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"])
@pytest.mark.parametrize("color", ["RGB", "L"])
def test_good_images_decode_fully(fmt: str, color: str) -> None:
    image = decode_image(image_bytes(part_image(0.1, 40, color), fmt))
    assert image.mode == ("RGB" if fmt == "WEBP" else color)  # WebP stores grey as RGB
    assert image.size == (40, 40)
    assert image.getpixel((0, 0)) is not None


def test_byte_cap_applies_before_decoding() -> None:
    data = image_bytes(part_image(0.0, 64))
    with pytest.raises(FrameError) as err:
        decode_image(data, DecodeLimits(max_bytes=len(data) - 1))
    assert err.value.reason == "image_oversized"
    assert decode_image(data, DecodeLimits(max_bytes=len(data))).size == (64, 64)


def test_pixel_cap_is_configurable() -> None:
    data = image_bytes(part_image(0.0, 64))
    with pytest.raises(FrameError, match="64x64 px > 4095"):
        decode_image(data, DecodeLimits(max_pixels=4095))


def test_allowed_modes_are_configurable() -> None:
    data = image_bytes(part_image(0.0, 16).convert("RGBA"))
    assert decode_image(data, DecodeLimits(modes=("RGB", "RGBA"))).mode == "RGBA"
    with pytest.raises(FrameError, match="RGBA not in RGB"):
        decode_image(data, DecodeLimits(modes=("RGB",)))


def test_check_image_applies_limits_to_decoded_frames() -> None:
    image = part_image(0.0, 64)
    assert check_image(image) is image
    with pytest.raises(FrameError) as err:
        check_image(image.convert("CMYK"))
    assert err.value.reason == "image_mode"
    with pytest.raises(FrameError) as err:
        check_image(image, DecodeLimits(max_pixels=100))
    assert err.value.reason == "image_oversized"


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        DecodeLimits(max_bytes=0)
    with pytest.raises(ValueError):
        DecodeLimits(modes=())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_bytes_after_the_end_marker_are_tolerated(fmt: str) -> None:
    data = image_bytes(part_image(0.0, 32), fmt) + b"\x00" * 200  # some cameras pad frames
    assert decode_image(data).size == (32, 32)


def mono16(image8: Image.Image, bits: int) -> Image.Image:
    """A Mono10/12/16 camera frame of an 8-bit grey image, stored in a 16-bit container."""
    values = np.asarray(image8, dtype=np.float64) * ((1 << bits) - 1) / 255.0
    return Image.fromarray(np.round(values).astype(np.uint16))


def test_sixteen_bit_mono_and_rgba_frames_decode_by_default() -> None:
    grey = part_image(0.1, 40, "L")
    image = decode_image(image_bytes(mono16(grey, 12)))
    assert image.mode.startswith("I;16") and image.size == (40, 40)
    assert decode_image(image_bytes(part_image(0.1, 40).convert("RGBA"))).mode == "RGBA"


@pytest.mark.parametrize("bits", [10, 12, 16])
@pytest.mark.parametrize("color", ["L", "RGB"])
def test_sixteen_bit_mono_is_scaled_by_the_declared_bit_depth(bits: int, color: str) -> None:
    grey = part_image(0.05, 32, "L")
    n = len(color)
    stats = {"mean": (0.0,) * n, "std": (255.0,) * n}
    spec = InputSpec(name="x", height=24, width=24, color=color, **stats)
    want = to_tensor(grey, spec)
    spec16 = InputSpec(name="x", height=24, width=24, color=color, bit_depth=bits, **stats)
    got = to_tensor(decode_image(image_bytes(mono16(grey, bits))), spec16)
    assert got.shape == want.shape == (len(color), 24, 24)
    assert np.abs(got - want).max() < 1.5 / 255  # the 8-bit image, within rounding


def test_a_dark_frame_is_scaled_by_the_bit_depth_not_by_its_own_range() -> None:
    dark = Image.fromarray(np.full((16, 16), 50, dtype=np.uint8), "L")  # 803 in 12 bits
    frame16 = decode_image(image_bytes(mono16(dark, 12)))
    declared = InputSpec(name="x", height=16, width=16, color="L", mean=(0.0,), bit_depth=12)
    assert to_tensor(frame16, declared) == pytest.approx(50.0, abs=0.1)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_every_sixteen_bit_container_gives_the_same_input(mode: str) -> None:
    values = np.random.default_rng(5).integers(0, 4096, (20, 30), dtype=np.uint16)
    base = Image.fromarray(values)
    image = base if mode == "I;16" else base.convert("I") if mode == "I" else None
    if image is None:
        image = Image.frombytes("I;16B", base.size, values.astype(">u2").tobytes())
    assert image.mode == mode
    spec = InputSpec(name="x", height=16, width=16, color="L", mean=(0.0,), bit_depth=12)
    assert to_tensor(image, spec).tobytes() == to_tensor(base, spec).tobytes()


def test_sixteen_bit_tiff_of_mode_i_decodes() -> None:
    frame = Image.fromarray(np.full((32, 32), 4000, dtype=np.int32), "I")
    assert decode_image(image_bytes(frame, "TIFF")).mode == "I"


@pytest.mark.parametrize(
    ("image", "bit_depth", "detail"),
    [
        (Image.fromarray(np.full((16, 16), 900, np.uint16)), None, "16-bit I;16 frame"),
        (Image.new("L", (16, 16)), 12, "8-bit L frame, the model takes 12-bit mono"),
        (Image.fromarray(np.full((16, 16), 5000, np.uint16)), 12, "outside the 12-bit range"),
        (Image.fromarray(np.full((16, 16), 70000, np.int32), "I"), 16, "outside the 16-bit"),
    ],
)
def test_a_frame_of_another_bit_depth_is_refused(
    image: Image.Image, bit_depth: int | None, detail: str
) -> None:
    spec = InputSpec(name="x", height=16, width=16, color="L", mean=(0.0,), bit_depth=bit_depth)
    with pytest.raises(FrameError) as err:
        to_tensor(image, spec)
    assert err.value.reason == "image_bit_depth" and detail in err.value.detail


def test_declared_frames_refuse_grey_for_colour_and_sizes_out_of_range() -> None:
    spec = InputSpec(name="x", height=16, width=16)
    colour = FrameSpec(channels=3, min_size=(20, 20), max_size=(80, 60))
    with pytest.raises(FrameError) as err:
        to_tensor(part_image(0.0, 40, "L"), spec, colour)
    assert err.value.reason == "image_channels"
    with pytest.raises(FrameError) as err:
        to_tensor(part_image(0.0, 64), spec, colour)
    assert err.value.reason == "image_size" and err.value.detail.startswith("64x64 px outside")
    assert to_tensor(part_image(0.0, 40), spec, colour).shape == (3, 16, 16)


def test_a_grey_model_takes_colour_frames_as_grey() -> None:
    spec = InputSpec(name="x", height=16, width=16)
    grey = FrameSpec(channels=1, min_size=(8, 8), max_size=(64, 64))
    colour = part_image(0.1, 40)
    want = to_tensor(colour.convert("L"), spec)
    assert to_tensor(colour, spec, grey).tobytes() == want.tobytes()


def test_rgba_drops_an_opaque_alpha() -> None:
    rgb = part_image(0.1, 32)
    spec = InputSpec(name="x", height=32, width=32)
    assert np.array_equal(to_tensor(rgb.convert("RGBA"), spec), to_tensor(rgb, spec))


def test_minimum_side_is_configurable() -> None:
    data = image_bytes(part_image(0.0, 16))
    assert decode_image(data, DecodeLimits(min_side=16)).size == (16, 16)
    with pytest.raises(FrameError, match="16x16 px: a side below 17"):
        decode_image(data, DecodeLimits(min_side=17))
    with pytest.raises(FrameError) as err:
        check_image(Image.new("RGB", (1, 1)))
    assert err.value.reason == "image_too_small"

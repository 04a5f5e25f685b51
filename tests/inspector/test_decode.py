"""The strict decoder: every unusable frame is a typed FrameError with its reason."""

from __future__ import annotations

import pytest

from inspector.decode import DecodeLimits, FrameError, check_image, decode_image
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

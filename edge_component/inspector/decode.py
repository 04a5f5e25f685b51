"""Frame bytes → a checked PIL image, or a typed :class:`FrameError` saying why not.

Every frame that cannot be judged must become ``manual`` with a reason, so the decoder never
lets an exception of another type escape and never hands on an image it did not fully load.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Reason codes carried in ``FrameError.reason`` and, prefixed, in the result message.
EMPTY = "image_empty"
TRUNCATED = "image_truncated"
CORRUPT = "image_corrupt"
OVERSIZED = "image_oversized"
BAD_MODE = "image_mode"
UNREADABLE = "image_unreadable"
TOO_SMALL = "image_too_small"

# 8-bit colour and grey, RGBA (the alpha is dropped by preprocessing) and 16-bit mono (Mono10/12/
# 16 cameras; Pillow names it I;16 and, by byte order, I;16B / I;16L)
MONO16_MODES = ("I;16", "I;16B", "I;16L")
# 16-bit mono data as preprocessing reads it: also Pillow's 32-bit integer mode "I", in which
# some 16-bit TIFFs open (values beyond the declared bit depth are refused by preprocessing)
SIXTEEN_BIT_MODES = (*MONO16_MODES, "I")
DEFAULT_MODES = ("RGB", "L", "RGBA", *SIXTEEN_BIT_MODES)
# no camera takes frames a few pixels wide; such a frame is a glitch, never a part to judge
DEFAULT_MIN_SIDE = 8


class FrameError(ValueError):
    """A frame that cannot be judged; ``reason`` is a short code, ``detail`` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class DecodeLimits:
    """What the decoder accepts: byte and pixel caps, the shortest side and the PIL modes."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    modes: tuple[str, ...] = DEFAULT_MODES
    min_side: int = DEFAULT_MIN_SIDE

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.min_side <= 0:
            raise ValueError("DecodeLimits: max_bytes, max_pixels and min_side must be positive")
        if not self.modes:
            raise ValueError("DecodeLimits: modes must not be empty")


def decode_image(data: bytes, limits: DecodeLimits | None = None) -> Image.Image:
    """Decode ``data`` into a fully loaded image; raise :class:`FrameError` when it is unusable.

    Checks, in order: empty, byte cap, format identified, pixel cap (from the header, before
    the pixels are decoded), mode allowed, then a full load (truncated or corrupt data fails here).
    """
    limits = limits or DecodeLimits()
    if not data:
        raise FrameError(EMPTY, "0 bytes")
    if len(data) > limits.max_bytes:
        raise FrameError(OVERSIZED, f"{len(data)} bytes > {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            # Pillow warns on decompression bombs (we apply our own cap) and on odd EXIF.
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise FrameError(CORRUPT, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise FrameError(OVERSIZED, str(exc)[:80]) from None
    except Exception as exc:  # Pillow plugins raise many types on malformed headers
        kind = TRUNCATED if _says_truncated(exc) else CORRUPT
        raise FrameError(kind, f"header: {str(exc)[:70] or type(exc).__name__}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise FrameError(CORRUPT, f"size {width}x{height}")
    _check_small(width, height, limits)
    if width * height > limits.max_pixels:
        raise FrameError(OVERSIZED, f"{width}x{height} px > {limits.max_pixels}")
    if image.mode not in limits.modes:
        raise FrameError(BAD_MODE, f"{image.mode} not in {'/'.join(limits.modes)}")
    frames = int(getattr(image, "n_frames", 1))
    if frames > 1:
        raise FrameError(BAD_MODE, f"{frames} frames (animated)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except Exception as exc:
        if _says_truncated(exc):
            raise FrameError(TRUNCATED, str(exc)[:80]) from None
        raise FrameError(CORRUPT, f"pixels: {str(exc)[:70] or type(exc).__name__}") from None
    if image.mode not in limits.modes:  # a few decoders settle the mode only on load
        raise FrameError(BAD_MODE, f"{image.mode} not in {'/'.join(limits.modes)}")
    _check_trailer(image.format, data)
    return image


def _check_small(width: int, height: int, limits: DecodeLimits) -> None:
    if min(width, height) < limits.min_side:
        raise FrameError(TOO_SMALL, f"{width}x{height} px: a side below {limits.min_side}")


def _says_truncated(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("truncated", "end of file", "premature"))


def _check_trailer(fmt: str | None, data: bytes) -> None:
    # Pillow loads a PNG cut inside its last chunks without complaint; the end marker tells a
    # complete file from a cut one. Searched from the end, so bytes some cameras append after
    # the marker do not make good frames look truncated.
    if fmt == "PNG" and data.rfind(b"IEND") == -1:
        raise FrameError(TRUNCATED, "PNG without IEND chunk")
    if fmt == "JPEG" and data.rfind(b"\xff\xd9") == -1:
        raise FrameError(TRUNCATED, "JPEG without end-of-image marker")


def check_image(image: Image.Image, limits: DecodeLimits | None = None) -> Image.Image:
    """Apply the size and mode checks to an image that arrived already decoded (e.g. OpenCV)."""
    limits = limits or DecodeLimits()
    width, height = image.size
    if width <= 0 or height <= 0:
        raise FrameError(EMPTY, f"size {width}x{height}")
    _check_small(width, height, limits)
    if width * height > limits.max_pixels:
        raise FrameError(OVERSIZED, f"{width}x{height} px > {limits.max_pixels}")
    if image.mode not in limits.modes:
        raise FrameError(BAD_MODE, f"{image.mode} not in {'/'.join(limits.modes)}")
    return image

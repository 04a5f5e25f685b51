"""The inspection settings that may change at run time, validated as a whole.

An update is merged onto the current settings and validated; an invalid one raises
:class:`ConfigError` naming the field, and the caller keeps the last good settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from inspector.decode import DEFAULT_MIN_SIDE, DEFAULT_MODES, DecodeLimits


class ConfigError(ValueError):
    """A runtime configuration (update) that is refused; names the field."""


@dataclass(frozen=True)
class RuntimeConfig:
    """Inspection settings: deadline, thresholds override, batching, threads, image limits."""

    deadline_ms: float = 500.0
    reject_threshold: float | None = None
    manual_threshold: float | None = None
    max_batch: int = 8
    intra_op_threads: int = 1
    judge_threads: int = 1
    max_image_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    image_modes: tuple[str, ...] = DEFAULT_MODES
    min_image_side: int = DEFAULT_MIN_SIDE
    health_interval_s: float = 60.0
    heartbeat_interval_s: float = 1.0

    def __post_init__(self) -> None:
        _range("deadline_ms", self.deadline_ms, 1.0, 600_000.0)
        _range("max_batch", self.max_batch, 1, 256, integer=True)
        _range("intra_op_threads", self.intra_op_threads, 1, 64, integer=True)
        _range("judge_threads", self.judge_threads, 1, 64, integer=True)
        _range("max_image_bytes", self.max_image_bytes, 1024, 1 << 31, integer=True)
        _range("max_image_pixels", self.max_image_pixels, 64, 1 << 31, integer=True)
        _range("min_image_side", self.min_image_side, 1, 4096, integer=True)
        _range("health_interval_s", self.health_interval_s, 1.0, 86_400.0)
        _range("heartbeat_interval_s", self.heartbeat_interval_s, 0.05, 3600.0)
        for name in ("reject_threshold", "manual_threshold"):
            value = getattr(self, name)
            if value is not None:
                _range(name, value, -1e12, 1e12)
        if (self.reject_threshold is None) != (self.manual_threshold is None):
            raise ConfigError("reject_threshold/manual_threshold: set both or neither")
        if (
            self.reject_threshold is not None
            and self.manual_threshold is not None
            and self.manual_threshold > self.reject_threshold
        ):
            raise ConfigError(
                f"manual_threshold: {self.manual_threshold} > reject_threshold "
                f"{self.reject_threshold}"
            )
        allowed = {*DEFAULT_MODES, "P", "CMYK", "I", "F", "1", "LA", "YCbCr"}
        if (
            not isinstance(self.image_modes, tuple)
            or not self.image_modes
            or any(m not in allowed for m in self.image_modes)
        ):
            raise ConfigError(
                f"image_modes: {self.image_modes!r} must be a non-empty list of PIL modes"
            )

    @property
    def decode_limits(self) -> DecodeLimits:
        """The decoder's limits from these settings."""
        return DecodeLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            modes=self.image_modes,
            min_side=self.min_image_side,
        )

    @classmethod
    def from_dict(cls, doc: Any, base: RuntimeConfig | None = None) -> RuntimeConfig:
        """Merge ``doc`` onto ``base`` (defaults if None) and validate; raise ConfigError."""
        if not isinstance(doc, dict):
            raise ConfigError(f"configuration must be an object, got {type(doc).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(doc) - set(known))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
        changes: dict[str, Any] = {}
        for key, value in doc.items():
            if key == "image_modes":
                if not isinstance(value, list | tuple) or not all(
                    isinstance(m, str) for m in value
                ):
                    raise ConfigError(f"image_modes: must be a list of strings, got {value!r}")
                value = tuple(value)
            elif value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ConfigError(f"{key}: must be a number, got {value!r}")
            elif value is None and key not in ("reject_threshold", "manual_threshold"):
                raise ConfigError(f"{key}: must be a number, got null")
            if key in _INTEGERS and isinstance(value, float) and value.is_integer():
                value = int(value)
            changes[key] = value
        try:
            return replace(base or cls(), **changes)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        doc = asdict(self)
        doc["image_modes"] = list(self.image_modes)
        return doc


_INTEGERS = (
    "max_batch",
    "intra_op_threads",
    "judge_threads",
    "max_image_bytes",
    "max_image_pixels",
    "min_image_side",
)


def check_number(
    name: str, value: Any, low: float, high: float, *, integer: bool = False
) -> int | float:
    """Check a number in ``low..high``; an integral float counts as an integer (``8.0`` → 8).

    Deployments and recipe interpolation may turn an integer into a float, never into 8.5.
    """
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    _range(name, value, low, high, integer=integer)
    return value  # type: ignore[no-any-return]


def _range(name: str, value: Any, low: float, high: float, *, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{name}: must be an integer, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{name}: {value!r} is outside {low:g}..{high:g}")

"""Pre-provisioning hook: decide whether a core device may join the plant, and in which ring.

Runs in AWS Lambda (Python standard library only). Fleet provisioning by claim calls it with the
device's template parameters; it checks the serial format, the optional allow-list and the line,
then assigns the ring deterministically from a hash of the plant and serial, so a device always
lands in the same ring and ring sizes follow the plant file's percentages.

Environment (set by the construct from the plant file):
    PLANT          plant name
    SERIAL_PATTERN anchored regular expression a serial must match
    ALLOW_LIST     comma-separated serials (empty: no allow-list)
    RINGS          JSON list of [ring name, percent] in rollout order
and ``lines.json`` beside this file: the JSON list of the plant's line names (too many for the
environment's 4 KB).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

# 2**64 buckets: more than enough resolution for percentages with decimals.
_SCALE = 2**64
LINES_FILE = "lines.json"


@dataclass(frozen=True)
class HookSettings:
    """What the hook needs to know about the plant."""

    plant: str
    serial_pattern: str
    allow_list: frozenset[str]
    lines: frozenset[str]
    rings: tuple[tuple[str, float], ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str], lines: Iterable[str]) -> HookSettings:
        """Read the settings from the Lambda environment and the plant's line names."""
        rings = tuple((str(name), float(pct)) for name, pct in json.loads(env["RINGS"]))
        allow = frozenset(s for s in env.get("ALLOW_LIST", "").split(",") if s)
        return cls(env["PLANT"], env["SERIAL_PATTERN"], allow, frozenset(lines), rings)


def read_lines(path: Path) -> tuple[str, ...]:
    """The line names in a ``lines.json`` file."""
    names = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: must be a JSON list of line names")
    return tuple(names)


@cache
def _bundled_lines() -> tuple[str, ...]:
    # Read once per Lambda execution environment, at the first invocation.
    return read_lines(Path(__file__).with_name(LINES_FILE))


def ring_position(plant: str, serial: str) -> float:
    """Where a serial falls in [0, 100): the SHA-256 of ``<plant>/<serial>``, scaled."""
    digest = hashlib.sha256(f"{plant}/{serial}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / _SCALE


def assign_ring(plant: str, serial: str, rings: Sequence[tuple[str, float]]) -> str:
    """The ring a serial belongs to, by its position against the cumulative ring percentages."""
    if not rings:
        raise ValueError("no rings configured")
    position = ring_position(plant, serial)
    cumulative = 0.0
    for name, percent in rings:
        cumulative += percent
        if position < cumulative:
            return name
    return rings[-1][0]  # rounding: percentages that sum to 99.999... still cover [0, 100)


def decide(settings: HookSettings, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The hook's answer for one provisioning request's template parameters."""
    serial = str(parameters.get("SerialNumber") or "")
    line = str(parameters.get("LineName") or "")
    if not re.fullmatch(settings.serial_pattern, serial):
        return _deny(f"serial {serial!r} does not match {settings.serial_pattern}")
    if settings.allow_list and serial not in settings.allow_list:
        return _deny(f"serial {serial!r} is not on the plant's allow-list")
    if line not in settings.lines:
        return _deny(f"line {line!r} is not a line of plant {settings.plant!r}")
    ring = assign_ring(settings.plant, serial, settings.rings)
    LOG.info(json.dumps({"allow": True, "serial": serial, "line": line, "ring": ring}))
    return {"allowProvisioning": True, "parameterOverrides": {"RingName": ring}}


def _deny(reason: str) -> dict[str, Any]:
    LOG.warning(json.dumps({"allow": False, "reason": reason}))
    return {"allowProvisioning": False}


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point for the IoT fleet provisioning pre-provisioning hook."""
    settings = HookSettings.from_env(os.environ, _bundled_lines())
    parameters = event.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        return _deny("template parameters are not an object")
    return decide(settings, parameters)

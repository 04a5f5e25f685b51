"""Pre-provisioning hook: decide whether a core device may join the plant, and in which ring.

Runs in AWS Lambda (Python standard library only). Fleet provisioning by claim calls it with the
device's template parameters; it checks the serial format, the optional allow-list and the line,
then assigns the ring deterministically from a hash of the plant and serial, so a device always
lands in the same ring and ring sizes follow the plant file's percentages.

Settings: ``plant.json`` beside this file, written by the construct from the plant file (a file,
not the environment: Lambda environment variables are limited to 4 KB in all, and a plant's lines
and stations do not fit)::

    {"plant": name, "serial_pattern": anchored regex, "allow_list": [serial, ...],
     "lines": {line: {station: cameras, ...}, ...}, "rings": [[ring, percent], ...]}
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

SETTINGS_FILE = Path(__file__).with_name("plant.json")
# Serials become part of the thing name, the device's policy (as literal text) and MQTT topics:
# only characters that are literal in all three (thing names allow [a-zA-Z0-9:_-]; ":" would end
# an ARN segment, and * ? + # / $ mean something in policies or topics).
SAFE_SERIAL = re.compile(r"[A-Za-z0-9_-]{1,100}")

# 2**64 buckets: more than enough resolution for percentages with decimals.
_SCALE = 2**64


@dataclass(frozen=True)
class HookSettings:
    """What the hook needs to know about the plant."""

    plant: str
    serial_pattern: str
    allow_list: frozenset[str]
    lines: Mapping[str, Mapping[str, int]]
    rings: tuple[tuple[str, float], ...]
    max_serial_length: int = 100

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HookSettings:
        """Settings from the parsed ``plant.json``."""
        rings = tuple((str(name), float(pct)) for name, pct in data["rings"])
        lines = {
            str(line): {str(station): int(cameras) for station, cameras in stations.items()}
            for line, stations in data["lines"].items()
        }
        allow = frozenset(str(s) for s in data.get("allow_list", ()))
        longest = int(data.get("max_serial_length", 100))
        return cls(str(data["plant"]), str(data["serial_pattern"]), allow, lines, rings, longest)

    @classmethod
    def load(cls, path: Path | None = None) -> HookSettings:
        """Read ``plant.json`` (by default the one beside this file)."""
        text = (path or SETTINGS_FILE).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))


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


def refusal(settings: HookSettings, parameters: Mapping[str, Any]) -> str | None:
    """Why a provisioning request's template parameters are refused; None if they are not."""
    serial = str(parameters.get("SerialNumber") or "")
    line = str(parameters.get("LineName") or "")
    station = str(parameters.get("StationName") or "")
    if not SAFE_SERIAL.fullmatch(serial):
        return f"serial {serial!r} has characters other than A-Z a-z 0-9 _ -"
    if len(serial) > settings.max_serial_length:
        # its thing name or its own IoT policy would exceed AWS IoT's limits
        return f"serial {serial!r} is longer than {settings.max_serial_length} characters"
    if not re.fullmatch(settings.serial_pattern, serial):
        return f"serial {serial!r} does not match {settings.serial_pattern}"
    if settings.allow_list and serial not in settings.allow_list:
        return f"serial {serial!r} is not on the plant's allow-list"
    if line not in settings.lines:
        return f"line {line!r} is not a line of plant {settings.plant!r}"
    if station not in settings.lines[line]:
        return f"station {station!r} is not a station of line {line!r}"
    return None


def decide(settings: HookSettings, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The hook's answer for one provisioning request's template parameters."""
    reason = refusal(settings, parameters)
    if reason is not None:
        return _deny(reason)
    serial = str(parameters["SerialNumber"])
    line, station = str(parameters["LineName"]), str(parameters["StationName"])
    ring = assign_ring(settings.plant, serial, settings.rings)
    LOG.info(
        json.dumps(
            {"allow": True, "serial": serial, "line": line, "station": station, "ring": ring}
        )
    )
    overrides = {"RingName": ring, "CameraCount": str(settings.lines[line][station])}
    return {"allowProvisioning": True, "parameterOverrides": overrides}


def _deny(reason: str) -> dict[str, Any]:
    LOG.warning(json.dumps({"allow": False, "reason": reason}))
    return {"allowProvisioning": False}


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point for the IoT fleet provisioning pre-provisioning hook."""
    settings = HookSettings.load()
    parameters = event.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        return _deny("template parameters are not an object")
    return decide(settings, parameters)

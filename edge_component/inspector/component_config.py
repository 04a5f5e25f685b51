"""The Greengrass component configuration of com.lineguard.Inspector, checked as a whole.

A deployment proposes the component's whole configuration; the nucleus asks the running
component to validate it before storing it (``SubscribeToValidateConfigurationUpdates``) and
fails the deployment on a REJECTED report. Start-up settings reach the process as command-line
flags through recipe interpolation, so a value the flags could not parse is refused here, with
the same words, before it is stored. Numbers may arrive as floats (``8.0`` for an integer):
integral floats are accepted, ``8.5`` is not.
"""

from __future__ import annotations

import re
from typing import Any

from inspector.runtime_config import ConfigError, RuntimeConfig, check_number

# key → (low, high, integer) of the numeric start-up settings (recipe DefaultConfiguration)
NUMBERS: dict[str, tuple[float, float, bool]] = {
    "fps": (0.001, 1000.0, False),
    "maxFrames": (0, 1_000_000_000, True),
    "ackTimeoutS": (0.1, 86_400.0, False),
    "journalCapMb": (0.25, 1_000_000.0, False),
    "sampleBudgetMbPerHour": (0.0, 1_000_000.0, False),
    "sampleCapMb": (0.0, 1_000_000.0, False),
    "healthIntervalS": (1.0, 86_400.0, False),
    "heartbeatIntervalS": (0.05, 3600.0, False),
    "deadlineMs": (1.0, 600_000.0, False),
    "threads": (1, 64, True),
    "judgedCapMb": (0.0, 1_000_000.0, False),
}
STRINGS = ("imagesDir",)
# the ring the device's deployment targets: set by the ring's deployment (stacks/deployment_spec.py
# merges {"ring": <name>}), "" outside one; the plant file's ring name rule (stacks/config.py)
RING = "ring"
RING_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# a ring's deployment spans many lines and stations: these are the device's identity, read from
# its lineguard-identity shadow, never configuration (docs/identity.md)
IDENTITY = ("plant", "line", "station", "cameras")
CHOICES: dict[str, tuple[str, ...]] = {
    "source": ("dir", "camera"),
    "judgedFiles": ("move", "delete"),
    "shadowModel": ("auto", "off"),
}
OBJECTS = ("runtime", "accessControl")
# the review station (docs/review-station.md): off until operatorsFile is set. The address it
# binds and its host names differ per device, so they are in that per-device file, written at
# provisioning; a ring's deployment never carries them (DESIGN §8)
STATION = "reviewStation"
STATION_STRINGS = ("operatorsFile", "tlsCert", "tlsKey")
STATION_PER_DEVICE = ("bind", "hosts")
STATION_BOOLEANS = ("allowPlainHttp",)
STATION_NUMBERS: dict[str, tuple[float, float, bool]] = {
    "port": (1, 65535, True),
    "sessionHours": (0.01, 24.0, False),
}
# sample uploads to S3 (docs/sample-uploads.md): the bucket (the published recipe names the
# account's artifact bucket), how long a part waiting for a verdict is held back, on/off
UPLOADS = "sampleUploads"
UPLOAD_NUMBERS: dict[str, tuple[float, float, bool]] = {"holdHours": (0.0, 168.0, False)}
# S3 general purpose bucket names (S3 user guide, bucketnamingrules): 3-63 characters of
# lower-case letters, digits, dots and hyphens, beginning and ending with a letter or digit
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
KNOWN = frozenset((*NUMBERS, *STRINGS, *CHOICES, *OBJECTS, RING, STATION, UPLOADS))
# a path the recipe's run line can carry as one shell word, even quoted: absolute, and none of
# whitespace, quotes, backslash or the characters sh gives a meaning to inside or outside quotes
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+,:@%/=-]*$")


def check_station(doc: Any) -> None:
    """Check the ``reviewStation`` object; raise ConfigError naming the key."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{STATION}: must be an object")
    for key in STATION_PER_DEVICE:
        if doc.get(key) not in (None, ""):
            raise ConfigError(
                f"{STATION}.{key}: a per-device fact, never a ring's deployment; it goes in "
                f'the device\'s operators file ("{key}", python -m inspector station-password '
                f"--{'bind' if key == 'bind' else 'host'})"
            )
    known = (*STATION_STRINGS, *STATION_NUMBERS, *STATION_PER_DEVICE, *STATION_BOOLEANS)
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ConfigError(
            f"{STATION}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})"
        )
    for key in STATION_STRINGS:
        if key in doc and not isinstance(doc[key], str):
            raise ConfigError(f"{STATION}.{key}: must be a string, got {doc[key]!r}")
        if doc.get(key) and not SAFE_PATH.fullmatch(doc[key]):
            raise ConfigError(
                f"{STATION}.{key}: {doc[key]!r} is not an absolute path of letters, digits and "
                '._+,:@%=-/ (no spaces, quotes or shell characters), or ""'
            )
    for key, (low, high, integer) in STATION_NUMBERS.items():
        if key in doc:
            check_number(f"{STATION}.{key}", doc[key], low, high, integer=integer)
    for key in STATION_BOOLEANS:
        if key in doc and not isinstance(doc[key], bool):
            raise ConfigError(f"{STATION}.{key}: must be true or false, got {doc[key]!r}")
    if bool(doc.get("tlsCert")) != bool(doc.get("tlsKey")):
        raise ConfigError(f"{STATION}.tlsCert/tlsKey: set both or neither")


def check_bucket(value: Any, name: str = f"{UPLOADS}.bucket") -> str | None:
    """The bucket a setting names (None for ``""``: uploads off); raise ConfigError otherwise."""
    if value == "":
        return None
    if not isinstance(value, str) or not BUCKET_NAME.match(value) or ".." in value:
        raise ConfigError(
            f"{name}: {value!r} is not an S3 bucket name (3-63 lower-case letters, digits, "
            "'.' and '-', starting and ending with a letter or digit) or \"\""
        )
    return value


def check_uploads(doc: Any) -> None:
    """Check the ``sampleUploads`` object; raise ConfigError naming the key."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{UPLOADS}: must be an object")
    known = ("enabled", "bucket", *UPLOAD_NUMBERS)
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ConfigError(
            f"{UPLOADS}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})"
        )
    if "enabled" in doc and not isinstance(doc["enabled"], bool):
        raise ConfigError(f"{UPLOADS}.enabled: must be true or false, got {doc['enabled']!r}")
    if "bucket" in doc:
        check_bucket(doc["bucket"])
    for key, (low, high, integer) in UPLOAD_NUMBERS.items():
        if key in doc:
            check_number(f"{UPLOADS}.{key}", doc[key], low, high, integer=integer)


def check_ring(value: Any) -> str | None:
    """The ring name a setting gives (None for ``""``: no ring); raise ConfigError otherwise."""
    if value == "":
        return None
    if not isinstance(value, str) or not RING_NAME.match(value):
        raise ConfigError(
            f"{RING}: {value!r} is not a ring name (lower-case letters, digits and '-', "
            'starting with a letter, at most 31 characters) or ""'
        )
    return value


def runtime_section(doc: dict[str, Any], base: RuntimeConfig) -> RuntimeConfig:
    """The runtime settings a whole component configuration gives: ``base`` + its ``runtime``."""
    runtime = doc.get("runtime", {})
    if not isinstance(runtime, dict):
        raise ConfigError("runtime: must be an object")
    try:
        return RuntimeConfig.from_dict(runtime, base=base)
    except ConfigError as exc:
        raise ConfigError(f"runtime.{exc}") from None


def validate_component_config(doc: Any, base: RuntimeConfig) -> None:
    """Check a proposed component configuration; raise ConfigError naming the key."""
    if not isinstance(doc, dict):
        raise ConfigError(f"configuration: must be an object, got {type(doc).__name__}")
    identity = sorted(set(doc) & set(IDENTITY))
    if identity:
        raise ConfigError(
            f"{identity[0]}: not configuration — plant, line, station and cameras are the "
            "device's identity, from its lineguard-identity shadow (docs/identity.md)"
        )
    unknown = sorted(set(doc) - KNOWN)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting (known: {', '.join(sorted(KNOWN))})")
    for key, (low, high, integer) in NUMBERS.items():
        if key in doc:
            check_number(key, doc[key], low, high, integer=integer)
    for key in STRINGS:
        if key in doc and (not isinstance(doc[key], str) or not doc[key]):
            raise ConfigError(f"{key}: must be a non-empty string, got {doc[key]!r}")
    if RING in doc:
        check_ring(doc[RING])
    for key, allowed in CHOICES.items():
        if key in doc and doc[key] not in allowed:
            raise ConfigError(f"{key}: {doc[key]!r} is not one of {', '.join(allowed)}")
    if "accessControl" in doc and not isinstance(doc["accessControl"], dict):
        raise ConfigError("accessControl: must be an object")
    if STATION in doc:
        check_station(doc[STATION])
    if UPLOADS in doc:
        check_uploads(doc[UPLOADS])
    runtime_section(doc, base)

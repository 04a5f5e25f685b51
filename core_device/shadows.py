"""ShadowManager's local shadow documents, which the kernel's cloud sync writes into."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Mapping
from typing import Any


class ShadowNotFoundError(KeyError):
    """No such shadow (ShadowManager answers ResourceNotFoundError "No shadow found")."""


def _stamp(value: Any, now: int) -> Any:
    # AWS IoT shadow metadata mirrors the state with a timestamp on every leaf
    if isinstance(value, Mapping):
        return {k: _stamp(v, now) for k, v in value.items()}
    return {"timestamp": now}


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    # shadow update semantics: maps merge, null deletes a key, anything else replaces
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)


def _delta(desired: Any, reported: Any) -> Any:
    if isinstance(desired, Mapping) and isinstance(reported, Mapping):
        out = {}
        for key, value in desired.items():
            if key not in reported:
                out[key] = copy.deepcopy(value)
            else:
                sub = _delta(value, reported[key])
                if sub is not None:
                    out[key] = sub
        return out or None
    return None if desired == reported else copy.deepcopy(desired)


class ShadowStore:
    """Local shadow documents by (thing, shadow name); the classic shadow has the name ""."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[tuple[str, str], dict[str, Any]] = {}

    def update(self, thing: str, shadow: str, state: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``{"desired": ..., "reported": ...}`` into a shadow; returns the accepted document."""
        if not isinstance(state, Mapping) or not set(state) <= {"desired", "reported"}:
            raise ValueError(
                f"shadow {thing}/{shadow!r}: state must hold only desired and/or reported"
            )
        now = int(time.time())
        with self._lock:
            doc = self._docs.setdefault(
                (thing, shadow), {"state": {}, "metadata": {}, "version": 0}
            )
            for part, patch in state.items():
                if patch is None:
                    doc["state"].pop(part, None)
                    doc["metadata"].pop(part, None)
                    continue
                if not isinstance(patch, Mapping):
                    raise ValueError(f"shadow {thing}/{shadow!r}: state.{part} must be an object")
                _merge(doc["state"].setdefault(part, {}), patch)
                _merge(doc["metadata"].setdefault(part, {}), _stamp(patch, now))
            doc["version"] += 1
            return {
                "state": copy.deepcopy(dict(state)),
                "metadata": _stamp(state, now),
                "version": doc["version"],
                "timestamp": now,
            }

    def get(self, thing: str, shadow: str) -> dict[str, Any]:
        """The shadow document as GetThingShadow returns it (state with delta, metadata, version, timestamp)."""
        with self._lock:
            doc = self._docs.get((thing, shadow))
            if doc is None:
                raise ShadowNotFoundError(f"No shadow found: {thing}/{shadow!r}")
            state = copy.deepcopy(doc["state"])
            delta = _delta(state.get("desired", {}), state.get("reported", {}))
            if delta is not None and "desired" in state:
                state["delta"] = delta
            return {
                "state": state,
                "metadata": copy.deepcopy(doc["metadata"]),
                "version": doc["version"],
                "timestamp": int(time.time()),
            }

    def get_json(self, thing: str, shadow: str) -> bytes:
        """The document as the JSON bytes of a GetThingShadowResponse payload."""
        return json.dumps(self.get(thing, shadow)).encode()

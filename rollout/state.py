"""The controller's persisted state (``<state-dir>/<plant>.json``), written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rollout.errors import StateError

STATE_FORMAT = "lineguard.rollout-state/1"


class StateStore:
    """Reads and writes one plant's rollout state document in a directory."""

    def __init__(self, directory: Path | str, plant: str) -> None:
        self.path = Path(directory) / f"{plant}.json"

    def load(self) -> dict[str, Any] | None:
        """The state document, or None when there is none."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise StateError(f"{self.path}: unreadable rollout state ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise StateError(f"{self.path}: not a rollout state file ({STATE_FORMAT})")
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        """Write the state atomically (temp file + rename), so a kill never leaves half a file."""
        doc = {**doc, "format": STATE_FORMAT}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

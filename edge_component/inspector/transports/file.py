"""The ``file`` transport: JSONL files instead of a broker (local demo, tests).

``upstream.jsonl`` and ``local.jsonl`` get one line per publish:
``{"topic": ..., "payload": <the JSON payload>}``. An upstream publish is flushed and fsynced
before it returns, which is this transport's "acknowledged". A line torn by a crash is cut off
when the file is reopened, so a reader never sees half a message (the uplink resends it).
Runtime configuration comes from ``config.json`` if present, re-read when it changes.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import IO, Any

from inspector.transports.base import ConfigCallback, Transport, TransportError, call_safely

UPSTREAM_FILE = "upstream.jsonl"
LOCAL_FILE = "local.jsonl"
CONFIG_FILE = "config.json"


def _open_append(path: Path) -> IO[bytes]:
    """Open for appending after cutting off a trailing partial line."""
    if path.exists():
        with path.open("r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(max(0, size - 1))
                if handle.read(1) != b"\n":
                    handle.seek(0)
                    data = handle.read()
                    handle.truncate(data.rfind(b"\n") + 1)
    return path.open("ab")


def _line(topic: str, payload: bytes) -> bytes:
    try:
        body: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = payload.decode("utf-8", "replace")
    return json.dumps({"topic": topic, "payload": body}, separators=(",", ":")).encode() + b"\n"


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Every complete line of a transport file (a torn last line is skipped)."""
    out = []
    with Path(path).open("rb") as handle:
        for raw in handle:
            if raw.endswith(b"\n"):
                out.append(json.loads(raw))
    return out


class FileTransport(Transport):
    """Writes publishes to JSONL files in ``directory``; reads config from ``config.json``."""

    name = "file"

    def __init__(self, directory: Path | str, *, config_poll_s: float = 1.0) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._upstream = _open_append(self.directory / UPSTREAM_FILE)
            self._local = _open_append(self.directory / LOCAL_FILE)
        except OSError as exc:
            raise TransportError(f"file transport: cannot open {self.directory}: {exc}") from None
        self._lock = threading.Lock()
        self._poll_s = config_poll_s
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def publish_upstream(self, topic: str, payload: bytes) -> None:
        """Append, flush and fsync one line to ``upstream.jsonl``."""
        with self._lock:
            try:
                self._upstream.write(_line(topic, payload))
                self._upstream.flush()
                os.fsync(self._upstream.fileno())
            except (OSError, ValueError) as exc:
                raise TransportError(f"file transport: {topic}: {exc}") from None

    def publish_local(self, topic: str, payload: bytes) -> None:
        """Append one line to ``local.jsonl`` (flushed, not fsynced)."""
        with self._lock:
            try:
                self._local.write(_line(topic, payload))
                self._local.flush()
            except (OSError, ValueError) as exc:
                raise TransportError(f"file transport: {topic}: {exc}") from None

    def on_config(self, callback: ConfigCallback) -> None:
        """Deliver ``config.json`` now (if present) and again whenever it changes."""
        path = self.directory / CONFIG_FILE
        seen: list[float] = [-1.0]

        def check() -> None:
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                return
            if mtime == seen[0]:
                return
            seen[0] = mtime
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                doc = {"__error__": f"{path}: {exc}"}
            call_safely(callback, doc, what="file transport config")

        check()

        def watch() -> None:
            while not self._stop.wait(self._poll_s):
                check()

        self._watcher = threading.Thread(target=watch, name="file-config", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop the config watcher and close the files."""
        self._stop.set()
        with self._lock:
            self._upstream.close()
            self._local.close()

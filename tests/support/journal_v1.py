"""The journal as released before layout 2 (labels, review queue), frozen: the rollback test
opens a migrated journal with it, as an inspector rolled back to that release would.

Copied verbatim from edge_component/inspector/journal.py at the release before the review
station; do not edit.
"""

# ruff: noqa

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MIN_CAP_BYTES = 256 * 1024
_SHM_BYTES = 32 * 1024


class JournalError(Exception):
    """The journal cannot be opened or written (names the file and the reason)."""


@dataclass(frozen=True)
class Pending:
    """One unsent result: its ``seq`` and the JSON payload exactly as journaled."""

    seq: int
    payload: bytes


@dataclass(frozen=True)
class Sample:
    """One stored retraining sample (image bytes and what made it interesting)."""

    id: int
    ts: float
    part_id: str
    reason: str
    score: float | None
    data: bytes


@dataclass(frozen=True)
class JournalStats:
    """Counters health reports: backlog, disk use and what the cap policy evicted."""

    pending: int
    next_seq: int
    last_sent_seq: int
    samples: int
    sample_bytes: int
    disk_bytes: int
    cap_bytes: int
    dropped_results: int
    evicted_samples: int


def _encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def base36(number: int) -> str:
    """A non-negative integer in base 36 (digits, then lower-case letters)."""
    if number < 0:
        raise ValueError(f"base36 needs a non-negative integer, got {number}")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def new_epoch(now_ms: int) -> str:
    """Base 36 of the time in ms the journal was created (or first opened by a version with
    epochs), then two random base-36 characters: a device without a real-time clock that boots
    at the same clock reading and wipes its journal still gets another epoch (1 in 1,296 to
    repeat), and two wipes within one millisecond do too."""
    return base36(now_ms) + base36(36 * 36 + secrets.randbelow(36 * 36))[1:]


class Journal:
    """Durable, bounded store of results (and retraining samples) for one device.

    Args:
        path: the SQLite file (its directory is created).
        device: the device (thing name) whose ``seq`` this journal assigns; reopening a journal
            with another device is refused.
        cap_bytes: upper bound for the file + WAL + shared memory on disk.
        clock: seconds since the epoch; a new journal starts ``seq`` at the clock's milliseconds
            so a wiped journal never reuses a ``seq`` the cloud has already seen.
        synchronous: SQLite ``synchronous`` level; ``FULL`` survives power loss, ``NORMAL``
            survives a killed process.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        device: str,
        cap_bytes: int,
        clock: Callable[[], float] = time.time,
        synchronous: str = "FULL",
    ) -> None:
        if cap_bytes < MIN_CAP_BYTES:
            raise JournalError(f"{path}: cap_bytes {cap_bytes} is below {MIN_CAP_BYTES}")
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise JournalError(f"{path}: synchronous must be FULL, NORMAL or EXTRA")
        self.path = Path(path)
        self.device = device
        self.cap_bytes = cap_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._setup(synchronous)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot open journal ({exc})") from None
        self._page_size = int(self._scalar("PRAGMA page_size"))
        # the WAL is truncated back to this size after each checkpoint
        self._wal_limit = max(64 * 1024, min(4 * 1024 * 1024, cap_bytes // 16))
        self._db.execute(f"PRAGMA journal_size_limit={self._wal_limit}")
        self._db.execute(f"PRAGMA wal_autocheckpoint={max(16, self._wal_limit // self._page_size)}")
        # room kept for the WAL, the shared memory and one write in flight
        self._budget = cap_bytes - 2 * self._wal_limit - _SHM_BYTES

    # -- setup -----------------------------------------------------------------------------

    def _scalar(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _setup(self, synchronous: str) -> None:
        db = self._db
        fresh = self._scalar("SELECT count(*) FROM sqlite_master") == 0
        if fresh:
            # must be chosen before the first table exists
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = self._scalar("PRAGMA journal_mode=WAL")
        if str(mode).lower() != "wal":
            raise JournalError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS results (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " ts REAL, part_id TEXT, reason TEXT, score REAL, size INTEGER, data BLOB)"
            )
            # local reject messages the bus refused, kept until they are signalled
            db.execute(
                "CREATE TABLE IF NOT EXISTS signals (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " payload BLOB NOT NULL)"
            )
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                first = max(1, int(self._clock() * 1000))
                rows = {
                    "schema": str(SCHEMA_VERSION),
                    "device": self.device,
                    "next_seq": str(first),
                    "last_sent_seq": str(first - 1),
                    "dropped_results": "0",
                    "evicted_samples": "0",
                    "epoch": new_epoch(first),
                }
                db.executemany("INSERT INTO meta VALUES (?, ?)", rows.items())
            elif meta.get("device") != self.device:
                raise JournalError(
                    f"{self.path}: journal belongs to device {meta.get('device')!r},"
                    f" not {self.device!r}"
                )
            elif meta.get("schema") != str(SCHEMA_VERSION):
                raise JournalError(f"{self.path}: unsupported schema {meta.get('schema')!r}")
            elif "epoch" not in meta:  # a journal from before epochs: name this life of it now
                self._set_meta("epoch", new_epoch(max(1, int(self._clock() * 1000))))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _meta_int(self, key: str) -> int:
        return int(self._scalar("SELECT value FROM meta WHERE key = ?", (key,)))

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    # -- size and the cap policy -----------------------------------------------------------

    def _used_bytes(self) -> int:
        pages = int(self._scalar("PRAGMA page_count"))
        free = int(self._scalar("PRAGMA freelist_count"))
        return (pages - free) * self._page_size

    def disk_bytes(self) -> int:
        """Bytes on disk now: the database file, its WAL and its shared memory."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def _maybe_vacuum(self) -> None:
        """Give free pages back to the file system once there are many of them.

        Not needed for the cap: SQLite reuses free pages before it grows the file, so the file
        never outgrows the most it ever held, which eviction keeps under the budget.
        """
        free = int(self._scalar("PRAGMA freelist_count")) * self._page_size
        pages = int(self._scalar("PRAGMA page_count")) * self._page_size
        if free > max(self._wal_limit, pages // 4):
            self._db.execute("PRAGMA incremental_vacuum")

    def _checkpoint_if_needed(self) -> None:
        """Fold a WAL grown past its limit back into the file (also shrinks the file)."""
        try:
            wal = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return
        if wal > self._wal_limit:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _make_room(self, incoming: int, *, drop_results: bool = True) -> bool:
        """Inside a write transaction: evict samples, then (if allowed) the oldest unsent
        results, until ``incoming`` bytes fit; return whether they fit."""
        target = self._budget - incoming
        if self._used_bytes() <= target:
            return True
        low_water = int(target * 0.9)
        evicted = 0
        while self._used_bytes() > low_water:
            oldest = self._scalar("SELECT min(id) FROM samples")
            if oldest is None:
                break
            self._db.execute("DELETE FROM samples WHERE id = ?", (oldest,))
            evicted += 1
        if evicted:
            self._set_meta("evicted_samples", self._meta_int("evicted_samples") + evicted)
        dropped = 0
        while drop_results and self._used_bytes() > low_water:
            chunk = max(1, (self._used_bytes() - low_water) // 128)
            cur = self._db.execute(
                "DELETE FROM results WHERE seq IN (SELECT seq FROM results ORDER BY seq LIMIT ?)",
                (min(chunk, 10_000),),
            )
            if cur.rowcount <= 0:
                break
            dropped += cur.rowcount
        if dropped:
            self._set_meta("dropped_results", self._meta_int("dropped_results") + dropped)
        # no vacuum here: the pages just freed are reused by the write that needed them
        return self._used_bytes() <= target

    # -- results ---------------------------------------------------------------------------

    def append(self, result: Mapping[str, Any], *, cursor: tuple[str, str] | None = None) -> int:
        """Store one result durably with the next ``seq`` and return that ``seq``.

        ``cursor`` (name, key) is saved in the same transaction: a source that resumes from
        :meth:`cursor` after a crash never judges an acknowledged frame twice.
        """
        return self.append_many([result], cursor=cursor)[0]

    def append_many(
        self,
        results: Iterable[Mapping[str, Any]],
        *,
        cursor: tuple[str, str] | None = None,
        cursors: Iterable[tuple[str, str]] = (),
    ) -> list[int]:
        """Store several results in one transaction (micro-batches); return their ``seq``s.

        ``cursor`` / ``cursors``: (name, key) pairs saved in the same transaction.
        """
        items = list(results)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._meta_int("next_seq")
                rows = []
                for item in items:
                    message = dict(item)
                    message["seq"] = seq
                    rows.append((seq, _encode(message)))
                    seq += 1
                self._make_room(sum(len(p) + 16 for _, p in rows))
                self._db.executemany("INSERT INTO results VALUES (?, ?)", rows)
                self._set_meta("next_seq", seq)
                for name, key in [*([cursor] if cursor else []), *cursors]:
                    self._set_meta(f"cursor:{name}", key)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._checkpoint_if_needed()
        return [s for s, _ in rows]

    @property
    def epoch(self) -> str:
        """This journal's life (:func:`new_epoch`); a wiped journal gets a new one.

        Sources put it into part ids they number themselves (a simulated camera's count starts
        again with a new journal), so a reset never reuses a part id the line bridge has seen.
        """
        with self._lock:
            return str(self._scalar("SELECT value FROM meta WHERE key = 'epoch'"))

    def next_seq(self) -> int:
        """The ``seq`` the next :meth:`append` will assign (exact while one thread appends)."""
        with self._lock:
            return self._meta_int("next_seq")

    def cursor(self, name: str) -> str | None:
        """The last key saved with :meth:`append` under ``name``, or None."""
        with self._lock:
            value = self._scalar("SELECT value FROM meta WHERE key = ?", (f"cursor:{name}",))
        return None if value is None else str(value)

    def pending(
        self, limit: int = 1000, max_bytes: int | None = None, *, after: int | None = None
    ) -> list[Pending]:
        """The oldest unacknowledged results in ``seq`` order, at most ``limit`` / ``max_bytes``.

        ``after`` skips every result up to that ``seq`` (already published, awaiting the
        cloud's acknowledgement).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, payload FROM results WHERE seq > ? ORDER BY seq LIMIT ?",
                (-1 if after is None else after, limit),
            ).fetchall()
        out: list[Pending] = []
        total = 0
        for seq, payload in rows:
            total += len(payload)
            if max_bytes is not None and out and total > max_bytes:
                break
            out.append(Pending(int(seq), bytes(payload)))
        return out

    def mark_sent(self, up_to_seq: int) -> int:
        """Forget every result with ``seq <= up_to_seq`` (acknowledged upstream); return count."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute("DELETE FROM results WHERE seq <= ?", (up_to_seq,))
                if up_to_seq > self._meta_int("last_sent_seq"):
                    self._set_meta("last_sent_seq", up_to_seq)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._maybe_vacuum()
            self._checkpoint_if_needed()
            return int(cur.rowcount)

    # -- local signals the bus refused (actuation) -----------------------------------------

    def hold_signal(self, payload: bytes) -> int:
        """Keep a local message durably until :meth:`release_signal`; return its id."""
        with self._lock:
            cur = self._db.execute("INSERT INTO signals (payload) VALUES (?)", (payload,))
            return int(cur.lastrowid or 0)

    def release_signal(self, signal_id: int) -> None:
        """Forget a held local message: it reached the bus."""
        with self._lock:
            self._db.execute("DELETE FROM signals WHERE id = ?", (signal_id,))

    def held_signals(self) -> list[tuple[int, bytes]]:
        """Every held local message as (id, payload), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, payload FROM signals ORDER BY id").fetchall()
        return [(int(i), bytes(p)) for i, p in rows]

    def _pending_count(self) -> int:
        # unsent results are always one contiguous seq range (only the oldest are ever removed),
        # so this is two index lookups instead of a scan of the whole backlog
        low, high = self._db.execute(
            "SELECT (SELECT min(seq) FROM results), (SELECT max(seq) FROM results)"
        ).fetchone()
        return 0 if low is None else int(high) - int(low) + 1

    def oldest_seq(self) -> int | None:
        """The lowest ``seq`` still waiting for an acknowledgement, or None when none waits."""
        with self._lock:
            low = self._scalar("SELECT min(seq) FROM results")
        return None if low is None else int(low)

    def backlog(self) -> int:
        """Number of results not yet acknowledged upstream."""
        with self._lock:
            return self._pending_count()

    # -- samples ---------------------------------------------------------------------------

    def add_sample(
        self, *, part_id: str, reason: str, data: bytes, score: float | None = None
    ) -> int:
        """Store a retraining sample, evicting older samples (never a result) to make room.

        Returns the sample's id, or 0 when it cannot fit without dropping results.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if not self._make_room(len(data) + 256, drop_results=False):
                    self._db.execute("COMMIT")  # keep the evictions: older samples go first
                    return 0
                cur = self._db.execute(
                    "INSERT INTO samples (ts, part_id, reason, score, size, data)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (self._clock(), part_id, reason, score, len(data), data),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._checkpoint_if_needed()
            return int(cur.lastrowid or 0)

    def samples(self, limit: int = 100) -> list[Sample]:
        """The oldest stored samples (for an uploader), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ts, part_id, reason, score, data FROM samples ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [Sample(int(r[0]), float(r[1]), r[2], r[3], r[4], bytes(r[5])) for r in rows]

    def trim_samples(self, max_bytes: int) -> int:
        """Evict the oldest samples until their bytes total at most ``max_bytes``; return count."""
        removed = 0
        with self._lock:
            total = int(self._scalar("SELECT coalesce(sum(size), 0) FROM samples"))
            while total > max_bytes:
                row = self._db.execute(
                    "SELECT id, size FROM samples ORDER BY id LIMIT 1"
                ).fetchone()
                if row is None:
                    break
                self._db.execute("DELETE FROM samples WHERE id = ?", (row[0],))
                total -= int(row[1])
                removed += 1
            if removed:
                self._maybe_vacuum()
                self._checkpoint_if_needed()
        return removed

    def remove_sample(self, sample_id: int) -> None:
        """Delete a sample once an uploader has stored it elsewhere."""
        with self._lock:
            self._db.execute("DELETE FROM samples WHERE id = ?", (sample_id,))

    # -- reporting -------------------------------------------------------------------------

    def stats(self) -> JournalStats:
        """Backlog, disk use and eviction counters."""
        with self._lock:
            pending = self._pending_count()
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM samples"
            ).fetchone()
            return JournalStats(
                pending=pending,
                next_seq=self._meta_int("next_seq"),
                last_sent_seq=self._meta_int("last_sent_seq"),
                samples=int(count),
                sample_bytes=int(size),
                disk_bytes=self.disk_bytes(),
                cap_bytes=self.cap_bytes,
                dropped_results=self._meta_int("dropped_results"),
                evicted_samples=self._meta_int("evicted_samples"),
            )

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

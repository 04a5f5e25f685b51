"""The result journal: SQLite in WAL mode, written before a frame is acknowledged.

Every result gets the next ``seq`` of its device inside the same transaction that stores it, so
a ``kill -9`` at any point either loses the frame before it was acknowledged or keeps it with
exactly one ``seq``. The uplink reads pending results in ``seq`` order and forgets them only
once they are acknowledged — by the cloud itself where the transport's acknowledgement means
less (Greengrass: "spooled", see :mod:`inspector.uplink`); a crash in between resends the same
``seq``, which the cloud drops as a duplicate.

Disk policy (DESIGN.md §3): the journal file, its WAL and shared memory stay under ``cap_bytes``.
The cap holds between writes; while one
write transaction is open its pages may sit in the WAL (headroom of ``2 × wal limit`` is kept
for that). SQLite reuses
freed pages before growing the file, so the file never exceeds the most it ever held; free
pages are returned to the file system in bulk. When a write would cross the cap, retraining **samples go first** (oldest first), then the
review queue's oldest parts; only when neither is left are the **oldest unsent results** (and
labels) dropped, counted in ``dropped_results`` and reported by health, so the newest results
always fit. Sent results are deleted at once.

Labels (a person's verdict on a part, from the review station) share the results' ``seq``
counter and travel upstream in the same batches (:mod:`inspector.uplink`), so the unsent
entries of both tables are always one contiguous ``seq`` range. Two threads write ``seq``s now
(the frame loop and the review station): :meth:`Journal.reserve` holds the counter across a
caller's read of :meth:`next_seq` and its append, and every writer of a ``seq`` takes it.

Versions: ``meta.schema`` is the format an inspector must understand to open the file
(:data:`SCHEMA_VERSION`, checked for equality by every released inspector); ``meta.layout``
(:data:`LAYOUT_VERSION`) counts additive changes that older inspectors open and write safely
(they neither see nor harm what they do not know). Opening a journal of an older layout migrates
it in one transaction. A change that an older inspector could not survive must raise
:data:`SCHEMA_VERSION` instead — a rollback to that inspector then refuses the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
# 2: labels (seq shared with results), the review queue, samples.seq (docs/review-station.md)
LAYOUT_VERSION = 2
MIN_CAP_BYTES = 256 * 1024
_SHM_BYTES = 32 * 1024
MAX_REVIEWS = 10_000
# verdicts waiting for the sample uploader at most (the oldest leave first): a device whose
# uploads are off or offline for long keeps the newest ones
MAX_LABEL_UPLOADS = 10_000
# every unsent entry, results and labels, in seq order (SQLite merges the two index scans)
_UNSENT = (
    "SELECT seq, payload, 'result' FROM results WHERE seq > ?"
    " UNION ALL SELECT seq, payload, 'label' FROM labels WHERE seq > ?"
)
_REVIEW_COLUMNS = (
    "part_id, result_seq, ts, camera, decision, score, threshold, model, reason,"
    " label, defect_type, operator, labelled_at, revision"
)


class JournalError(Exception):
    """The journal cannot be opened or written (names the file and the reason)."""


@dataclass(frozen=True)
class Pending:
    """One unsent entry: its ``seq``, the JSON payload exactly as journaled, and its kind
    (``result`` or ``label``)."""

    seq: int
    payload: bytes
    kind: str = "result"


@dataclass(frozen=True)
class Review:
    """A part in the review queue: the result a person is asked to confirm, and their verdict.

    ``revision`` counts the verdicts given (0: none yet); ``sample_id`` is the stored image of
    the part, when the sampler kept one; ``has_map``: its anomaly map is stored with it.
    """

    part_id: str
    result_seq: int
    ts: str
    camera: str
    decision: str
    score: float | None
    threshold: float | None
    model: str | None
    reason: str | None
    label: str | None
    defect_type: str | None
    operator: str | None
    labelled_at: str | None
    revision: int
    sample_id: int | None = None
    has_map: bool = False


@dataclass(frozen=True)
class LabelOutcome:
    """What :meth:`Journal.record_label` did.

    ``status``: ``recorded`` (journaled with ``seq``), ``unchanged`` (the part already carries
    this verdict: nothing written), ``conflict`` (the part was judged again or given another
    verdict since the caller looked), ``unknown`` (no such part in the queue). ``previous``:
    the label a ``recorded`` verdict replaced (None: the part's first verdict).
    """

    status: str
    review: Review | None = None
    seq: int | None = None
    previous: str | None = None


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
class LabelUpload:
    """A verdict waiting for the sample uploader: its ``seq``, the part, the ``ts`` of the
    result it judges (names the object's day) and the label message as journaled."""

    seq: int
    part_id: str
    result_ts: str
    message: dict[str, Any]


@dataclass(frozen=True)
class UploadCandidate:
    """A stored sample as the uploader sees it: what made it interesting, the result message it
    belongs to (None for a sample kept before samples named it) and the review of that result,
    when the part is in the review queue (``review_decision`` None: no review entry)."""

    id: int
    ts: float
    part_id: str
    reason: str
    score: float | None
    seq: int | None
    size: int
    result: dict[str, Any] | None
    review_decision: str | None
    label: str | None
    defect_type: str | None
    operator: str | None
    labelled_at: str | None
    review_ts: str | None
    review_model: str | None


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


# the newest stored image of the result a review entry is about
_SAMPLE_OF = "(SELECT max(id) FROM samples WHERE samples.seq = reviews.result_seq)"
_MAP_OF = f"(SELECT anomaly_map IS NOT NULL FROM samples WHERE id = {_SAMPLE_OF})"


def _review_row(message: Mapping[str, Any], seq: int) -> tuple[Any, ...]:
    return (
        str(message.get("part_id", "")),
        seq,
        str(message.get("ts", "")),
        str(message.get("camera", "")),
        str(message.get("decision")),
        message.get("score"),
        message.get("threshold"),
        message.get("model"),
        message.get("reason"),
    )


def _review(row: Sequence[Any]) -> Review:
    return Review(
        part_id=row[0],
        result_seq=int(row[1]),
        ts=row[2],
        camera=row[3],
        decision=row[4],
        score=row[5],
        threshold=row[6],
        model=row[7],
        reason=row[8],
        label=row[9],
        defect_type=row[10],
        operator=row[11],
        labelled_at=row[12],
        revision=int(row[13]),
        sample_id=None if row[14] is None else int(row[14]),
        has_map=bool(row[15]) if len(row) > 15 else False,
    )


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
        max_reviews: parts kept in the review queue at most (the oldest leave first).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        device: str,
        cap_bytes: int,
        clock: Callable[[], float] = time.time,
        synchronous: str = "FULL",
        max_reviews: int = MAX_REVIEWS,
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
        # held across "read next_seq, then append" by whoever assigns seqs (reserve())
        self._seq_lock = threading.RLock()
        self.max_reviews = max(1, max_reviews)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._setup(synchronous)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot open journal ({exc})") from None
        # the counter as committed, read under _seq_lock alone: the frame loop learns the seq
        # of its reject signal without waiting for a checkpoint or any other holder of _lock
        self._next = self._meta_int("next_seq")
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
            if not meta or meta.get("schema") == str(SCHEMA_VERSION):
                self._migrate(int(meta.get("layout", "1")) if meta else 1)
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
                    "layout": str(LAYOUT_VERSION),
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

    def _migrate(self, layout: int) -> None:
        """Inside the setup transaction: bring a journal of ``layout`` up to LAYOUT_VERSION.

        Every step is additive, so an inspector that knows only layout 1 still opens, writes
        and drains the file after a rollback (it never reads labels or the review queue).
        """
        db = self._db
        if layout < 2:
            columns = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
            if "seq" not in columns:  # the result a sample belongs to (null: before layout 2)
                db.execute("ALTER TABLE samples ADD COLUMN seq INTEGER")
            db.execute("CREATE INDEX IF NOT EXISTS samples_seq ON samples (seq)")
            # a person's verdicts, with the results' seq: sent upstream in the same batches
            db.execute(
                "CREATE TABLE IF NOT EXISTS labels (seq INTEGER PRIMARY KEY,"
                " part_id TEXT NOT NULL, payload BLOB NOT NULL)"
            )
            # parts waiting for (or given) a person's verdict, one row per part id
            db.execute(
                "CREATE TABLE IF NOT EXISTS reviews (part_id TEXT PRIMARY KEY,"
                " result_seq INTEGER NOT NULL, ts TEXT NOT NULL, camera TEXT NOT NULL,"
                " decision TEXT NOT NULL, score REAL, threshold REAL, model TEXT, reason TEXT,"
                " label TEXT, defect_type TEXT, operator TEXT, labelled_at TEXT,"
                " revision INTEGER NOT NULL DEFAULT 0)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS reviews_seq ON reviews (result_seq)")
        columns = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
        if "result" not in columns:  # the result message a sample belongs to (the uploader's)
            db.execute("ALTER TABLE samples ADD COLUMN result BLOB")
        # labels held back while the cloud has not shown it stores labels (docs/results-ack.md):
        # out of the upstream seq range, in their order, until they get a new seq
        # the anomaly map kept with a sample (inspector.anomaly_map; null: none). Additive like
        # held_labels: an older inspector's INSERTs name their columns, and its evictions delete
        # the row, map and all
        if "anomaly_map" not in {row[1] for row in db.execute("PRAGMA table_info(samples)")}:
            db.execute("ALTER TABLE samples ADD COLUMN anomaly_map BLOB")
        db.execute(
            "CREATE TABLE IF NOT EXISTS held_labels (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " part_id TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        # every verdict, for the sample uploader (its own copy: the upstream acknowledgement
        # forgets labels; a label reaches S3 on its own time). Additive: an older inspector
        # neither writes nor reads it
        db.execute(
            "CREATE TABLE IF NOT EXISTS label_uploads (seq INTEGER PRIMARY KEY,"
            " part_id TEXT NOT NULL, result_ts TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        if layout < LAYOUT_VERSION and self._scalar("SELECT count(*) FROM meta"):
            self._set_meta("layout", LAYOUT_VERSION)

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
        while drop_results and self._used_bytes() > low_water:  # then the review queue's oldest
            cur = self._db.execute(
                "DELETE FROM reviews WHERE part_id IN"
                " (SELECT part_id FROM reviews ORDER BY result_seq LIMIT 64)"
            )
            if cur.rowcount <= 0:
                break
        while drop_results and self._used_bytes() > low_water:  # the verdicts S3 has not had
            cur = self._db.execute(
                "DELETE FROM label_uploads WHERE seq IN"
                " (SELECT seq FROM label_uploads ORDER BY seq LIMIT 64)"
            )
            if cur.rowcount <= 0:
                break
        dropped = 0
        while drop_results and self._used_bytes() > low_water:
            chunk = max(1, (self._used_bytes() - low_water) // 128)
            # the oldest unsent entries, results and labels alike: what stays is contiguous
            last = self._scalar(
                f"SELECT max(seq) FROM (SELECT seq FROM ({_UNSENT}) ORDER BY seq LIMIT ?)",
                (-1, -1, min(chunk, 10_000)),
            )
            if last is None:
                break
            for table in ("results", "labels"):
                cur = self._db.execute(f"DELETE FROM {table} WHERE seq <= ?", (last,))
                dropped += max(0, cur.rowcount)
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
        review: Iterable[str] = (),
    ) -> list[int]:
        """Store several results in one transaction (micro-batches); return their ``seq``s.

        ``cursor`` / ``cursors``: (name, key) pairs saved in the same transaction.
        ``review``: decisions whose results also enter the review queue in that transaction
        (a part id judged again replaces its entry: the new judgement awaits a verdict).
        """
        items = list(results)
        queue = frozenset(review)
        with self._seq_lock, self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._meta_int("next_seq")
                rows = []
                for item in items:
                    message = dict(item)
                    message["seq"] = seq
                    rows.append((seq, _encode(message)))
                    seq += 1
                reviews = [
                    _review_row(message, seq)
                    for (seq, _), message in zip(rows, items, strict=True)
                    if message.get("decision") in queue
                ]
                self._make_room(sum(len(p) + 16 for _, p in rows) + 256 * len(reviews))
                self._db.executemany("INSERT INTO results VALUES (?, ?)", rows)
                if reviews:
                    self._db.executemany(
                        f"INSERT OR REPLACE INTO reviews ({_REVIEW_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, 0)",
                        reviews,
                    )
                    self._trim_reviews()
                self._set_meta("next_seq", seq)
                for name, key in [*([cursor] if cursor else []), *cursors]:
                    self._set_meta(f"cursor:{name}", key)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next = seq
            self._checkpoint_if_needed()
        return [s for s, _ in rows]

    def reserve(self) -> contextlib.AbstractContextManager[Any]:
        """Hold the ``seq`` counter: while held, no other thread appends a result or a label.

        The frame loop holds it from :meth:`next_seq` to its :meth:`append_many` (its reject
        messages carry the ``seq`` before the commit); the lock is re-entrant.
        """
        return self._seq_lock

    @property
    def epoch(self) -> str:
        """This journal's life (:func:`new_epoch`); a wiped journal gets a new one.

        Sources put it into part ids they number themselves (a simulated camera's count starts
        again with a new journal), so a reset never reuses a part id the line bridge has seen.
        """
        with self._lock:
            return str(self._scalar("SELECT value FROM meta WHERE key = 'epoch'"))

    def next_seq(self) -> int:
        """The ``seq`` the next :meth:`append` will assign (exact while :meth:`reserve` is held).

        Takes only the counter's lock: while the caller holds :meth:`reserve` it returns at once.
        """
        with self._seq_lock:
            return self._next

    def cursor(self, name: str) -> str | None:
        """The last key saved with :meth:`append` under ``name``, or None."""
        with self._lock:
            value = self._scalar("SELECT value FROM meta WHERE key = ?", (f"cursor:{name}",))
        return None if value is None else str(value)

    def pending(
        self, limit: int = 1000, max_bytes: int | None = None, *, after: int | None = None
    ) -> list[Pending]:
        """The oldest unacknowledged results and labels in ``seq`` order, at most ``limit`` /
        ``max_bytes``.

        ``after`` skips every entry up to that ``seq`` (already published, awaiting the
        cloud's acknowledgement).
        """
        start = -1 if after is None else after
        with self._lock:
            rows = self._db.execute(
                f"{_UNSENT} ORDER BY seq LIMIT ?", (start, start, limit)
            ).fetchall()
        out: list[Pending] = []
        total = 0
        for seq, payload, kind in rows:
            total += len(payload)
            if max_bytes is not None and out and total > max_bytes:
                break
            out.append(Pending(int(seq), bytes(payload), str(kind)))
        return out

    def hold_labels(self, after: int | None = None) -> int:
        """Take the unsent labels with ``seq > after`` out of the upstream range and keep them
        aside, in order, until :meth:`release_held_labels` (the cloud has not yet shown it
        stores labels: an acknowledgement would otherwise forget them); return how many."""
        start = -1 if after is None else after
        with self._lock:
            if self._scalar("SELECT count(*) FROM labels WHERE seq > ?", (start,)) == 0:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO held_labels (part_id, payload)"
                    " SELECT part_id, payload FROM labels WHERE seq > ? ORDER BY seq",
                    (start,),
                )
                cur = self._db.execute("DELETE FROM labels WHERE seq > ?", (start,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return max(0, cur.rowcount)

    def release_held_labels(self) -> int:
        """Put the held labels back upstream, in their order, each with a new ``seq`` (never
        sent under the old one); return how many."""
        with self._seq_lock, self._lock:
            rows = self._db.execute(
                "SELECT id, part_id, payload FROM held_labels ORDER BY id"
            ).fetchall()
            if not rows:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._meta_int("next_seq")
                for _, part_id, payload in rows:
                    message = {**json.loads(bytes(payload)), "seq": seq}
                    self._db.execute(
                        "INSERT INTO labels VALUES (?, ?, ?)", (seq, part_id, _encode(message))
                    )
                    seq += 1
                self._db.execute("DELETE FROM held_labels WHERE id <= ?", (rows[-1][0],))
                self._set_meta("next_seq", seq)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next = seq
        return len(rows)

    def held_labels(self) -> int:
        """How many labels are held back from upstream."""
        with self._lock:
            return int(self._scalar("SELECT count(*) FROM held_labels"))

    def mark_sent(self, up_to_seq: int) -> int:
        """Forget every result and label with ``seq <= up_to_seq`` (acknowledged upstream);
        return how many."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute("DELETE FROM results WHERE seq <= ?", (up_to_seq,))
                removed = max(0, cur.rowcount)
                cur = self._db.execute("DELETE FROM labels WHERE seq <= ?", (up_to_seq,))
                removed += max(0, cur.rowcount)
                if up_to_seq > self._meta_int("last_sent_seq"):
                    self._set_meta("last_sent_seq", up_to_seq)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._maybe_vacuum()
            self._checkpoint_if_needed()
            return removed

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
        # unsent results and labels are always one contiguous seq range (every seq comes from
        # the one counter, only the oldest are ever removed), so this is four index lookups
        # instead of a scan of the whole backlog
        r_low, r_high, l_low, l_high = self._db.execute(
            "SELECT (SELECT min(seq) FROM results), (SELECT max(seq) FROM results),"
            " (SELECT min(seq) FROM labels), (SELECT max(seq) FROM labels)"
        ).fetchone()
        lows = [int(v) for v in (r_low, l_low) if v is not None]
        highs = [int(v) for v in (r_high, l_high) if v is not None]
        return max(highs) - min(lows) + 1 if lows else 0

    def oldest_seq(self, after: int | None = None) -> int | None:
        """The lowest ``seq`` (above ``after``) still waiting for an acknowledgement, or None
        when none waits."""
        start = -1 if after is None else after
        with self._lock:
            low = self._scalar(
                "SELECT min(s) FROM (SELECT min(seq) AS s FROM results WHERE seq > ?"
                " UNION ALL SELECT min(seq) FROM labels WHERE seq > ?)",
                (start, start),
            )
        return None if low is None else int(low)

    def backlog(self) -> int:
        """Number of results and labels not yet acknowledged upstream (held labels included;
        a held label's old place counts until the results around it are acknowledged)."""
        with self._lock:
            return self._pending_count() + int(self._scalar("SELECT count(*) FROM held_labels"))

    # -- samples ---------------------------------------------------------------------------

    def add_sample(
        self,
        *,
        part_id: str,
        reason: str,
        data: bytes,
        score: float | None = None,
        seq: int | None = None,
        result: Mapping[str, Any] | None = None,
        anomaly_map: bytes | None = None,
    ) -> int:
        """Store a retraining sample, evicting older samples (never a result) to make room.

        ``seq``: the result the image belongs to (the review station shows it with that part);
        ``result``: that result message, kept with the image for the uploader (its ``ts`` and
        ``model`` name the object it becomes); ``anomaly_map``: the model's map of it
        (:func:`inspector.anomaly_map.encode_map`).
        Returns the sample's id, or 0 when it cannot fit without dropping results.
        """
        encoded = None if result is None else _encode(result)
        extra = len(anomaly_map or b"") + (0 if encoded is None else len(encoded))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if not self._make_room(len(data) + extra + 256, drop_results=False):
                    self._db.execute("COMMIT")  # keep the evictions: older samples go first
                    return 0
                cur = self._db.execute(
                    "INSERT INTO samples (ts, part_id, reason, score, size, data, seq, result,"
                    " anomaly_map) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self._clock(),
                        part_id,
                        reason,
                        score,
                        len(data),
                        data,
                        seq,
                        encoded,
                        anomaly_map,
                    ),
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

    def sample(self, sample_id: int) -> Sample | None:
        """One stored sample by id, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, ts, part_id, reason, score, data FROM samples WHERE id = ?",
                (sample_id,),
            ).fetchone()
        if row is None:
            return None
        return Sample(int(row[0]), float(row[1]), row[2], row[3], row[4], bytes(row[5]))

    def sample_map(self, sample_id: int) -> bytes | None:
        """The anomaly map stored with a sample (a grey PNG), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT anomaly_map FROM samples WHERE id = ?", (sample_id,)
            ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def remove_sample(self, sample_id: int) -> None:
        """Delete a sample once an uploader has stored it elsewhere."""
        with self._lock:
            self._db.execute("DELETE FROM samples WHERE id = ?", (sample_id,))

    def upload_candidates(self, *, after_id: int = 0, limit: int = 100) -> list[UploadCandidate]:
        """Stored samples past ``after_id``, oldest first, each with its result message and the
        review of that result (the part's entry in the review queue, if it is still about this
        judgement): what the uploader needs to name, label or hold each one."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.id, s.ts, s.part_id, s.reason, s.score, s.seq, s.size, s.result,"
                " r.decision, r.label, r.defect_type, r.operator, r.labelled_at, r.ts, r.model"
                " FROM samples s LEFT JOIN reviews r ON s.seq IS NOT NULL AND r.result_seq = s.seq"
                " WHERE s.id > ? ORDER BY s.id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        out = []
        for row in rows:
            try:
                result = None if row[7] is None else json.loads(bytes(row[7]))
            except ValueError:
                result = None
            out.append(
                UploadCandidate(
                    id=int(row[0]),
                    ts=float(row[1]),
                    part_id=str(row[2]),
                    reason=str(row[3]),
                    score=row[4],
                    seq=None if row[5] is None else int(row[5]),
                    size=int(row[6] or 0),
                    result=result if isinstance(result, dict) else None,
                    review_decision=row[8],
                    label=row[9],
                    defect_type=row[10],
                    operator=row[11],
                    labelled_at=row[12],
                    review_ts=row[13],
                    review_model=row[14],
                )
            )
        return out

    def _upload_count(self) -> tuple[int, int]:
        """(hour, bytes) of the uploader's hourly count, as the meta table holds it now."""
        rows = dict(
            self._db.execute(
                "SELECT key, value FROM meta WHERE key IN ('upload_hour', 'upload_hour_bytes')"
            ).fetchall()
        )
        return int(rows.get("upload_hour", -1)), int(rows.get("upload_hour_bytes", 0))

    def upload_hour(self) -> tuple[int, int]:
        """The clock hour (epoch hours) the uploader last sent in, and the bytes it sent in it."""
        with self._lock:
            return self._upload_count()

    def charge_upload(self, hour: int, size: int) -> int:
        """Count ``size`` bytes against clock hour ``hour`` durably, before they are sent (a
        crash mid-transfer still counts them); return the hour's total."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                counted, used = self._upload_count()
                used = (used if counted == hour else 0) + size
                self._set_meta("upload_hour", hour)
                self._set_meta("upload_hour_bytes", used)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return used

    def refund_upload(self, hour: int, size: int) -> int:
        """Take back ``size`` bytes charged to clock hour ``hour`` (the transfer provably sent
        nothing); nothing when the count is already another hour's. Return the hour's total."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                counted, used = self._upload_count()
                if counted == hour:
                    used = max(0, used - size)
                    self._set_meta("upload_hour_bytes", used)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return used

    # -- verdicts for the sample uploader --------------------------------------------------

    def _trim_label_uploads(self) -> None:
        over = int(self._scalar("SELECT count(*) FROM label_uploads")) - MAX_LABEL_UPLOADS
        if over > 0:
            self._db.execute(
                "DELETE FROM label_uploads WHERE seq IN"
                " (SELECT seq FROM label_uploads ORDER BY seq LIMIT ?)",
                (over,),
            )

    def label_upload_cursor(self) -> int:
        """The ``seq`` of the last verdict the uploader stored in S3 (-1: none yet)."""
        with self._lock:
            value = self._scalar("SELECT value FROM meta WHERE key = 'label_upload_seq'")
        return -1 if value is None else int(value)

    def label_uploads(self, *, limit: int = 100) -> list[LabelUpload]:
        """The verdicts not yet stored in S3, in ``seq`` order (past the cursor)."""
        with self._lock:
            value = self._scalar("SELECT value FROM meta WHERE key = 'label_upload_seq'")
            after = -1 if value is None else int(value)
            rows = self._db.execute(
                "SELECT seq, part_id, result_ts, payload FROM label_uploads WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        out = []
        for seq, part_id, result_ts, payload in rows:
            try:
                message = json.loads(bytes(payload))
            except ValueError:
                message = None
            out.append(
                LabelUpload(
                    int(seq),
                    str(part_id),
                    str(result_ts),
                    message if isinstance(message, dict) else {},
                )
            )
        return out

    def mark_label_uploaded(self, seq: int) -> None:
        """Move the cursor to ``seq`` (S3 stored that verdict) and forget the verdicts up to it,
        in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM label_uploads WHERE seq <= ?", (seq,))
                value = self._scalar("SELECT value FROM meta WHERE key = 'label_upload_seq'")
                if value is None or seq > int(value):
                    self._set_meta("label_upload_seq", seq)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- the review queue and labels -------------------------------------------------------

    def _trim_reviews(self) -> None:
        over = int(self._scalar("SELECT count(*) FROM reviews")) - self.max_reviews
        if over > 0:
            self._db.execute(
                "DELETE FROM reviews WHERE part_id IN"
                " (SELECT part_id FROM reviews ORDER BY result_seq LIMIT ?)",
                (over,),
            )

    def _review(self, part_id: str) -> Review | None:
        row = self._db.execute(
            f"SELECT {_REVIEW_COLUMNS}, {_SAMPLE_OF}, {_MAP_OF} FROM reviews WHERE part_id = ?",
            (part_id,),
        ).fetchone()
        return None if row is None else _review(row)

    def review(self, part_id: str) -> Review | None:
        """The review queue's entry for ``part_id``, or None."""
        with self._lock:
            return self._review(part_id)

    def reviews(
        self,
        *,
        decisions: Iterable[str] = ("manual",),
        labelled: bool | None = False,
        limit: int = 100,
    ) -> list[Review]:
        """Queue entries of these decisions, oldest first; ``labelled`` False: awaiting a
        verdict, True: given one, None: both."""
        wanted = sorted(set(decisions))
        if not wanted:
            return []
        where = f"decision IN ({', '.join('?' * len(wanted))})"
        if labelled is not None:
            where += " AND label IS NOT NULL" if labelled else " AND label IS NULL"
        order = "DESC" if labelled else "ASC"  # the latest verdicts, the oldest waiting parts
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_REVIEW_COLUMNS}, {_SAMPLE_OF}, {_MAP_OF} FROM reviews WHERE {where}"
                f" ORDER BY result_seq {order} LIMIT ?",
                (*wanted, limit),
            ).fetchall()
        return [_review(row) for row in rows]

    def _label_outcome(
        self, part_id: str, result_seq: int, revision: int, label: str, defect_type: str | None
    ) -> tuple[LabelOutcome | None, Review | None]:
        """What a verdict on the part as it is now comes to: an outcome that writes nothing,
        or None (record it), with the part's current review."""
        current = self._review(part_id)
        if current is None:
            return LabelOutcome("unknown"), None
        if current.result_seq != result_seq:  # a verdict on another judgement
            return LabelOutcome("conflict", current), current
        if current.label == label and current.defect_type == defect_type:
            return LabelOutcome("unchanged", current), current
        if current.revision != revision:
            return LabelOutcome("conflict", current), current
        return None, current

    def record_label(
        self,
        part_id: str,
        *,
        result_seq: int,
        revision: int,
        label: str,
        defect_type: str | None,
        operator: str,
        at: str,
        message: Callable[[Review, int], Mapping[str, Any]],
    ) -> LabelOutcome:
        """Journal a person's verdict on a queued part durably, with the next ``seq``.

        A verdict names the judgement it is about (``result_seq``): any other than the part's
        current one is a ``conflict``, whatever the label. Then idempotent by part id: the
        verdict the part already carries is ``unchanged`` (nothing written); another verdict
        replaces it (``revision`` + 1, a new label message upstream) only if the caller saw
        the part as it is now (``revision``), else ``conflict``. ``message(review, seq)`` builds the label message (the caller's contract,
        :func:`inspector.messages.build_label`); it is journaled in the same transaction.
        """
        # a verdict that writes nothing (a double tap, a stale page) never takes the counter
        with self._lock:
            outcome, _ = self._label_outcome(part_id, result_seq, revision, label, defect_type)
        if outcome is not None:
            return outcome
        # the counter is held for this one transaction only: the frame loop, which takes it
        # before its reject signal, waits at most for this commit, never for a checkpoint
        with self._seq_lock, self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                outcome, current = self._label_outcome(
                    part_id, result_seq, revision, label, defect_type
                )
                if outcome is None:
                    assert current is not None
                    seq = self._meta_int("next_seq")
                    labelled = replace(
                        current,
                        label=label,
                        defect_type=defect_type,
                        operator=operator,
                        labelled_at=at,
                        revision=current.revision + 1,
                    )
                    payload = _encode({**message(labelled, seq), "seq": seq})
                    self._make_room(len(payload) + 64)
                    self._db.execute("INSERT INTO labels VALUES (?, ?, ?)", (seq, part_id, payload))
                    upload = _encode({**json.loads(payload), "labelled_at": at})
                    self._db.execute(
                        "INSERT INTO label_uploads VALUES (?, ?, ?, ?)",
                        (seq, part_id, current.ts, upload),
                    )
                    self._trim_label_uploads()
                    self._db.execute(
                        "UPDATE reviews SET label = ?, defect_type = ?, operator = ?,"
                        " labelled_at = ?, revision = ? WHERE part_id = ?",
                        (label, defect_type, operator, at, labelled.revision, part_id),
                    )
                    self._set_meta("next_seq", seq + 1)
                    outcome = LabelOutcome("recorded", labelled, seq, current.label)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if outcome.seq is not None:
                self._next = outcome.seq + 1
        with self._lock:
            self._checkpoint_if_needed()
        return outcome

    # -- reporting -------------------------------------------------------------------------

    def stats(self) -> JournalStats:
        """Backlog, disk use and eviction counters."""
        with self._lock:
            pending = self._pending_count() + int(self._scalar("SELECT count(*) FROM held_labels"))
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

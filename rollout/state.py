"""The controller's persisted state, one document per plant, written with compare-and-swap.

Two stores with one contract: :meth:`load` remembers the revision it read, and :meth:`save`
writes only if the stored document is still that revision, else it raises
:class:`StateConflict` (another controller wrote in between). The controller keeps its lease in
the document (``lease``: owner and expiry, renewed with every save), so two controllers can never
both act: the one whose write fails stops before its next step.

- :class:`StateStore`: a local directory (``<state-dir>/<plant>.json``); the revision is a
  counter in the document, checked and bumped under an exclusive ``flock`` of a lock file, and
  the document is replaced atomically (temp file + rename + fsync).
- :class:`S3StateStore`: ``s3://<bucket>/rollout/state/<plant>.json``; the revision is the
  object's ETag. A first write uses ``If-None-Match: *`` and later ones ``If-Match: <etag>``;
  S3 answers ``412 Precondition Failed`` when the object is not (or no longer) what was read
  (S3 user guide, conditional-requests / conditional-writes; PutObject ``IfMatch``,
  ``IfNoneMatch``), and ``409 ConditionalRequestConflict`` when a concurrent conditional write
  to the key is in progress — both a conflict here. Durable with every checkpoint, so a killed
  CodeBuild job loses nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rollout.errors import AwsError, StateError

STATE_FORMAT = "lineguard.rollout-state/1"
S3_STATE_PREFIX = "rollout/state/"
"""Under the Shared stack's ``rollout/`` prefix, which the promotion role may read and write."""


class StateConflict(StateError):
    """The stored state changed since it was read: another controller owns the promotion."""


def _check(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise StateError(f"{where}: not a rollout state file ({STATE_FORMAT})")
    return doc


class StateStore:
    """One plant's rollout state in a local directory."""

    def __init__(self, directory: Path | str, plant: str) -> None:
        self.path = Path(directory) / f"{plant}.json"
        self._revision: int | None = None  # None: nothing read yet, or nothing stored

    @property
    def where(self) -> str:
        """Where the state lives, for messages."""
        return str(self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise StateError(f"{self.path}: unreadable rollout state ({exc})") from None
        return _check(doc, str(self.path))

    def load(self) -> dict[str, Any] | None:
        """The state document (None when there is none); remembers its revision."""
        doc = self._read()
        self._revision = None if doc is None else int(doc.get("revision", 0))
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        """Write the state if nobody wrote since :meth:`load` (or the last save), atomically."""
        with self._locked():
            current = self._read()
            stored = None if current is None else int(current.get("revision", 0))
            if stored != self._revision:
                raise StateConflict(
                    f"{self.path}: the rollout state was changed by another controller "
                    f"(revision {stored}, this one read {self._revision}); stopping"
                )
            revision = (stored or 0) + 1
            out = {**doc, "format": STATE_FORMAT, "revision": revision}
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(out, handle, indent=2, sort_keys=True)
                    handle.write("\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._revision = revision


class S3StateStore:
    """One plant's rollout state as an S3 object, written with conditional puts."""

    def __init__(self, s3: Any, bucket: str, plant: str, prefix: str = S3_STATE_PREFIX) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.key = f"{prefix}{plant}.json"
        self._etag: str | None = None

    @property
    def where(self) -> str:
        """Where the state lives, for messages."""
        return f"s3://{self.bucket}/{self.key}"

    def load(self) -> dict[str, Any] | None:
        """The state document (None when there is none); remembers its ETag."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # listed first: without s3:ListBucket on the whole bucket (the promotion role has it
            # for rollout/* only) S3 answers a missing key with 403, not 404 (S3 API reference,
            # GetObject permissions), so a first promotion would look like an access error
            listed = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self.key, MaxKeys=1)
            if not any(o.get("Key") == self.key for o in listed.get("Contents", [])):
                self._etag = None
                return None
            response = self._s3.get_object(Bucket=self.bucket, Key=self.key)
            body = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                self._etag = None
                return None
            raise AwsError(f"s3.get_object ({self.where}): {exc}") from exc
        except BotoCoreError as exc:
            raise AwsError(f"s3.get_object ({self.where}): {exc}") from exc
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as exc:
            raise StateError(f"{self.where}: unreadable rollout state ({exc})") from None
        self._etag = str(response["ETag"])
        return _check(doc, self.where)

    def save(self, doc: dict[str, Any]) -> None:
        """Put the state if the object is still the one read (``If-Match``), or absent.

        A 409 ``ConditionalRequestConflict`` (another conditional write to the key in flight)
        is retried, as S3 advises; a 412 is a conflict, unless the object now holds exactly
        this document (the SDK retried a put that had already succeeded).
        """
        import time

        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps({**doc, "format": STATE_FORMAT}, indent=2, sort_keys=True).encode()
        condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        for attempt in range(4):
            try:
                response = self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=body,
                    ContentType="application/json",
                    **condition,
                )
                self._etag = str(response["ETag"])
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if (code == "ConditionalRequestConflict" or status == 409) and attempt < 3:
                    time.sleep(0.2 * 2**attempt)
                    continue
                if code == "PreconditionFailed" or status == 412:
                    if self._holds(body):
                        return
                    raise StateConflict(
                        f"{self.where}: the rollout state was changed by another controller "
                        f"({code}); stopping"
                    ) from None
                if code == "ConditionalRequestConflict" or status == 409:
                    raise StateConflict(
                        f"{self.where}: conditional writes to the state keep conflicting "
                        f"({code}); stopping"
                    ) from None
                raise AwsError(f"s3.put_object ({self.where}): {exc}") from exc
            except BotoCoreError as exc:
                raise AwsError(f"s3.put_object ({self.where}): {exc}") from exc

    def _holds(self, body: bytes) -> bool:
        """Whether the stored object is exactly ``body`` (then take its ETag as ours)."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=self.key)
        except Exception:  # unreadable now: not ours to claim
            return False
        if response["Body"].read() != body:
            return False
        self._etag = str(response["ETag"])
        return True

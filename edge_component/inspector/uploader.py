"""The sample uploader: the journal's retraining samples → S3, in the training dataset layout.

Each sample the sampler kept becomes one object
``s3://<bucket>/samples/<plant>/<device>/<layout>/<file>`` (docs/sample-uploads.md):

- ``<layout>``: ``good``, ``defect`` or ``defect/<type>`` when a person labelled the part on the
  review station, else ``unlabelled/<decision>`` (``reject``, ``manual``, ``pass``) — the folders
  ``training/dataset.py`` reads, the unlabelled ones beside them.
- ``<file>``: ``<YYYYMMDD of the result's ts, UTC>_<part id, [A-Za-z0-9._-] only>_<seq>.<ext>``,
  the extension from the image bytes. The name depends only on the sample, so sending it again
  (after a restart mid-transfer) overwrites the same key.
- user metadata (``x-amz-meta-*``): ``part-id``, ``seq``, ``decision``, ``score``,
  ``model-version``, ``label`` (``good``/``defect``/``none``), ``defect-type``, ``operator``,
  ``labelled-at``, ``device``, ``plant``, ``line``, ``station``; a field with no value (no
  label, no score) is left out. A value with characters outside printable ASCII is sent
  RFC 2047-encoded (``=?utf-8?b?...?=``), as S3 takes them.

Every verdict the review station journals also goes on its own, as a label object
``samples/<plant>/<device>/labels/<YYYYMMDD of the result>_<part>_<result seq>_r<revision>.json``
(the label message with ``labelled_at`` and ``result_ts``), in ``seq`` order before the samples,
the journal's cursor moved only after S3's success: a verdict given or corrected after its image
left reaches training (``training/merge.py`` reads label objects as verdicts).

A part still waiting in the review queue (a ``manual`` or ``reject`` part without a verdict) is
held back until it is labelled or ``hold_s`` (a shift) has passed since its result, so the label
travels with the image; after that it goes as ``unlabelled/<decision>``. Held samples also go,
oldest first and unlabelled, once the sample area is more than three quarters full: the disk
cap would otherwise evict them unsent (at the default budget a shift of rejects is larger than
the default cap). Samples of results with
no review entry (near-threshold passes, or no station running) go at once.

Budgets: at most ``bytes_per_hour`` image and label bytes per clock hour, counted in the
journal's meta table *before* each transfer (a crash mid-transfer still counts it, so a crash
loop cannot send more) and taken back when the failure proves nothing was sent
(:func:`nothing_sent`); the S3 client makes one attempt per call, so a charge is one transfer; the sample disk cap is the sampler's and the journal's. A sample leaves the journal only
after S3 answered the PutObject with success. Failures: network, credentials and S3 5xx wait
with exponential back-off (``backoff_min_s`` doubling to ``backoff_max_s``); permanent refusals
(403 AccessDenied, NoSuchBucket, ...) are reported in health and the log and retried only every
``permanent_pause_s``. Credentials come from boto3's default chain, which on a Greengrass core
device is the token exchange service (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` +
``AWS_CONTAINER_AUTHORIZATION_TOKEN``, botocore ``credentials.ContainerProvider``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from typing import Any, Protocol

from inspector.journal import Journal, LabelUpload, UploadCandidate
from inspector.messages import DEFECT_TYPE, Identity

LOG = logging.getLogger(__name__)

SAMPLES_PREFIX = "samples"
LABELS_FOLDER = "labels"  # the device's verdicts, beside its image folders
DEFAULT_HOLD_S = 8 * 3600.0  # a shift: the label has that long to catch up with its image
DECISIONS = ("pass", "reject", "manual")
REVIEWED = ("manual", "reject")  # the decisions whose parts wait in the review queue
_PART_CHARS = re.compile(r"[^A-Za-z0-9._-]")
MAX_PART_CHARS = 100
# metadata values: printable ASCII stays as it is; anything else goes RFC 2047-encoded (S3 user
# metadata travels as HTTP headers, S3 user guide, UsingMetadata)
_META_SAFE = "".join(chr(c) for c in range(0x20, 0x7F))
SCAN_PAGE = 200
# share of the sample area's cap past which held samples go without waiting for a verdict
RELEASE_AT = 0.75


class UploaderError(Exception):
    """An uploader that cannot be set up (names the setting)."""


class ObjectStore(Protocol):
    """Where samples go: one PutObject. Raises on failure (botocore's exceptions for S3)."""

    def put(self, key: str, body: bytes, *, content_type: str, metadata: Mapping[str, str]) -> None:
        """Store ``body`` at ``key`` with its content type and user metadata."""

    def reset(self) -> None:
        """Forget the client (and its credentials): the next put builds a new one."""


def image_type(data: bytes) -> tuple[str, str]:
    """The file extension and content type the image bytes say (``bin`` when unknown)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png", "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg", "image/jpeg"
    if data.startswith(b"BM"):
        return "bmp", "image/bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tif", "image/tiff"
    return "bin", "application/octet-stream"


def safe_part_id(part_id: str) -> str:
    """The part id with every character outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    cleaned = _PART_CHARS.sub("-", part_id)[:MAX_PART_CHARS]
    return cleaned or "-"


def result_time(candidate: UploadCandidate) -> float:
    """Epoch seconds of the sample's result: its ``ts``, else the review's, else when stored."""
    for text in ((candidate.result or {}).get("ts"), candidate.review_ts):
        if isinstance(text, str) and text:
            try:
                return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return candidate.ts


def decision_of(candidate: UploadCandidate) -> str:
    """The result's decision (``pass``/``reject``/``manual``)."""
    for value in ((candidate.result or {}).get("decision"), candidate.review_decision):
        if value in DECISIONS:
            return str(value)
    return candidate.reason if candidate.reason in DECISIONS else "manual"


def layout_of(candidate: UploadCandidate) -> str:
    """The dataset folder: ``good``, ``defect``, ``defect/<type>`` or ``unlabelled/<decision>``."""
    if candidate.label == "good":
        return "good"
    if candidate.label == "defect":
        kind = candidate.defect_type
        return f"defect/{kind}" if isinstance(kind, str) and DEFECT_TYPE.match(kind) else "defect"
    return f"unlabelled/{decision_of(candidate)}"


def held(candidate: UploadCandidate, now: float, hold_s: float) -> bool:
    """Whether the part still waits for a person's verdict, within the hold time."""
    waiting = candidate.review_decision in REVIEWED and candidate.label is None
    return waiting and now < result_time(candidate) + hold_s


def object_key(identity: Identity, candidate: UploadCandidate, ext: str) -> str:
    """``samples/<plant>/<device>/<layout>/<YYYYMMDD>_<part>_<seq>.<ext>``."""
    day = datetime.fromtimestamp(result_time(candidate), tz=UTC).strftime("%Y%m%d")
    seq = str(candidate.seq) if candidate.seq is not None else f"s{candidate.id}"
    name = f"{day}_{safe_part_id(candidate.part_id)}_{seq}.{ext}"
    return f"{SAMPLES_PREFIX}/{identity.plant}/{identity.device}/{layout_of(candidate)}/{name}"


def _day(text: Any, fallback: float) -> str:
    if isinstance(text, str) and text:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return moment.astimezone(UTC).strftime("%Y%m%d")
        except ValueError:
            pass
    return datetime.fromtimestamp(fallback, tz=UTC).strftime("%Y%m%d")


def label_key(identity: Identity, upload: LabelUpload) -> str:
    """``samples/<plant>/<device>/labels/<YYYYMMDD of the result>_<part>_<result seq>_r<revision>
    .json``: one object per verdict, named by the verdict alone (sent twice, the same key)."""
    message = upload.message
    day = _day(upload.result_ts, 0.0)
    result_seq = int(message.get("result_seq", 0))
    revision = int(message.get("revision", 0))
    name = f"{day}_{safe_part_id(upload.part_id)}_{result_seq}_r{revision}.json"
    return f"{SAMPLES_PREFIX}/{identity.plant}/{identity.device}/{LABELS_FOLDER}/{name}"


def label_body(upload: LabelUpload) -> bytes:
    """The label object: the label message as journaled, with ``labelled_at`` (when the verdict
    was given: the review queue's, the message's ``ts``) and ``result_ts`` (the judged result's
    time)."""
    at = upload.message.get("labelled_at") or upload.message.get("ts")
    doc = {**upload.message, "labelled_at": at, "result_ts": upload.result_ts}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _meta(value: Any) -> str:
    text = str(value)
    if all(c in _META_SAFE or c == "%" for c in text):
        return text
    # S3 takes non-ASCII metadata RFC 2047-encoded, stores it decoded and returns it encoded
    # (S3 user guide, UsingMetadata, "User-defined object metadata")
    return Header(text, "utf-8", maxlinelen=10_000).encode()


def object_metadata(identity: Identity, candidate: UploadCandidate) -> dict[str, str]:
    """The object's user metadata (``x-amz-meta-<key>``); fields with no value are left out."""
    result = candidate.result or {}
    score = result.get("score", candidate.score)
    labelled = candidate.label in ("good", "defect")
    fields: dict[str, Any] = {
        "part-id": candidate.part_id,
        "seq": candidate.seq,
        "decision": decision_of(candidate),
        "score": score if isinstance(score, int | float) else None,
        "model-version": result.get("model") or candidate.review_model,
        "label": candidate.label if labelled else "none",
        "defect-type": candidate.defect_type if candidate.label == "defect" else None,
        "operator": candidate.operator if labelled else None,
        "labelled-at": candidate.labelled_at if labelled else None,
        "device": identity.device,
        "plant": identity.plant,
        "line": identity.line,
        "station": identity.station,
    }
    return {k: _meta(v) for k, v in fields.items() if v is not None and v != ""}


def classify(exc: BaseException) -> str:
    """``transient`` (wait and retry), ``credentials`` (new client, then retry) or
    ``permanent`` (report; retry only after a long pause) for a failed PutObject."""
    try:
        from botocore import exceptions as bx
    except ImportError:  # pragma: no cover - boto3 is a device requirement
        return "transient" if isinstance(exc, OSError) else "permanent"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return "credentials"
    if isinstance(exc, bx.CredentialRetrievalError):
        return "credentials"
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in (
            "ExpiredToken",
            "ExpiredTokenException",
            "TokenRefreshRequired",
            "InvalidToken",
            "RequestTimeTooSkewed",
            "InvalidAccessKeyId",
        ):
            return "credentials"
        if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "Throttling"):
            return "transient"
        return "permanent"
    if isinstance(exc, bx.HTTPClientError | bx.EndpointConnectionError | bx.ConnectionError):
        return "transient"
    if isinstance(exc, OSError | TimeoutError):
        return "transient"
    return "permanent"


def nothing_sent(exc: BaseException) -> bool:
    """Whether a failed PutObject provably sent no byte of the body: no connection was made
    (``EndpointConnectionError``, ``ConnectTimeoutError``) or no credentials were found to sign
    it (``NoCredentialsError``, ``PartialCredentialsError``, ``CredentialRetrievalError``) —
    botocore raises these before the request is written (botocore/exceptions.py; the
    connection errors wrap urllib3's ``NewConnectionError`` / ``ConnectTimeoutError``,
    botocore/httpsession.py ``URLLib3Session.send``). A read timeout or a 5xx came after the
    body went out."""
    try:
        from botocore import exceptions as bx
    except ImportError:  # pragma: no cover - boto3 is a device requirement
        return False
    return isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectTimeoutError
        | bx.NoCredentialsError
        | bx.PartialCredentialsError
        | bx.CredentialRetrievalError,
    )


def describe(exc: BaseException) -> str:
    """One short line for health and the log."""
    try:
        from botocore.exceptions import ClientError
    except ImportError:  # pragma: no cover
        ClientError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"{error.get('Code', '?')} ({status}): {error.get('Message', '')}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


class BotoObjectStore:
    """PutObject with boto3 (credentials from its default chain: the token exchange service on
    a core device). The client is built on first use and again after :meth:`reset`."""

    def __init__(
        self,
        bucket: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self._timeouts = (connect_timeout_s, read_timeout_s)
        self._client: Any = None

    def _make(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
            # one attempt per call: botocore retries 5xx and read timeouts after the body went
            # out (botocore/retries/standard.py), which the hourly budget would not see; the
            # uploader's own back-off retries, charging every attempt
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        session = boto3.session.Session(region_name=self.region)
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def put(self, key: str, body: bytes, *, content_type: str, metadata: Mapping[str, str]) -> None:
        """One PutObject; raises botocore's exceptions."""
        if self._client is None:
            self._client = self._make()
        self._client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata=dict(metadata),
        )

    def reset(self) -> None:
        """Build a new client (and resolve credentials again) at the next put."""
        self._client = None


@dataclass
class UploaderStats:
    """What the uploader did (cumulative) and what waits now."""

    uploaded: int = 0
    labels: int = 0
    uploaded_bytes: int = 0
    failures: int = 0
    waiting: int = 0
    held: int = 0
    too_large: int = 0
    last_error: str | None = None
    state: str = "idle"


class Uploader:
    """Sends the journal's samples to S3 under the hourly byte budget, oldest first.

    Args:
        journal: the samples (``upload_candidates``, ``sample``, ``remove_sample``) and the
            hour's byte count (``upload_hour``, ``charge_upload``).
        identity: plant, line, station and device (key and metadata).
        store: where objects go (:class:`BotoObjectStore`).
        bytes_per_hour: image bytes sent per clock hour at most (0: uploads paused).
        hold_s: how long a part waiting for a person's verdict is held back.
        clock: epoch seconds (the clock hour and the hold).
        sample_cap_bytes: the sample area's disk cap (the sampler's). Once the stored samples
            fill more than :data:`RELEASE_AT` of it, held samples go unlabelled, oldest first,
            rather than wait to be evicted by the cap unsent (None: no such release).
    """

    def __init__(
        self,
        journal: Journal,
        identity: Identity,
        store: ObjectStore,
        *,
        bytes_per_hour: int,
        hold_s: float = DEFAULT_HOLD_S,
        clock: Callable[[], float] = time.time,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 300.0,
        permanent_pause_s: float = 900.0,
        idle_s: float = 5.0,
        sample_cap_bytes: int | None = None,
    ) -> None:
        if bytes_per_hour < 0:
            raise UploaderError(f"bytes_per_hour must be >= 0, got {bytes_per_hour}")
        if not hold_s >= 0:
            raise UploaderError(f"hold_s must be >= 0, got {hold_s}")
        self.journal = journal
        self.identity = identity
        self.store = store
        self.bytes_per_hour = bytes_per_hour
        self.hold_s = hold_s
        self._clock = clock
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.permanent_pause_s = permanent_pause_s
        self.idle_s = idle_s
        self.sample_cap_bytes = sample_cap_bytes
        self.stats = UploaderStats()
        self._failures_in_row = 0
        self._lock = threading.Lock()

    # -- one step --------------------------------------------------------------------------

    def _next(self, now: float) -> tuple[UploadCandidate | None, float]:
        """The oldest sample that may go now, or None and the seconds until one might."""
        hour = int(now // 3600)
        last_hour, used = self.journal.upload_hour()
        if last_hour != hour:
            used = 0
        left = self.bytes_per_hour - used
        to_next_hour = (hour + 1) * 3600 - now + 0.001
        waiting = held_count = too_large = 0
        chosen: UploadCandidate | None = None
        wait = self.idle_s
        after = 0
        cap = self.sample_cap_bytes
        # the sample area nearly full: holding on would let the cap evict them unsent
        pressed = cap is not None and self.journal.stats().sample_bytes > RELEASE_AT * cap
        while True:
            page = self.journal.upload_candidates(after_id=after, limit=SCAN_PAGE)
            for candidate in page:
                waiting += 1
                if not pressed and held(candidate, now, self.hold_s):
                    held_count += 1
                    release = result_time(candidate) + self.hold_s - now
                    wait = min(wait, max(0.001, release))
                    continue
                if candidate.size > self.bytes_per_hour:
                    too_large += 1  # never fits an hour: left for the disk cap to evict
                    continue
                if chosen is None:
                    chosen = candidate
            if len(page) < SCAN_PAGE:
                break
            after = page[-1].id
        with self._lock:
            self.stats.waiting, self.stats.held, self.stats.too_large = (
                waiting,
                held_count,
                too_large,
            )
        if chosen is not None and chosen.size > left:
            self._set_state("over_budget")
            return None, to_next_hour
        if chosen is None:
            self._set_state("held" if held_count else "idle")
        return chosen, wait

    def _set_state(self, state: str) -> None:
        with self._lock:
            self.stats.state = state

    def _put_label(self, upload: LabelUpload, now: float) -> float | None:
        """Send one verdict; None when the budget has no room for it this hour."""
        hour = int(now // 3600)
        last_hour, used = self.journal.upload_hour()
        body = label_body(upload)
        if (used if last_hour == hour else 0) + len(body) > self.bytes_per_hour:
            self._set_state("over_budget")
            return None
        key = label_key(self.identity, upload)
        self.journal.charge_upload(hour, len(body))
        try:
            self.store.put(
                key,
                body,
                content_type="application/json",
                metadata={"part-id": _meta(upload.part_id), "seq": str(upload.seq)},
            )
        except Exception as exc:
            if nothing_sent(exc):
                self.journal.refund_upload(hour, len(body))
            return self._failed(exc, key)
        self.journal.mark_label_uploaded(upload.seq)
        self._succeeded(len(body), labels=1)
        LOG.debug("uploader: stored %s", key)
        return 0.0

    def _succeeded(self, size: int, *, labels: int = 0) -> None:
        with self._lock:
            if self._failures_in_row:
                LOG.warning(
                    "uploader: uploading again after %d failed attempts", self._failures_in_row
                )
            self._failures_in_row = 0
            if labels:
                self.stats.labels += labels
            else:
                self.stats.uploaded += 1
            self.stats.uploaded_bytes += size
            self.stats.last_error = None
            self.stats.state = "uploading"

    def step(self) -> float:
        """Send at most one object (a verdict first, then a sample); return the seconds to wait
        before the next step (0: go on)."""
        now = self._clock()
        labels = self.journal.label_uploads(limit=1)
        if labels:
            done = self._put_label(labels[0], now)
            if done is not None:
                return done
            return (int(now // 3600) + 1) * 3600 - now + 0.001
        candidate, wait = self._next(now)
        if candidate is None:
            return wait
        sample = self.journal.sample(candidate.id)
        if sample is None:  # evicted by the disk cap meanwhile
            return 0.0
        ext, content_type = image_type(sample.data)
        key = object_key(self.identity, candidate, ext)
        # counted before the transfer: a crash mid-transfer cannot send more than the budget
        hour = int(now // 3600)
        self.journal.charge_upload(hour, len(sample.data))
        try:
            self.store.put(
                key,
                sample.data,
                content_type=content_type,
                metadata=object_metadata(self.identity, candidate),
            )
        except Exception as exc:
            if nothing_sent(exc):  # an offline hour does not use up the hour's budget
                self.journal.refund_upload(hour, len(sample.data))
            return self._failed(exc, key)
        self.journal.remove_sample(candidate.id)
        self._succeeded(len(sample.data))
        LOG.debug("uploader: stored %s (%d bytes)", key, len(sample.data))
        return 0.0

    def _failed(self, exc: Exception, key: str) -> float:
        kind = classify(exc)
        text = describe(exc)
        with self._lock:
            self.stats.failures += 1
            self._failures_in_row += 1
            first = self._failures_in_row == 1
            self.stats.last_error = f"{kind}: {text}"[:300]
            self.stats.state = "refused" if kind == "permanent" else "offline"
        if kind == "credentials":
            self.store.reset()
        if kind == "permanent":
            LOG.error(
                "uploader: S3 refused %s: %s; samples wait in the journal, next try in %.0f s",
                key,
                text,
                self.permanent_pause_s,
            )
            return self.permanent_pause_s
        delay = min(self.backoff_max_s, self.backoff_min_s * 2 ** (self._failures_in_row - 1))
        if first:  # the start of an outage is logged once, not every retry
            LOG.warning("uploader: upload failed; samples wait in the journal: %s", text)
        return delay

    # -- the thread ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Upload until ``stop`` is set; never raises (a journal closed under it ends it)."""
        while not stop.is_set():
            try:
                delay = self.step()
            except Exception as exc:  # e.g. the journal closed at stop; never kill the thread
                if stop.is_set():
                    return
                LOG.warning("uploader: %s", describe(exc))
                with self._lock:
                    self.stats.last_error = f"internal: {describe(exc)}"[:300]
                delay = self.backoff_max_s
            if delay > 0:
                stop.wait(delay)

    def figures(self) -> dict[str, Any]:
        """Cumulative counters and what waits now (the health message's ``uploads``)."""
        with self._lock:
            return {
                "uploaded": self.stats.uploaded,
                "labels": self.stats.labels,
                "uploaded_bytes": self.stats.uploaded_bytes,
                "failures": self.stats.failures,
                "waiting": self.stats.waiting,
                "held": self.stats.held,
                "state": self.stats.state,
                "last_error": self.stats.last_error,
            }

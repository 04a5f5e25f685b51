r"""Merge the labelled samples devices upload into a base dataset: retraining from the field.

    python -m training.merge --base <dataset> --samples s3://<bucket>/samples/<plant>/ --out <dir>

Devices upload the sampler's images to ``s3://<bucket>/samples/<plant>/<device>/<layout>/<file>``,
``<layout>`` ``good``, ``defect`` or ``defect/<type>`` (a person's verdict from the review
station) or ``unlabelled/<decision>`` (no verdict), ``<file>``
``<YYYYMMDD>_<part id>_<seq>.<ext>``, with the S3 user metadata ``part-id``, ``seq``,
``labelled-at`` and more. ``--samples`` is such a prefix (all devices of a plant, or one device),
or a local folder laid out like ``samples/<plant>/`` (``<device>/<layout>/<file>``; a file's
metadata, when kept, in ``<file>.metadata.json``).

The new folder (``--out``, the dataset layout of ``training.dataset``) holds the base images
and the labelled samples, and:

- **one image per part, under the verdict that stands**: objects of one (device, part id) — a
  relabel writes a second object under another layout, or a label object
  ``<device>/labels/<YYYYMMDD>_<part id>_<result seq>_r<revision>.json`` (a verdict given or
  corrected after the image left) — stand under the latest ``labelled-at``, then the highest
  ``seq`` among the image objects' own labels and the label objects; the image is that
  verdict's own object, else any readable image object of the part (``unlabelled/…`` too);
  equal verdicts with different labels, the part is skipped (reported). Label objects never
  count as images; an ``s<id>`` file name (no result seq) is unlabelled only. Against the base too,
  where the base records its samples (``samples.csv``, written by every merge): a newer label
  replaces the base's image, an older or the same one is dropped;
- ``groups.csv``: a sample's group is ``<device>/<YYYYMMDD>`` (its result's UTC day), so the
  split keeps a device's day on one side; base images keep their own groups;
- ``samples.csv``: where every sample image came from (key, device, part id, seq, label, when);
- ``merge.json``: the summary (counts per layout, unlabelled ones by decision, duplicates
  dropped, skipped objects by key and why, defect types new to the base), also printed.

Unlabelled samples are counted, never trained on. An object that cannot be downloaded, is not
an image Pillow reads, or whose key or metadata break the contract is skipped and reported by
key; a part whose newest label cannot be read is skipped whole (never an older label instead).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any, Protocol

from training.dataset import (
    DEFECT,
    GOOD,
    GROUPS_FILE,
    IMAGE_SUFFIXES,
    SPLITS,
    UNTYPED,
    Sample,
    load_dataset,
    write_split,
)
from training.errors import DatasetError, SamplesError

MERGE_SUMMARY = "merge.json"
PROVENANCE_FILE = "samples.csv"
PROVENANCE_FIELDS = (
    "path",
    "device",
    "part_id",
    "seq",
    "labelled_at",
    "label",
    "defect_type",
    "operator",
    "day",
    "key",
)
SAMPLES_ROOT = "samples"
UNLABELLED = "unlabelled"
DECISIONS = ("reject", "manual", "pass")
METADATA_SUFFIX = ".metadata.json"
# a key segment that is a safe folder name (no traversal, nothing a shell or CSV reads twice)
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
# ``s<id>``: a sample the device kept without its result's seq (unlabelled only, never trained on)
_FILE = re.compile(r"^(?P<day>\d{8})_(?P<part>.+)_(?P<seq>s?\d+)\.(?P<ext>[A-Za-z0-9]+)$")
LABELS = "labels"  # <device>/labels/<day>_<part>_<result seq>_r<revision>.json: verdicts
_LABEL_FILE = re.compile(r"^(?P<day>\d{8})_(?P<part>.+)_(?P<seq>\d+)_r(?P<revision>\d+)\.json$")
_DEFECT_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")  # inspector.messages.DEFECT_TYPE
_DOWNLOAD_ATTEMPTS = 2
FETCH_THREADS = 8  # below botocore's default connection pool (max_pool_connections 10)
_OLDEST = datetime.min.replace(tzinfo=UTC)


def _log(message: str) -> None:
    print(f"[merge {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SampleObject:
    """One object of the samples source, as its key and metadata describe it."""

    key: str
    device: str
    layout: str
    day: str
    part_id: str
    seq: int
    ext: str
    labelled_at: datetime | None = None
    operator: str = ""
    numbered: bool = True  # False: an ``s<id>`` name (no result seq): never trained on

    @property
    def labelled(self) -> bool:
        """A person's verdict (``good``, ``defect``, ``defect/<type>``), not ``unlabelled/…``."""
        return not self.layout.startswith(UNLABELLED + "/")

    @property
    def label(self) -> int:
        """0 good, 1 defect."""
        return 0 if self.layout == GOOD else 1

    @property
    def defect_type(self) -> str | None:
        """The defect type (``defect`` for an untyped defect, as the dataset names it)."""
        if self.layout == GOOD:
            return None
        return self.layout.split("/", 1)[1] if "/" in self.layout else UNTYPED

    @property
    def rank(self) -> tuple[datetime, int]:
        """What decides between two objects of one part: later ``labelled-at``, then higher seq."""
        return (self.labelled_at or _OLDEST, self.seq)

    @property
    def group(self) -> str:
        """The split unit of a sample: its device's day."""
        return f"{self.device}/{self.day}"

    @property
    def out_rel(self) -> str:
        """Its path in the merged dataset."""
        name = f"{self.device}_{self.day}_{_SEGMENT_SAFE.sub('_', self.part_id)}_{self.seq}"
        return f"{self.layout}/{name}.{self.ext.lower()}"


_SEGMENT_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class LabelObject:
    """A verdict object ``<device>/labels/<file>.json``, as its key names it."""

    key: str
    device: str
    day: str
    part: str
    result_seq: int
    revision: int


@dataclass(frozen=True)
class Verdict:
    """A person's verdict on a part: from an image object's own label or a label object."""

    key: str
    layout: str
    labelled_at: datetime | None
    seq: int
    operator: str

    @property
    def rank(self) -> tuple[datetime, int]:
        """Later ``labelled-at``, then higher seq (a label object's own seq: later than its
        result's, and every revision of a device's verdict takes a higher one)."""
        return (self.labelled_at or _OLDEST, self.seq)


def parse_label_key(key: str, rel: str) -> LabelObject | None:
    """A key's ``<device>/labels/<file>`` below ``samples/<plant>/`` (None: not the labels
    folder); ValueError when it is there but breaks the contract."""
    parts = rel.split("/")
    if len(parts) < 2 or parts[1] != LABELS:
        return None
    if len(parts) != 3 or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise ValueError("not <device>/labels/<file> of safe names ([A-Za-z0-9._-], no '..')")
    found = _LABEL_FILE.match(parts[2])
    if not found:
        raise ValueError(
            f"file name {parts[2]!r} is not <YYYYMMDD>_<part id>_<result seq>_r<revision>.json"
        )
    try:
        datetime.strptime(found["day"], "%Y%m%d")
    except ValueError:
        raise ValueError(f"file name {parts[2]!r}: {found['day']} is not a date") from None
    return LabelObject(
        key=key,
        device=parts[0],
        day=found["day"],
        part=found["part"],
        result_seq=int(found["seq"]),
        revision=int(found["revision"]),
    )


def read_label(obj: LabelObject, path: Path) -> tuple[str, Verdict]:
    """(part id, verdict) of a downloaded label object; ValueError where it breaks the contract
    or contradicts its key."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"label object is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError("label object is not a JSON object")
    if doc.get("device") not in (None, obj.device):
        raise ValueError(f"label device {doc.get('device')!r} is not the key's {obj.device!r}")
    part_id = doc.get("part_id")
    if not isinstance(part_id, str) or not part_id:
        raise ValueError("label part_id missing")
    for name, expected in (("result_seq", obj.result_seq), ("revision", obj.revision)):
        if doc.get(name) != expected:
            raise ValueError(f"label {name} {doc.get(name)!r} is not the file name's {expected}")
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError(f"label seq {seq!r} is not a number")
    label, kind = doc.get("label"), doc.get("defect_type")
    if label == GOOD and kind is None:
        layout = GOOD
    elif label == DEFECT and kind is None:
        layout = DEFECT
    elif label == DEFECT and isinstance(kind, str) and _DEFECT_TYPE.match(kind):
        layout = f"{DEFECT}/{kind}"
    else:
        raise ValueError(f"label {label!r} with defect_type {kind!r} is not a verdict")
    at = doc.get("labelled_at") or doc.get("ts")
    try:
        labelled_at = _parse_time(str(at))
    except ValueError:
        raise ValueError(f"label labelled_at {at!r} is not an RFC 3339 time") from None
    operator = doc.get("operator")
    return part_id, Verdict(
        obj.key, layout, labelled_at, seq, operator if isinstance(operator, str) else ""
    )


@dataclass
class Summary:
    """What a merge did: counts per layout, duplicates, skipped objects and the result."""

    source: str
    base: str
    out: str
    listed: int = 0
    by_layout: dict[str, int] = field(default_factory=dict)
    unlabelled: dict[str, int] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: list[dict[str, str]] = field(default_factory=list)
    base_replaced: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    new_defect_types: list[str] = field(default_factory=list)
    base_images: dict[str, int] = field(default_factory=dict)
    merged: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The summary as ``merge.json`` holds it."""
        return {
            "source": self.source,
            "base": self.base,
            "out": self.out,
            "listed": self.listed,
            "by_layout": dict(sorted(self.by_layout.items())),
            "unlabelled": dict(sorted(self.unlabelled.items())),
            "used": dict(sorted(self.used.items())),
            "labels": dict(sorted(self.labels.items())),
            "duplicates_dropped": len(self.duplicates_dropped),
            "base_replaced": len(self.base_replaced),
            "skipped": len(self.skipped),
            "new_defect_types": self.new_defect_types,
            "base_images": self.base_images,
            "merged": self.merged,
            "details": {
                "duplicates_dropped": self.duplicates_dropped,
                "base_replaced": self.base_replaced,
                "skipped": self.skipped,
            },
        }

    def counts(self) -> dict[str, Any]:
        """The figures without the per-object details (for the package's metrics)."""
        doc = self.to_json()
        doc.pop("details")
        return doc

    def skip(self, key: str, reason: str) -> None:
        """Report ``key`` as not trained on, and why."""
        self.skipped.append({"key": key, "reason": reason})


class Unreadable(Exception):
    """One object of the source could not be downloaded or read."""


class _Source(Protocol):
    description: str

    def objects(self) -> Iterator[tuple[str, str]]:
        """(key as reported, path below ``samples/<plant>/``) of every object."""
        ...

    def fetch(self, key: str, dest: Path) -> dict[str, str]:
        """Write the object's bytes to ``dest``; return its user metadata."""
        ...


class _S3Source:
    """A prefix ``samples/<plant>/[…]`` of a bucket, read with ListObjectsV2 and GetObject."""

    def __init__(self, uri: str, client: Any) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        parts = [p for p in prefix.split("/") if p]
        if not bucket or len(parts) < 2 or parts[0] != SAMPLES_ROOT:
            raise SamplesError(
                f"{uri}: not a samples prefix (expected s3://<bucket>/samples/<plant>/, "
                "or a device's prefix below it)"
            )
        self.bucket = bucket
        self.prefix = "/".join(parts) + "/"  # "samples/a" never lists "samples/ab/…"
        self.plant_prefix = f"{SAMPLES_ROOT}/{parts[1]}/"
        self.client = client
        self.description = f"s3://{bucket}/{self.prefix}"

    def objects(self) -> Iterator[tuple[str, str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        # ListObjectsV2 returns at most 1,000 keys a page (S3 API reference, ListObjectsV2)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    yield key, key.removeprefix(self.plant_prefix)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise SamplesError(
                f"{self.description}: cannot list ({error.get('Code')}: {error.get('Message')})"
            ) from None
        except BotoCoreError as exc:
            raise SamplesError(f"{self.description}: cannot list ({exc})") from None

    def fetch(self, key: str, dest: Path) -> dict[str, str]:
        from botocore.exceptions import BotoCoreError, ClientError

        last = ""
        for _ in range(_DOWNLOAD_ATTEMPTS):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
                body = answer["Body"]
                with dest.open("wb") as handle:
                    # botocore checks the body against Content-Length (IncompleteReadError,
                    # botocore/response.py StreamingBody._verify_content_length) and against
                    # the object's checksum when it has one (FlexibleChecksumError,
                    # botocore/httpchecksum.py; response_checksum_validation "when_supported")
                    while chunk := body.read(1 << 20):
                        handle.write(chunk)
                return {str(k).lower(): str(v) for k, v in answer.get("Metadata", {}).items()}
            except ClientError as exc:
                error = exc.response.get("Error", {})
                raise Unreadable(f"{error.get('Code')}: {error.get('Message')}") from None
            except BotoCoreError as exc:  # a broken or short download: once more, then skip
                last = f"{type(exc).__name__}: {exc}"
        raise Unreadable(f"download failed {_DOWNLOAD_ATTEMPTS} times ({last})")


class _FolderSource:
    """A local folder laid out like ``samples/<plant>/`` (``<device>/<layout>/<file>``)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SamplesError(f"{root}: samples folder not found")
        self.root = root
        self.description = str(root)

    def objects(self) -> Iterator[tuple[str, str]]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.endswith(METADATA_SUFFIX):
                rel = path.relative_to(self.root).as_posix()
                yield rel, rel

    def fetch(self, key: str, dest: Path) -> dict[str, str]:
        path = self.root / key
        try:
            shutil.copyfile(path, dest)
        except OSError as exc:
            raise Unreadable(f"{type(exc).__name__}: {exc}") from None
        sidecar = path.with_name(path.name + METADATA_SUFFIX)
        if not sidecar.is_file():
            return {}
        try:
            doc = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise Unreadable(f"{sidecar.name}: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise Unreadable(f"{sidecar.name}: not a JSON object")
        return {str(k).lower(): str(v) for k, v in doc.items()}


def parse_key(key: str, rel: str) -> SampleObject:
    """A key's ``<device>/<layout>/<file>`` below ``samples/<plant>/``; ValueError if not one."""
    parts = rel.split("/")
    if len(parts) < 3 or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise ValueError("not <device>/<layout>/<file> of safe names ([A-Za-z0-9._-], no '..')")
    device, layout, name = parts[0], "/".join(parts[1:-1]), parts[-1]
    if not (
        layout in (GOOD, DEFECT)
        or (len(parts) == 4 and parts[1] == DEFECT)
        or (len(parts) == 4 and parts[1] == UNLABELLED and parts[2] in DECISIONS)
    ):
        raise ValueError(
            f"unknown layout {layout!r} (expected good, defect, defect/<type> or "
            f"unlabelled/{{{','.join(DECISIONS)}}})"
        )
    found = _FILE.match(name)
    if not found:
        raise ValueError(f"file name {name!r} is not <YYYYMMDD>_<part id>_<seq>.<ext>")
    numbered = not found["seq"].startswith("s")
    if not numbered and parts[1] != UNLABELLED:
        raise ValueError(f"file name {name!r}: an s<id> name (no seq) is for unlabelled/ only")
    try:
        datetime.strptime(found["day"], "%Y%m%d")
    except ValueError:
        raise ValueError(f"file name {name!r}: {found['day']} is not a date") from None
    if "." + found["ext"].lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"file name {name!r}: not an image type ({', '.join(IMAGE_SUFFIXES)})")
    return SampleObject(
        key=key,
        device=device,
        layout=layout,
        day=found["day"],
        part_id=found["part"],
        seq=int(found["seq"].removeprefix("s")) if numbered else 0,
        ext=found["ext"],
        numbered=numbered,
    )


def _decoded(value: str) -> str:
    """A metadata value; S3 returns non-ASCII values RFC 2047-encoded (S3 user guide,
    "Working with object metadata", user-defined metadata)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):
        return value


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    return moment.astimezone(UTC)


def with_metadata(obj: SampleObject, metadata: Mapping[str, str]) -> SampleObject:
    """``obj`` with its part id, seq, time and operator from the metadata; ValueError where the
    metadata contradict the key (the key, written under the device's own prefix, is checked by
    IAM; the metadata are what the device says)."""
    meta = {k: _decoded(v) for k, v in metadata.items()}
    if meta.get("device") and meta["device"] != obj.device:
        raise ValueError(f"metadata device {meta['device']!r} is not the key's {obj.device!r}")
    if meta.get("seq") and (not meta["seq"].isdigit() or int(meta["seq"]) != obj.seq):
        raise ValueError(f"metadata seq {meta['seq']!r} is not the file name's {obj.seq}")
    if obj.labelled:
        label = "good" if obj.label == 0 else "defect"
        if meta.get("label") and meta["label"] != label:
            raise ValueError(f"metadata label {meta['label']!r} is not its layout's {label!r}")
        typed = obj.defect_type if "/" in obj.layout else ""
        if meta.get("defect-type", "") not in ("", typed):
            raise ValueError(
                f"metadata defect-type {meta['defect-type']!r} is not its layout's {typed!r}"
            )
    labelled_at = None
    if meta.get("labelled-at"):
        try:
            labelled_at = _parse_time(meta["labelled-at"])
        except ValueError:
            raise ValueError(
                f"metadata labelled-at {meta['labelled-at']!r} is not an RFC 3339 time"
            ) from None
    return SampleObject(
        key=obj.key,
        device=obj.device,
        layout=obj.layout,
        day=obj.day,
        part_id=meta.get("part-id") or obj.part_id,
        seq=obj.seq,
        ext=obj.ext,
        labelled_at=labelled_at,
        operator=meta.get("operator", ""),
        numbered=obj.numbered,
    )


def image_problem(path: Path) -> str | None:
    """Why Pillow cannot read ``path`` as an image (None when it can), as the dataset checks."""
    from PIL import Image

    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # PIL raises many types for broken files
        detail = str(exc).replace(f"'{path}'", "").replace(str(path), "").strip()
        return f"not a readable image ({type(exc).__name__}{': ' + detail if detail else ''})"
    return None


@dataclass(frozen=True)
class _BaseRecord:
    """A base image that came from the field (a row of the base's ``samples.csv``)."""

    row: dict[str, str]

    @property
    def identity(self) -> tuple[str, str]:
        return (self.row["device"], self.row["part_id"])

    @property
    def rank(self) -> tuple[datetime, int]:
        at = self.row.get("labelled_at") or ""
        return (_parse_time(at) if at else _OLDEST, int(self.row.get("seq") or 0))


def read_provenance(folder: Path) -> list[dict[str, str]]:
    """The rows of ``folder/samples.csv`` (none without one); DatasetError naming a bad line."""
    path = folder / PROVENANCE_FILE
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in PROVENANCE_FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}:1: missing column(s) {', '.join(missing)}")
        rows = []
        for row in reader:
            try:
                _BaseRecord(row).rank  # noqa: B018 - validates time and seq
            except ValueError as exc:
                raise DatasetError(f"{path}:{reader.line_num}: {exc}") from None
            rows.append(dict(row))
    return rows


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _source(samples: str | Path, s3_client: Any, endpoint_url: str | None) -> _Source:
    if isinstance(samples, str) and samples.startswith("s3://"):
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3", endpoint_url=endpoint_url)
        return _S3Source(samples, s3_client)
    return _FolderSource(Path(samples))


def merge_samples(
    base: Path,
    samples: str | Path,
    out: Path,
    *,
    s3_client: Any = None,
    endpoint_url: str | None = None,
    log: Callable[[str], None] = _log,
) -> Summary:
    """Merge the labelled samples of ``samples`` (``s3://…/samples/<plant>/`` or a folder) into
    a copy of the dataset ``base`` at ``out`` (which must not exist, or be empty); return the
    summary, also written to ``out/merge.json``.

    Raises:
        DatasetError: ``base`` is not a dataset folder, or ``out`` is in the way.
        SamplesError: the source cannot be listed (a bad prefix, no such bucket, no access).
    """
    base, out = Path(base), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: exists and is not empty (the merge writes a new folder)")
    dataset = load_dataset(base, min_good=0, check_images=False)
    source = _source(samples, s3_client, endpoint_url)
    summary = Summary(source=source.description, base=str(base), out=str(out))
    summary.base_images = {"good": len(dataset.good), "defect": len(dataset.defects)}
    base_records = [_BaseRecord(r) for r in read_provenance(base)]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    downloads = staging / ".download"
    downloads.mkdir(parents=True)
    try:
        log(f"listing {source.description}")
        parts: dict[tuple[str, str], list[tuple[SampleObject, Path]]] = {}
        # parts with an object that could not be read or contradicts its key: its label unknown
        doubtful: dict[tuple[str, str], list[str]] = {}
        candidates: list[tuple[str, SampleObject]] = []
        unlabelled: list[tuple[str, SampleObject]] = []
        label_objects: list[LabelObject] = []
        for key, rel in source.objects():
            summary.listed += 1
            try:
                label_object = parse_label_key(key, rel)
                if label_object is not None:
                    label_objects.append(label_object)
                    continue
                obj = parse_key(key, rel)
            except ValueError as exc:
                summary.skip(key, str(exc))
                continue
            summary.by_layout[obj.layout] = summary.by_layout.get(obj.layout, 0) + 1
            if not obj.labelled:
                decision = obj.layout.split("/", 1)[1]
                summary.unlabelled[decision] = summary.unlabelled.get(decision, 0) + 1
                if obj.numbered:  # trained on only under a label object's verdict
                    unlabelled.append((key, obj))
                continue
            candidates.append((key, obj))
        verdicts = _read_labels(source, label_objects, downloads, doubtful, summary)
        # an unlabelled image is fetched when a label object names its part (key-safe form)
        judged = {(o.device, o.part) for o in label_objects}
        candidates += [(k, o) for k, o in unlabelled if (o.device, o.part_id) in judged]
        log(
            f"{summary.listed} object(s): {len(candidates)} image(s) with a verdict, "
            f"{len(label_objects)} label object(s), "
            f"{sum(summary.unlabelled.values())} unlabelled, "
            f"{len(summary.skipped)} outside the layout"
        )
        step = max(1, len(candidates) // 10)

        def fetch(item: tuple[int, tuple[str, SampleObject]]) -> tuple[Path, Any]:
            i, (key, obj) = item
            dest = downloads / f"{i:07d}.{obj.ext.lower()}"
            try:
                return dest, source.fetch(key, dest)
            except Unreadable as exc:
                return dest, exc

        # boto3's clients are thread safe (boto3 guide, "Clients", multithreading); map keeps
        # the listing's order, so the result does not depend on which download ends first
        with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
            fetched = pool.map(fetch, enumerate(candidates, 1))
            for i, ((key, obj), (dest, metadata)) in enumerate(
                zip(candidates, fetched, strict=True), 1
            ):
                _take(obj, key, dest, metadata, parts, doubtful, summary)
                if i % step == 0 or i == len(candidates):
                    log(f"downloaded {i}/{len(candidates)}")
        winners = _choose(parts, doubtful, summary, verdicts)
        winners = _against_base(winners, base_records, summary)
        replaced = {r["path"] for r in summary.base_replaced}
        kept_base = [s for s in dataset.samples if s.rel not in replaced]
        present = {s.rel for s in kept_base}
        base_rows = [r.row for r in base_records if r.row["path"] in present]
        _write(staging, dataset.root, kept_base, base_rows, winners, summary)
        shutil.rmtree(downloads)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(
        f"merged {summary.used.get('good', 0)} good and {summary.used.get('defect', 0)} defect "
        f"sample(s) into {out}: {summary.merged['good']} good, {summary.merged['defect']} defect; "
        f"{len(summary.duplicates_dropped)} duplicate(s) dropped, {len(summary.skipped)} skipped"
    )
    return summary


def _read_labels(
    source: _Source,
    label_objects: Sequence[LabelObject],
    downloads: Path,
    doubtful: dict[tuple[str, str], list[str]],
    summary: Summary,
) -> dict[tuple[str, str], list[Verdict]]:
    """The verdicts of the label objects by (device, part id); a label object that cannot be
    read makes its part doubtful (its verdict may be the newest)."""

    def fetch(item: tuple[int, LabelObject]) -> tuple[LabelObject, Path, Unreadable | None]:
        i, obj = item
        dest = downloads / f"label-{i:07d}.json"
        try:
            source.fetch(obj.key, dest)
        except Unreadable as exc:
            return obj, dest, exc
        return obj, dest, None

    verdicts: dict[tuple[str, str], list[Verdict]] = {}
    summary.labels = {"listed": len(label_objects), "used": 0, "without_image": 0}
    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        for obj, dest, problem in pool.map(fetch, enumerate(label_objects, 1)):
            if problem is not None:
                summary.skip(obj.key, f"unreadable download ({problem})")
                doubtful.setdefault((obj.device, obj.part), []).append(obj.key)
                continue
            try:
                part_id, verdict = read_label(obj, dest)
            except ValueError as exc:
                summary.skip(obj.key, str(exc))
                doubtful.setdefault((obj.device, obj.part), []).append(obj.key)
                continue
            finally:
                dest.unlink(missing_ok=True)
            verdicts.setdefault((obj.device, part_id), []).append(verdict)
    return verdicts


def _take(
    obj: SampleObject,
    key: str,
    dest: Path,
    metadata: dict[str, str] | Unreadable,
    parts: dict[tuple[str, str], list[tuple[SampleObject, Path]]],
    doubtful: dict[tuple[str, str], list[str]],
    summary: Summary,
) -> None:
    """File one fetched object under its part, or report it (and its part) as doubtful."""
    if isinstance(metadata, Unreadable):
        summary.skip(key, f"unreadable download ({metadata})")
        doubtful.setdefault((obj.device, obj.part_id), []).append(key)
        return
    try:
        obj = with_metadata(obj, metadata)
    except ValueError as exc:
        summary.skip(key, str(exc))
        part_id = _decoded(metadata.get("part-id", "")) or obj.part_id
        doubtful.setdefault((obj.device, part_id), []).append(key)
        return
    parts.setdefault((obj.device, obj.part_id), []).append((obj, dest))


def _own_verdict(obj: SampleObject) -> Verdict | None:
    if not obj.labelled:
        return None
    return Verdict(obj.key, obj.layout, obj.labelled_at, obj.seq, obj.operator)


def _choose(
    parts: dict[tuple[str, str], list[tuple[SampleObject, Path]]],
    doubtful: dict[tuple[str, str], list[str]],
    summary: Summary,
    label_verdicts: Mapping[tuple[str, str], Sequence[Verdict]] | None = None,
) -> list[tuple[SampleObject, Path]]:
    """One image per part under its standing verdict (the newest of the image objects' own
    labels and the label objects'), the image any readable one of the part; see the module
    docstring."""
    label_verdicts = label_verdicts or {}
    winners = []
    for identity in sorted(set(label_verdicts) - set(parts)):
        summary.labels["without_image"] = summary.labels.get("without_image", 0) + len(
            label_verdicts[identity]
        )
    for identity in sorted(parts):
        objects = sorted(parts[identity], key=lambda o: (o[0].rank, o[0].key), reverse=True)
        if identity in doubtful:
            # an object of this part could not be read: it may hold the newest label
            for obj, _ in objects:
                summary.skip(
                    obj.key,
                    f"part {identity[1]} of {identity[0]}: another object of it was skipped "
                    f"({', '.join(doubtful[identity])}), so its newest label is unknown",
                )
            continue
        own = [v for v in (_own_verdict(o) for o, _ in objects) if v is not None]
        verdicts = sorted(
            [*own, *label_verdicts.get(identity, ())], key=lambda v: (v.rank, v.key), reverse=True
        )
        if not verdicts:  # unlabelled images only (a label object named another part)
            continue
        best = verdicts[0]
        rivals = [v for v in verdicts[1:] if v.rank == best.rank and v.layout != best.layout]
        if rivals:
            for obj, _ in objects:
                summary.skip(
                    obj.key,
                    f"part {identity[1]} of {identity[0]}: labels {best.layout} and "
                    f"{rivals[0].layout} with the same labelled-at and seq",
                )
            continue
        # the image: the standing verdict's own object first, then the others, newest first
        ordered = sorted(objects, key=lambda o: o[0].key != best.key)
        chosen: tuple[SampleObject, Path] | None = None
        problems: dict[str, str] = {}
        for obj, path in ordered:
            problem = image_problem(path)
            if problem is None:
                chosen = (obj, path)
                break
            problems[obj.key] = problem
        if chosen is None:
            for obj, _ in objects:
                summary.skip(obj.key, problems[obj.key])
            continue
        image, path = chosen
        for key, problem in problems.items():
            summary.skip(key, problem)
        for obj, _ in objects:
            if obj.key != image.key and obj.key not in problems:
                summary.duplicates_dropped.append(
                    {"key": obj.key, "kept": image.key, "device": image.device,
                     "part_id": image.part_id}
                )  # fmt: skip
        from_label = best.key in {v.key for v in label_verdicts.get(identity, ())}
        if from_label and best.layout != image.layout:  # a verdict the image did not carry
            summary.labels["used"] = summary.labels.get("used", 0) + 1
        winner = replace(
            image, layout=best.layout, labelled_at=best.labelled_at, operator=best.operator
        )
        winners.append((winner, path))
    return winners


def _against_base(
    winners: list[tuple[SampleObject, Path]],
    base_records: Sequence[_BaseRecord],
    summary: Summary,
) -> list[tuple[SampleObject, Path]]:
    """Drop a sample the base already holds with a label as new or newer; note the base images
    a newer label replaces."""
    in_base = {r.identity: r for r in base_records}
    kept = []
    for obj, path in winners:
        record = in_base.get((obj.device, obj.part_id))
        if record is None:
            kept.append((obj, path))
        elif obj.rank > record.rank:
            summary.base_replaced.append(
                {
                    "path": record.row["path"],
                    "by": obj.key,
                    "device": obj.device,
                    "part_id": obj.part_id,
                }
            )
            kept.append((obj, path))
        else:
            summary.duplicates_dropped.append(
                {
                    "key": obj.key,
                    "kept": f"base {record.row['path']}",
                    "device": obj.device,
                    "part_id": obj.part_id,
                }
            )
    return kept


def _write(
    staging: Path,
    base_root: Path,
    base_samples: Sequence[Sample],
    base_rows: Sequence[dict[str, str]],
    winners: Sequence[tuple[SampleObject, Path]],
    summary: Summary,
) -> None:
    """The merged folder: base images (and masks), samples, groups.csv, samples.csv, merge.json."""
    write_split(base_samples, base_root, staging)
    taken = {s.rel for s in base_samples}
    groups = [(s.rel, s.group) for s in base_samples if s.group is not None]
    rows = [[row[f] for f in PROVENANCE_FIELDS] for row in base_rows]
    base_types = {s.defect_type for s in base_samples if s.defect_type}
    new_types: set[str] = set()
    for obj, path in winners:
        rel = obj.out_rel
        if rel in taken:
            raise DatasetError(f"{base_root / rel}: the base already has a file named as {obj.key}")
        taken.add(rel)
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        groups.append((rel, obj.group))
        kind = "good" if obj.label == 0 else "defect"
        summary.used[kind] = summary.used.get(kind, 0) + 1
        if obj.defect_type and obj.defect_type not in base_types:
            new_types.add(obj.defect_type)
        rows.append(
            [
                rel,
                obj.device,
                obj.part_id,
                str(obj.seq),
                obj.labelled_at.isoformat().replace("+00:00", "Z") if obj.labelled_at else "",
                kind,
                obj.defect_type or "",
                obj.operator,
                obj.day,
                obj.key,
            ]
        )
    summary.used.setdefault("good", 0)
    summary.used.setdefault("defect", 0)
    summary.new_defect_types = sorted(new_types)
    if groups:
        _write_csv(staging / GROUPS_FILE, ("path", "group"), sorted(groups))
    if rows:
        _write_csv(staging / PROVENANCE_FILE, PROVENANCE_FIELDS, sorted(rows))
    merged = load_dataset(staging, min_good=0, check_images=False)
    summary.merged = {
        "good": len(merged.good),
        "defect": len(merged.defects),
        "defect_types": merged.defect_types,
        "field_images": len(rows),
        "devices": len({r[1] for r in rows}),
        "device_days": len({(r[1], r[8]) for r in rows}),
    }
    (staging / MERGE_SUMMARY).write_text(
        json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8"
    )


def field_counts(folder: Path, samples: Sequence[Sample]) -> dict[str, int] | None:
    """How many of ``samples`` (images of ``folder``) came from the field, by label; None when
    the folder records no samples (no ``samples.csv``)."""
    rows = read_provenance(folder)
    if not rows and not (folder / PROVENANCE_FILE).is_file():
        return None
    paths = {r["path"] for r in rows}
    chosen = [s for s in samples if s.rel in paths]
    return {
        "good": sum(1 for s in chosen if s.label == 0),
        "defect": sum(1 for s in chosen if s.label == 1),
    }


def merge_record(folder: Path) -> dict[str, Any] | None:
    """The counts of the merge that made ``folder`` (its ``merge.json`` without the details)."""
    path = folder / MERGE_SUMMARY
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: not a JSON object")
    doc.pop("details", None)
    return doc


def data_check_main(argv: Sequence[str] | None = None) -> int:
    """The pipeline's data check: ``--samples`` (none when empty) merged into ``--data``, then
    ``training.dataset check`` on the result; each split folder gets the merge's ``merge.json``
    and its own rows of ``samples.csv``."""
    from training.dataset import main as dataset_main

    parser = argparse.ArgumentParser(prog="sm_data_check.py", add_help=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--samples", default="", help="s3://<bucket>/samples/<plant>/ or empty")
    args, rest = parser.parse_known_args(argv)
    data = args.data
    if args.samples.strip():
        # beside --out: on SageMaker that is the job's storage volume, not the container's disk
        data = args.out.parent / f"{args.out.name}-merged"
        try:
            summary = merge_samples(args.data, args.samples.strip(), data)
        except (DatasetError, SamplesError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(summary.counts(), indent=2))
    code = dataset_main(["check", "--data", str(data), "--out", str(args.out), *rest])
    if code != 0:
        return code
    rows = read_provenance(data)
    for split in SPLITS:
        folder = args.out / split
        if (data / MERGE_SUMMARY).is_file():
            shutil.copyfile(data / MERGE_SUMMARY, folder / MERGE_SUMMARY)
        if (data / PROVENANCE_FILE).is_file():
            present = [r for r in rows if (folder / r["path"]).is_file()]
            _write_csv(
                folder / PROVENANCE_FILE,
                PROVENANCE_FIELDS,
                [[r[f] for f in PROVENANCE_FIELDS] for r in present],
            )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.merge --base <dataset> --samples <prefix|folder> --out <dir>``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.merge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", required=True, type=Path, help="base dataset folder")
    parser.add_argument(
        "--samples",
        required=True,
        help="s3://<bucket>/samples/<plant>/ (or a device's prefix below it), or a local folder "
        "laid out like it",
    )
    parser.add_argument("--out", required=True, type=Path, help="new dataset folder to write")
    parser.add_argument(
        "--summary", type=Path, help=f"also write the summary here (it is in <out>/{MERGE_SUMMARY})"
    )
    parser.add_argument(
        "--endpoint-url", help="S3 endpoint (a local stand-in; default: the AWS configuration's)"
    )
    args = parser.parse_args(argv)
    try:
        summary = merge_samples(args.base, args.samples, args.out, endpoint_url=args.endpoint_url)
    except (DatasetError, SamplesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc = summary.to_json()
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

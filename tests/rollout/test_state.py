"""The state stores: compare-and-swap on a local file and on S3 conditional writes (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from rollout.errors import StateError
from rollout.state import S3StateStore, StateConflict, StateStore

REGION, BUCKET = "eu-west-1", "lineguard-artifacts-test"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield client


def stores(kind: str, tmp_path: Path, s3: Any) -> tuple[Any, Any]:
    if kind == "file":
        return StateStore(tmp_path, "demo"), StateStore(tmp_path, "demo")
    return S3StateStore(s3, BUCKET, "demo"), S3StateStore(s3, BUCKET, "demo")


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_only_the_writer_of_the_revision_read_may_write(kind: str, tmp_path: Path, s3: Any) -> None:
    a, b = stores(kind, tmp_path, s3)
    assert a.load() is None and b.load() is None
    a.save({"status": "in_progress", "n": 1})
    # b read "nothing" too: its create loses (If-None-Match: * / revision check)
    with pytest.raises(StateConflict, match="changed by another controller"):
        b.save({"status": "in_progress", "n": 2})
    assert (b.load() or {})["n"] == 1
    a.save({"status": "in_progress", "n": 3})  # a's own revision: fine, again and again
    a.save({"status": "in_progress", "n": 4})
    with pytest.raises(StateConflict):
        b.save({"status": "in_progress", "n": 5})  # b's read is stale now (If-Match fails)
    doc = b.load()
    assert doc is not None and doc["n"] == 4
    b.save({**doc, "n": 6})  # after reading again, b may write
    with pytest.raises(StateConflict):
        a.save({"status": "in_progress", "n": 7})


def test_s3_state_lives_under_the_rollout_prefix(s3: Any) -> None:
    store = S3StateStore(s3, BUCKET, "demo")
    store.load()
    store.save({"status": "completed"})
    assert store.where == f"s3://{BUCKET}/rollout/state/demo.json"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["rollout/state/demo.json"]


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_foreign_document_is_refused(kind: str, tmp_path: Path, s3: Any) -> None:
    if kind == "file":
        (tmp_path / "demo.json").write_text('{"something": "else"}')
        store: Any = StateStore(tmp_path, "demo")
    else:
        s3.put_object(Bucket=BUCKET, Key="rollout/state/demo.json", Body=b"[1, 2]")
        store = S3StateStore(s3, BUCKET, "demo")
    with pytest.raises(StateError, match="not a rollout state file"):
        store.load()


def test_s3_retries_a_conflicting_write_and_knows_its_own_retried_put(s3: Any) -> None:
    from botocore.stub import Stubber

    store = S3StateStore(s3, BUCKET, "demo")
    store.load()
    store.save({"status": "in_progress", "n": 1})
    with Stubber(s3) as stub:  # S3's answers to a concurrent conditional write, then success
        stub.add_client_error("put_object", "ConditionalRequestConflict", "conflict", 409)
        stub.add_response("put_object", {"ETag": '"e2"'})
        store.save({"status": "in_progress", "n": 2})
    assert store._etag == '"e2"'
    # a put the SDK retried after it had succeeded: 412 on our own write is not a conflict
    mine = S3StateStore(s3, BUCKET, "demo")
    mine.load()
    doc = {"status": "in_progress", "n": 3}
    mine.save(doc)
    etag = mine._etag
    mine._etag = '"stale"'  # as if the first attempt's answer was lost
    mine.save(doc)
    assert mine._etag == etag

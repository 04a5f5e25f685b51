"""The artifact publisher's function against S3 (moto): exact copies, immutability, trees, and
the answer it sends CloudFormation."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stacks.constructs.artifact_publisher.runtime import publisher

REGION = "eu-west-1"
ASSETS, ARTIFACTS = "cdk-assets", "lineguard-artifacts-x"
KEY = "components/com.lineguard.Inspector/1.0.0/inspector.zip"


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        for bucket in (ASSETS, ARTIFACTS):
            client.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
        yield client


def event(request: str, **properties: str) -> dict[str, Any]:
    """A CloudFormation custom resource request (CloudFormation User Guide, crpg-ref-requests)."""
    return {
        "RequestType": request,
        "ResponseURL": "http://unused.invalid/",
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/LineGuard-Shared/1",
        "RequestId": "r-1",
        "LogicalResourceId": "Artifact",
        "ResourceType": "Custom::LineGuardArtifact",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:fn", **properties},
    }


def put_asset(s3: Any, key: str, data: bytes) -> dict[str, str]:
    s3.put_object(Bucket=ASSETS, Key=key, Body=data)
    return {"SourceBucket": ASSETS, "SourceKey": key, "Bucket": ARTIFACTS}


def object_props(s3: Any, data: bytes, key: str = KEY) -> dict[str, str]:
    asset = put_asset(s3, f"{hashlib.sha256(data).hexdigest()}.zip", data)
    return {**asset, "Mode": "object", "Key": key, "Sha256": hashlib.sha256(data).hexdigest()}


def body(s3: Any, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=ARTIFACTS, Key=key)["Body"].read())


def test_create_copies_the_asset_to_the_exact_key(s3: Any) -> None:
    response = publisher.handle(event("Create", **object_props(s3, b"zip-v1")), s3)
    assert response["Status"] == "SUCCESS", response["Reason"]
    assert response["PhysicalResourceId"] == f"s3://{ARTIFACTS}/{KEY}"
    assert body(s3, KEY) == b"zip-v1"
    assert publisher.existing_sha256(s3, ARTIFACTS, KEY) == hashlib.sha256(b"zip-v1").hexdigest()


def test_the_same_bytes_again_are_accepted(s3: Any) -> None:
    props = object_props(s3, b"zip-v1")
    assert publisher.handle(event("Create", **props), s3)["Status"] == "SUCCESS"
    assert publisher.handle(event("Update", **props), s3)["Status"] == "SUCCESS"
    assert body(s3, KEY) == b"zip-v1"


def test_other_bytes_under_a_published_key_fail_and_leave_the_object(s3: Any) -> None:
    assert publisher.handle(event("Create", **object_props(s3, b"zip-v1")), s3)["Status"] == (
        "SUCCESS"
    )
    response = publisher.handle(event("Update", **object_props(s3, b"zip-v2")), s3)
    assert response["Status"] == "FAILED"
    assert "already holds other bytes" in response["Reason"]
    assert "give the changed component a new version" in response["Reason"]
    assert body(s3, KEY) == b"zip-v1"


def test_an_object_without_a_checksum_is_not_overwritten(s3: Any) -> None:
    s3.put_object(Bucket=ARTIFACTS, Key=KEY, Body=b"uploaded by hand")  # no checksum recorded
    response = publisher.handle(event("Create", **object_props(s3, b"zip-v1")), s3)
    assert response["Status"] == "FAILED"
    assert "without a whole-object SHA-256 checksum" in response["Reason"]
    assert body(s3, KEY) == b"uploaded by hand"


def test_an_asset_that_is_not_what_was_synthesised_is_not_kept(s3: Any) -> None:
    props = {**object_props(s3, b"zip-v1"), "Sha256": hashlib.sha256(b"other").hexdigest()}
    response = publisher.handle(event("Create", **props), s3)
    assert response["Status"] == "FAILED"
    assert "not the" in response["Reason"]
    assert s3.list_objects_v2(Bucket=ARTIFACTS, Prefix=KEY).get("KeyCount") == 0


def test_delete_leaves_the_published_artifact(s3: Any) -> None:
    props = object_props(s3, b"zip-v1")
    publisher.handle(event("Create", **props), s3)
    request = {**event("Delete", **props), "PhysicalResourceId": f"s3://{ARTIFACTS}/{KEY}"}
    response = publisher.handle(request, s3)
    assert response["Status"] == "SUCCESS"
    assert response["PhysicalResourceId"] == f"s3://{ARTIFACTS}/{KEY}"
    assert body(s3, KEY) == b"zip-v1"


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_tree_is_unpacked_under_its_prefix_and_pruned(s3: Any) -> None:
    prefix = "datasets/sample/"
    s3.put_object(Bucket=ARTIFACTS, Key="datasets/other/keep.png", Body=b"x")
    first = put_asset(s3, "a.zip", zipped({"good/1.png": b"1", "good/2.png": b"2"}))
    assert publisher.handle(event("Create", Mode="tree", Prefix=prefix, **first), s3)["Status"] == (
        "SUCCESS"
    )
    second = put_asset(s3, "b.zip", zipped({"good/1.png": b"1b", "defect/3.png": b"3"}))
    response = publisher.handle(event("Update", Mode="tree", Prefix=prefix, **second), s3)
    assert response["Status"] == "SUCCESS"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=ARTIFACTS)["Contents"]}
    assert keys == {
        "datasets/sample/good/1.png",
        "datasets/sample/defect/3.png",
        "datasets/other/keep.png",
    }
    assert body(s3, "datasets/sample/good/1.png") == b"1b"


def test_an_unknown_mode_fails_with_its_name(s3: Any) -> None:
    response = publisher.handle(event("Create", Mode="sync", Bucket=ARTIFACTS, Key=KEY), s3)
    assert response["Status"] == "FAILED"
    assert "unknown Mode 'sync'" in response["Reason"]


def test_the_response_is_put_to_the_presigned_url_as_json() -> None:
    """CloudFormation reads a JSON body PUT to the pre-signed URL (crpg-ref-responses)."""
    received: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers["Content-Length"])
            received["body"] = json.loads(self.rfile.read(length))
            received["content_type"] = self.headers.get("Content-Type")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    response = {
        "Status": "SUCCESS",
        "Reason": "ok",
        "PhysicalResourceId": "s3://b/k",
        "StackId": "s",
        "RequestId": "r",
        "LogicalResourceId": "l",
        "Data": {"Sha256": "ab"},
    }
    publisher.send_response(f"http://127.0.0.1:{server.server_port}/signed?x=1", response)
    thread.join(5)
    server.server_close()
    assert received["body"] == response
    assert received["content_type"] == ""

"""Custom resource: copy a CDK asset into the artifact bucket at an exact key, never over other bytes.

Runs in AWS Lambda (Python standard library and the runtime's boto3). CloudFormation sends
Create/Update/Delete with the resource's properties; the function answers on the pre-signed
``ResponseURL`` (custom resource request and response objects, CloudFormation User Guide
crpg-ref-requests.html / crpg-ref-responses.html). Every outcome, failures included, is answered:
an unanswered request leaves the stack waiting for an hour.

Properties:
    Mode            ``object``: one file to ``Bucket``/``Key``, immutable once there;
                    ``tree``: a zipped directory unpacked under ``Bucket``/``Prefix``, which the
                    resource owns (objects not in the archive are deleted)
    SourceBucket, SourceKey   the CDK asset
    Sha256          (object) hex SHA-256 of the file, computed at synth

Object mode is for component artifacts and the training code: a component version's recipe
carries its artifact's digest, and devices refuse bytes that do not match it (nucleus
``ArtifactDownloader``: "Artifact contents may have changed after component version was
created"). So an existing object is never replaced: the same bytes are accepted, other bytes fail
the deployment with a message that says to bump the version. S3's own SHA-256 checksum of the
object (``ChecksumMode=ENABLED``) is what identifies the bytes. Delete leaves the objects: the
component versions that name them are retained too.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.request
import zipfile
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)
MAX_REASON = 1000  # the whole response object must stay under 4 KB


class PublishError(Exception):
    """The artifact cannot be published; the message reaches the CloudFormation event."""


def _hex_from_b64(value: str) -> str:
    return base64.b64decode(value).hex()


def existing_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """Hex SHA-256 of ``s3://bucket/key`` as S3 recorded it, or ``None`` when there is no object.

    Listing (``s3:ListBucket`` on exactly this prefix) tells absent from forbidden: without it,
    HeadObject answers 403 for a missing key.
    """
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    if not any(item.get("Key") == key for item in listed):
        return None
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    checksum = head.get("ChecksumSHA256") or ""
    # a multipart upload's checksum is a checksum of part checksums, written "<b64>-<parts>"
    if not checksum or "-" in checksum:
        raise PublishError(
            f"s3://{bucket}/{key} exists without a whole-object SHA-256 checksum, so it cannot be "
            "told apart from other bytes; remove it or publish under a new version"
        )
    return _hex_from_b64(checksum)


def publish_object(s3: Any, props: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Copy the asset to ``Bucket``/``Key`` unless that key already holds exactly these bytes."""
    bucket, key, sha = props["Bucket"], props["Key"], props["Sha256"]
    physical = f"s3://{bucket}/{key}"
    found = existing_sha256(s3, bucket, key)
    if found == sha:
        LOG.info("%s already holds sha256 %s", physical, sha)
        return physical, {"Sha256": sha}
    if found is not None:
        raise PublishError(
            f"{physical} already holds other bytes (sha256 {found[:16]}…, this deployment "
            f"has {sha[:16]}…): a published component version is immutable; give the changed "
            "component a new version"
        )
    result = s3.copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": props["SourceBucket"], "Key": props["SourceKey"]},
        ChecksumAlgorithm="SHA256",
    )
    copied = _hex_from_b64(result.get("CopyObjectResult", {}).get("ChecksumSHA256", "") or "")
    if copied != sha:
        s3.delete_object(Bucket=bucket, Key=key)
        raise PublishError(
            f"the asset s3://{props['SourceBucket']}/{props['SourceKey']} has sha256 "
            f"{copied[:16]}…, not the {sha[:16]}… synthesised; {physical} was not kept"
        )
    LOG.info("copied to %s (sha256 %s)", physical, sha)
    return physical, {"Sha256": sha}


def publish_tree(s3: Any, props: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Unpack the zipped asset under ``Prefix`` and delete what the archive no longer has."""
    bucket, prefix = props["Bucket"], props["Prefix"]
    body = s3.get_object(Bucket=props["SourceBucket"], Key=props["SourceKey"])["Body"].read()
    wanted: set[str] = set()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            key = prefix + info.filename
            wanted.add(key)
            s3.put_object(
                Bucket=bucket, Key=key, Body=archive.read(info), ChecksumAlgorithm="SHA256"
            )
    stale = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        stale += [item["Key"] for item in page.get("Contents", []) if item["Key"] not in wanted]
    for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1,000 keys
        batch = [{"Key": k} for k in stale[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    LOG.info("s3://%s/%s: %d objects, %d stale removed", bucket, prefix, len(wanted), len(stale))
    return f"s3://{bucket}/{prefix}", {"Objects": str(len(wanted))}


MODES: dict[str, Callable[[Any, dict[str, Any]], tuple[str, dict[str, str]]]] = {
    "object": publish_object,
    "tree": publish_tree,
}


def _physical_id(props: dict[str, Any]) -> str:
    return f"s3://{props.get('Bucket', '')}/{props.get('Key') or props.get('Prefix', '')}"


def handle(event: dict[str, Any], s3: Any, log_stream: str = "") -> dict[str, Any]:
    """Process one CloudFormation request; return the response object (never raises)."""
    props = dict(event.get("ResourceProperties") or {})
    physical = event.get("PhysicalResourceId") or _physical_id(props)
    status, reason = "SUCCESS", ""
    data: dict[str, str] = {}
    try:
        if event["RequestType"] in ("Create", "Update"):
            mode = MODES.get(str(props.get("Mode")))
            if mode is None:
                raise PublishError(f"unknown Mode {props.get('Mode')!r} (object or tree)")
            physical, data = mode(s3, props)
        # Delete: nothing to do, published artifacts stay (see the module docstring)
    except Exception as exc:  # noqa: BLE001 - every failure must be answered, see above
        LOG.exception("publishing %s failed", physical)
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"[:MAX_REASON]
    return {
        "Status": status,
        "Reason": reason or f"see CloudWatch log stream {log_stream}",
        "PhysicalResourceId": physical,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": data,
    }


def send_response(url: str, response: dict[str, Any]) -> None:
    """PUT the response to the pre-signed URL (an empty content type, as the URL was signed)."""
    body = json.dumps(response).encode()
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - CloudFormation's URL
        LOG.info("response %s sent: HTTP %s", response["Status"], reply.status)


def handler(event: dict[str, Any], context: Any) -> None:
    """Lambda entry point."""
    import boto3

    response = handle(event, boto3.client("s3"), getattr(context, "log_stream_name", ""))
    send_response(event["ResponseURL"], response)

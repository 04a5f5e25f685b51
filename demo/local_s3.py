"""The demo's local S3 and the cloud half of the token exchange service: a moto server.

The demo's devices upload their retraining samples (docs/sample-uploads.md) as a plant's do:
the inspector's boto3 takes credentials from the nucleus stand-in's token exchange service
(``core_device.tes``), whose cloud half — the IoT credentials provider — is STS AssumeRole of
the plant's token exchange role, here on the same moto server. The devices find the server by
``AWS_ENDPOINT_URL_S3`` in the nucleus' environment, which components inherit (the nucleus
starts every lifecycle process from its own environment, ``core_device.lifecycle``); botocore
reads that variable for S3 clients ("Service-specific endpoints", AWS SDKs and Tools reference
guide). moto accepts any signed request here: the policy of the token exchange role is checked
by the authorization tests (tests/stacks/test_authorization.py), not by the demo.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

REGION = "eu-west-1"
BUCKET = "lineguard-demo-artifacts"
ROLE = "lineguard-demo-token-exchange"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_S3"
KEYS = {"aws_access_key_id": "demo", "aws_secret_access_key": "demo"}  # moto takes any


@dataclass(frozen=True)
class Uploaded:
    """What the devices stored under ``samples/<plant>/``: objects and bytes per layout."""

    objects: int
    bytes: int
    layouts: dict[str, int]
    labels: int = 0  # label objects (``<device>/labels/``): verdicts, not samples

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "bytes": self.bytes,
            "layouts": self.layouts,
            "labels": self.labels,
        }


class LocalS3:
    """A moto server on loopback with the demo's bucket and token exchange role."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self.role_arn = ""

    def start(self) -> LocalS3:
        # the server's request log (werkzeug's) is not the demo's output
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto's state lives in the process, not the server: start from an empty account
        urllib.request.urlopen(  # noqa: S310 - the loopback server just started
            urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()
        self.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "credentials.iot.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = self.client("iam").create_role(
            RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust)
        )
        self.role_arn = str(role["Role"]["Arn"])
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint, **KEYS)

    def credentials_for(self, thing: str) -> Any:
        """The token exchange service's cloud half for one device (its thing name)."""
        from core_device.tes import StsCredentialSource

        return StsCredentialSource(self.client("sts"), self.role_arn, thing)

    @contextlib.contextmanager
    def as_devices_endpoint(self) -> Iterator[None]:
        """The nucleus' environment names this server for S3 while the devices run."""
        before = os.environ.get(ENDPOINT_VARIABLE)
        os.environ[ENDPOINT_VARIABLE] = self.endpoint
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(ENDPOINT_VARIABLE, None)
            else:
                os.environ[ENDPOINT_VARIABLE] = before

    def uploaded(self, plant: str) -> Uploaded:
        """The objects under ``samples/<plant>/``, counted by layout (``good``, ``defect/<type>``,
        ``unlabelled/<decision>``: the key's part between the device and the file)."""
        layouts: Counter[str] = Counter()
        objects = size = labels = 0
        pages = self.client("s3").get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=BUCKET, Prefix=f"samples/{plant}/"):
            for item in page.get("Contents", []):
                parts = str(item["Key"]).split("/")
                if parts[3:-1] == ["labels"]:  # a verdict, beside the images
                    labels += 1
                    continue
                layouts["/".join(parts[3:-1])] += 1
                objects += 1
                size += int(item["Size"])
        return Uploaded(objects, size, dict(sorted(layouts.items())), labels)

    def samples_url(self, plant: str) -> str:
        return f"s3://{BUCKET}/samples/{plant}/"

"""The demo's turn of the loop: its local S3 (a moto server), the token exchange service's cloud
half there, and the merge of what the devices uploaded into the next version's data."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from demo.__main__ import Steps, _retrain_from_field
from demo.local_s3 import BUCKET, ENDPOINT_VARIABLE, LocalS3


@pytest.fixture()
def s3() -> Iterator[LocalS3]:
    local = LocalS3().start()
    yield local
    local.stop()


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (32, 32), value).save(out, format="PNG")
    return out.getvalue()


def _put(s3: LocalS3, device: str, layout: str, part: str, seq: int, body: bytes) -> None:
    """One sample as the uploader stores it (docs/sample-uploads.md): key and user metadata."""
    label = "" if layout.startswith("unlabelled") else layout.split("/")[0]
    metadata = {"part-id": part, "seq": str(seq), "device": device, "plant": "demo",
                "decision": "reject", "label": label or "none",
                **({"labelled-at": "2026-12-01T10:00:00.000Z", "operator": "demo-operator"}
                   if label else {}),
                **({"defect-type": layout.split("/")[1]} if layout.startswith("defect/") else {})}  # fmt: skip
    s3.client("s3").put_object(
        Bucket=BUCKET, Key=f"samples/demo/{device}/{layout}/20261201_{part}_{seq}.png",
        Body=body, Metadata=metadata,
    )  # fmt: skip


def _base(root: Path) -> Path:
    for i in range(6):
        (root / "good").mkdir(parents=True, exist_ok=True)
        Image.new("L", (32, 32), 100 + i).save(root / "good" / f"g{i}.png")
    (root / "defect" / "crack").mkdir(parents=True)
    Image.new("L", (32, 32), 5).save(root / "defect" / "crack" / "d0.png")
    return root


def test_the_labelled_uploads_join_the_base_and_the_unlabelled_are_counted(
    s3: LocalS3, tmp_path: Path
) -> None:
    device = "demo-line-1-final-check"
    _put(s3, device, "defect/crack", "cam0-a-000001", 11, _png(20))
    _put(s3, device, "good", "cam0-a-000002", 12, _png(120))
    _put(s3, device, "unlabelled/reject", "cam0-a-000003", 13, _png(60))
    # the verdict on the released reject, given after its image went: a label object
    verdict = {
        "device": device, "part_id": "cam0-a-000003", "seq": 14, "result_seq": 13,
        "revision": 1, "label": "defect", "defect_type": "crack", "operator": "alice",
        "labelled_at": "2026-12-01T09:00:00.000Z",
    }  # fmt: skip
    s3.client("s3").put_object(
        Bucket=BUCKET, Key=f"samples/demo/{device}/labels/20261201_cam0-a-000003_13_r1.json",
        Body=json.dumps(verdict).encode(),
    )  # fmt: skip
    base = _base(tmp_path / "base")
    (tmp_path / "logs").mkdir()
    field = _retrain_from_field(
        s3, "demo", base, {"review": {"labels": [{}, {}]}}, tmp_path, tmp_path / "logs", Steps(1)
    )
    assert field["bucket_url"] == f"s3://{BUCKET}/samples/demo/"
    assert field["uploaded"]["layouts"] == {"defect/crack": 1, "good": 1, "unlabelled/reject": 1}
    assert field["uploaded"]["objects"] == 3 and field["labels_reviewed"] == 2
    assert field["uploaded"]["labels"] == 1
    assert field["merge"]["used"] == {"defect": 2, "good": 1}
    assert field["merge"]["unlabelled"] == {"reject": 1}
    merged = Path(field["data"])
    assert len(list((merged / "good").glob("*.png"))) == 7  # the base's 6 and the labelled one
    assert len(list((merged / "defect" / "crack").glob("*.png"))) == 3  # and the late verdict
    assert json.loads((merged / "merge.json").read_text())["used"] == field["merge"]["used"]


def test_a_device_gets_credentials_of_the_token_exchange_role_and_finds_the_server(
    s3: LocalS3,
) -> None:
    status, body = s3.credentials_for("demo-line-1-press-out").fetch()
    assert status == 200
    # the credentials provider's answer, which the service translates for the component
    credentials = json.loads(body)["credentials"]
    assert {"accessKeyId", "secretAccessKey", "sessionToken", "expiration"} <= set(credentials)
    before = os.environ.get(ENDPOINT_VARIABLE)
    with s3.as_devices_endpoint():
        assert os.environ[ENDPOINT_VARIABLE] == s3.endpoint
    assert os.environ.get(ENDPOINT_VARIABLE) == before

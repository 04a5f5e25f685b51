"""The sample uploader against S3 over HTTP: boto3 → a moto server that checks IAM policies,
with credentials from the token exchange service stand-in (core_device/tes.py) — layout, keys,
metadata, the hold for a verdict, the hourly budget, an outage, a refusal, and a restart while a
PutObject is in flight."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from core_device.tes import StsCredentialSource, TokenExchangeService
from inspector.journal import Journal
from inspector.messages import Identity
from inspector.uploader import BotoObjectStore, Uploader, classify, image_type, safe_part_id
from tests.inspector.test_labels_journal import give
from tests.inspector.test_labels_journal import result as labels_result
from tests.support.s3_cloud import REGION, Relay, S3Cloud

REPO = Path(__file__).resolve().parents[2]
PLANT, DEVICE = "p1", "dev-1"
IDENTITY = Identity(PLANT, "l1", "s1", DEVICE)
TOKEN = "svcuid-of-the-inspector"
TS = "2026-11-28T23:59:59.500Z"  # the results' time: the key's day is the result's, not now
RESULT_TIME = datetime(2026, 11, 28, 23, 59, 59, 500_000, tzinfo=UTC).timestamp()
PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 2000
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 3000


@pytest.fixture(scope="module")
def cloud() -> Iterator[S3Cloud]:
    cloud = S3Cloud()
    yield cloud
    cloud.stop()


class Device:
    """One device's journal, its token exchange service and where its samples go."""

    def __init__(self, cloud: S3Cloud, tmp: Path, bucket: str, role_thing: str) -> None:
        self.cloud = cloud
        self.bucket = bucket
        self.s3 = cloud.client("s3")
        self.s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        self.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        role = cloud.device_role(PLANT, role_thing, bucket)
        self.tes = TokenExchangeService(
            StsCredentialSource(cloud.provider_sts(), role, role_thing),
            component_for_token=lambda t: "com.lineguard.Inspector" if t == TOKEN else None,
        ).start()
        self.journal_path = tmp / "journal.db"
        self.journal = Journal(
            self.journal_path, device=DEVICE, cap_bytes=64 << 20, clock=lambda: 1000.0
        )
        self.now = RESULT_TIME + 60.0

    def env(self) -> dict[str, str]:
        """What the nucleus gives the component: the TES URI and its token, nothing else."""
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.tes.uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        }

    def uploader(self, endpoint: str | None = None, **kw: Any) -> Uploader:
        return Uploader(
            self.journal,
            IDENTITY,
            BotoObjectStore(self.bucket, endpoint_url=endpoint or self.cloud.endpoint),
            clock=lambda: self.now,
            **{"bytes_per_hour": 1 << 30, **kw},
        )

    def sample(self, part: str, decision: str, data: bytes, score: float = 0.15) -> int:
        result = {**labels_result(part, decision, score), "ts": TS}
        (seq,) = self.journal.append_many([result], review=("manual", "reject"))
        result["seq"] = seq
        self.journal.add_sample(
            part_id=part, reason=decision, data=data, score=score, seq=seq, result=result
        )
        return seq

    def keys(self) -> dict[str, int]:
        """Every key in the bucket → how many versions it has."""
        out: dict[str, int] = {}
        for version in self.s3.list_object_versions(Bucket=self.bucket).get("Versions", []):
            out[version["Key"]] = out.get(version["Key"], 0) + 1
        return out

    def close(self) -> None:
        self.journal.close()
        self.tes.stop()


@pytest.fixture
def device(
    cloud: S3Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any
) -> Iterator[Device]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    bucket = "lg-" + request.node.name.replace("_", "-")[:40].strip("-").lower()
    role_thing = getattr(request, "param", DEVICE)
    dev = Device(cloud, tmp_path, bucket, role_thing)
    for key, value in dev.env().items():
        monkeypatch.setenv(key, value)
    with cloud.enforced():
        yield dev
    dev.close()


def drain(uploader: Uploader, limit: int = 50) -> list[float]:
    """Step until the uploader has nothing it may send now; the waits it asked for."""
    waits = []
    for _ in range(limit):
        delay = uploader.step()
        if delay:
            waits.append(delay)
            if uploader.stats.state != "uploading":
                return waits
    return waits


def test_samples_land_in_the_dataset_layout_with_their_labels(device: Device) -> None:
    j = device.journal
    good = device.sample("part/7 ü", "manual", PNG)
    give(j, "part/7 ü", "good")
    scratch = device.sample("b", "reject", JPEG, 0.3)
    give(j, "b", "defect", defect_type="scratch")
    untyped = device.sample("c", "manual", PNG)
    give(j, "c", "defect")
    near = device.sample("d", "pass", PNG, 0.19)  # a near-threshold pass: no review, goes at once
    uploader = device.uploader()
    drain(uploader)
    prefix = f"samples/{PLANT}/{DEVICE}"
    day = "20261128"  # the result's day (UTC), though uploaded the next day
    assert device.keys() == {
        f"{prefix}/good/{day}_part-7--_{good}.png": 1,
        f"{prefix}/defect/scratch/{day}_b_{scratch}.jpg": 1,
        f"{prefix}/defect/{day}_c_{untyped}.png": 1,
        f"{prefix}/unlabelled/pass/{day}_d_{near}.png": 1,
        # every verdict also goes on its own (a later one would otherwise never reach S3)
        f"{prefix}/labels/{day}_part-7--_{good}_r1.json": 1,
        f"{prefix}/labels/{day}_b_{scratch}_r1.json": 1,
        f"{prefix}/labels/{day}_c_{untyped}_r1.json": 1,
    }
    verdict = json.loads(
        device.s3.get_object(
            Bucket=device.bucket, Key=f"{prefix}/labels/{day}_b_{scratch}_r1.json"
        )["Body"].read()
    )
    assert verdict["part_id"] == "b" and verdict["result_seq"] == scratch
    assert (verdict["label"], verdict["defect_type"], verdict["revision"]) == (
        "defect",
        "scratch",
        1,
    )
    assert verdict["labelled_at"] == "2027-01-15T08:00:00.000Z" and verdict["result_ts"] == TS
    head = device.s3.head_object(
        Bucket=device.bucket, Key=f"{prefix}/defect/scratch/{day}_b_{scratch}.jpg"
    )
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == {
        "part-id": "b", "seq": str(scratch), "decision": "reject", "score": "0.3",
        "model-version": "tiny@1.0.0", "label": "defect", "defect-type": "scratch",
        "operator": "alice", "labelled-at": "2027-01-15T08:00:00.000Z",
        "device": DEVICE, "plant": PLANT, "line": "l1", "station": "s1",
    }  # fmt: skip
    meta = device.s3.head_object(
        Bucket=device.bucket, Key=f"{prefix}/good/{day}_part-7--_{good}.png"
    )["Metadata"]
    # non-ASCII goes RFC 2047-encoded, as S3 takes and returns it
    assert str(make_header(decode_header(meta["part-id"]))) == "part/7 ü"
    assert meta["label"] == "good"
    meta = device.s3.head_object(
        Bucket=device.bucket, Key=f"{prefix}/unlabelled/pass/{day}_d_{near}.png"
    )["Metadata"]
    assert meta["label"] == "none" and "operator" not in meta and "defect-type" not in meta
    assert j.stats().samples == 0  # each left the journal once S3 had it
    stored = device.keys()
    label_bytes = sum(
        device.s3.head_object(Bucket=device.bucket, Key=k)["ContentLength"]
        for k in stored
        if k.endswith(".json")
    )
    assert uploader.stats.uploaded == 4 and uploader.stats.labels == 3
    assert uploader.stats.uploaded_bytes == 3 * len(PNG) + len(JPEG) + label_bytes


def test_a_part_waiting_for_a_verdict_is_held_until_labelled_or_the_shift_is_over(
    device: Device,
) -> None:
    waiting = device.sample("w", "manual", PNG)
    late = device.sample("l", "reject", PNG, 0.3)
    uploader = device.uploader(hold_s=8 * 3600)
    waits = drain(uploader)
    assert device.keys() == {} and uploader.stats.held == 2 and uploader.stats.state == "held"
    assert waits[-1] == 5.0  # it looks again for a verdict every idle_s, sending nothing
    give(device.journal, "w", "good")  # labelled: the label travels with the image, at once
    drain(uploader)
    assert set(device.keys()) == {
        f"samples/{PLANT}/{DEVICE}/good/20261128_w_{waiting}.png",
        f"samples/{PLANT}/{DEVICE}/labels/20261128_w_{waiting}_r1.json",
    }
    device.now = RESULT_TIME + 8 * 3600 + 1  # the shift is over: it goes without a label
    drain(uploader)
    assert f"samples/{PLANT}/{DEVICE}/unlabelled/reject/20261128_l_{late}.png" in set(device.keys())
    assert device.journal.stats().samples == 0


def test_the_hourly_budget_holds_across_restarts(device: Device) -> None:
    for i in range(5):
        device.sample(f"s{i}", "pass", PNG, 0.19)
    budget = int(len(PNG) * 2.5)  # two samples an hour
    device.now = 3600 * 500_000 + 10.0  # early in a clock hour
    uploader = device.uploader(bytes_per_hour=budget)
    waits = drain(uploader)
    assert len(device.keys()) == 2 and uploader.stats.state == "over_budget"
    assert waits[-1] == pytest.approx(3600 - 10.0, abs=0.01)  # until the next clock hour
    # a restart in the same hour (a crash loop) finds the hour's bytes in the journal
    again = device.uploader(bytes_per_hour=budget)
    drain(again)
    assert len(device.keys()) == 2 and device.journal.upload_hour() == (500_000, 2 * len(PNG))
    device.now += 3600  # the next hour: two more
    drain(again)
    assert len(device.keys()) == 4 and device.journal.stats().samples == 1


def test_offline_samples_wait_with_backoff_and_all_go_when_back(device: Device) -> None:
    relay = Relay(device.cloud.upstream).start()
    seqs = [device.sample(f"o{i}", "pass", PNG, 0.19) for i in range(3)]
    uploader = device.uploader(endpoint=relay.url, backoff_min_s=1.0, backoff_max_s=8.0)
    relay.stop()  # S3 unreachable: the device is offline
    waits = [uploader.step() for _ in range(6)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # exponential, capped
    assert device.journal.stats().samples == 3 and uploader.stats.state == "offline"
    assert uploader.stats.last_error is not None and uploader.stats.last_error.startswith(
        "transient"
    )
    relay.start()  # back on the same address
    drain(uploader)
    assert sorted(device.keys()) == sorted(
        f"samples/{PLANT}/{DEVICE}/unlabelled/pass/20261128_o{i}_{s}.png"
        for i, s in enumerate(seqs)
    )
    assert device.journal.stats().samples == 0 and uploader.stats.last_error is None
    relay.stop()


@pytest.mark.parametrize("device", ["dev-9"], indirect=True)  # credentials of another device's role
def test_a_refusal_is_reported_and_does_not_spin(device: Device) -> None:
    device.sample("r", "pass", PNG, 0.19)
    uploader = device.uploader(permanent_pause_s=900.0)
    assert uploader.step() == 900.0  # one request, then a long pause
    assert uploader.stats.state == "refused" and uploader.stats.failures == 1
    assert (
        uploader.stats.last_error is not None and "AccessDenied (403)" in uploader.stats.last_error
    )
    assert device.journal.stats().samples == 1 and device.keys() == {}
    figures = uploader.figures()
    assert figures["waiting"] == 1 and figures["last_error"].startswith("permanent")


def test_no_token_exchange_service_means_samples_wait(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    device.sample("n", "pass", PNG, 0.19)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "not-a-component")  # TES answers 403
    uploader = device.uploader()
    assert uploader.step() == 1.0
    assert uploader.stats.last_error is not None and uploader.stats.last_error.startswith(
        "credentials"
    )
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", TOKEN)  # the client is built afresh
    drain(uploader)
    assert device.journal.stats().samples == 0 and len(device.keys()) == 1


def test_a_restart_mid_upload_resends_that_sample_to_the_same_key(device: Device) -> None:
    sizes = [200_000, 150_000, 120_000, 90_000]
    seqs = [
        device.sample(f"k{i}", "pass", PNG[:8] + os.urandom(n), 0.19) for i, n in enumerate(sizes)
    ]
    device.journal.close()
    slow = Relay(device.cloud.upstream, rate=100_000).start()  # 100 kB/s: a transfer takes seconds
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'edge_component'}"}
    argv = [
        sys.executable,
        "-m",
        "tests.support.upload_worker",
        str(device.journal_path),
        device.bucket,
    ]
    first = subprocess.Popen([*argv, slow.url, PLANT, DEVICE], env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while sum(slow.sent) < 60_000:  # the first PutObject is under way, about a third sent
        assert first.poll() is None and time.monotonic() < deadline, (
            "the first upload never started"
        )
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    sent_before_kill = sum(slow.sent)
    slow.stop()
    assert sent_before_kill < sizes[0]  # killed mid-transfer: S3 never had the whole body
    fast = Relay(device.cloud.upstream).start()
    started = time.monotonic()
    second = subprocess.run([*argv, fast.url, PLANT, DEVICE], env=env, cwd=REPO, timeout=120,
                            capture_output=True, text=True)  # fmt: skip
    seconds = time.monotonic() - started
    fast.stop()
    assert second.returncode == 0, second.stderr
    keys = device.keys()
    assert keys == {
        f"samples/{PLANT}/{DEVICE}/unlabelled/pass/20261128_k{i}_{s}.png": 1
        for i, s in enumerate(seqs)
    }
    journal = Journal(device.journal_path, device=DEVICE, cap_bytes=64 << 20)
    assert journal.stats().samples == 0
    journal.close()
    print(
        f"\nrestart mid-upload: {len(sizes)} samples ({sum(sizes)} bytes), killed with "
        f"{sent_before_kill} bytes of the first PutObject sent; the new process sent that sample "
        f"again to the same key and the rest in {seconds:.2f} s (process start included); "
        f"bytes sent twice: {sent_before_kill} (one transfer); every key once, none left"
    )


def test_errors_are_classified_as_the_service_means_them() -> None:
    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "PutObject",
        )

    assert classify(client_error("AccessDenied", 403)) == "permanent"
    assert classify(client_error("NoSuchBucket", 404)) == "permanent"
    assert classify(client_error("InternalError", 500)) == "transient"
    assert classify(client_error("SlowDown", 503)) == "transient"
    assert classify(client_error("ExpiredToken", 400)) == "credentials"
    assert classify(NoCredentialsError()) == "credentials"
    assert classify(EndpointConnectionError(endpoint_url="http://x")) == "transient"
    assert classify(ValueError("a bug")) == "permanent"
    assert image_type(PNG) == ("png", "image/png") and image_type(b"BM..") == ("bmp", "image/bmp")
    assert image_type(b"<html>") == ("bin", "application/octet-stream")
    assert safe_part_id("../a b/ü.png") == "..-a-b--.png" and safe_part_id("") == "-"


def test_the_service_uploads_its_samples_and_reports_them_in_health(
    device: Device, tmp_path: Path, tiny_package_dir: Path
) -> None:
    from inspector import service
    from inspector.transports.file import UPSTREAM_FILE, read_jsonl
    from tests.inspector.test_service import base_args, make_images

    make_images(tmp_path / "images")
    argv = [*base_args(tmp_path, tmp_path / "images", tiny_package_dir), "--journal",
            str(tmp_path / "svc.db"), "--upload-bucket", device.bucket,
            "--upload-endpoint", device.cloud.endpoint]  # fmt: skip
    settings = service.parse_settings(argv)
    running = service.Service(settings, service.make_transport(settings.args, "dev-1"))
    assert running.uploader is not None
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    out = tmp_path / "out" / UPSTREAM_FILE
    deadline = time.monotonic() + 60

    def reported() -> list[dict[str, Any]]:
        lines = read_jsonl(out) if out.exists() else []
        return [m["payload"]["uploads"] for m in lines if m["topic"].endswith("/health")]

    # no review station runs, so nothing waits for a verdict: both samples go at once
    while sum(u["uploaded"] for u in reported() if u) < 2:
        assert time.monotonic() < deadline and thread.is_alive(), reported()
        time.sleep(0.1)
    running.stop.set()
    thread.join(30)
    keys = sorted(device.keys())
    assert [k.split("/")[3:5] for k in keys] == [["unlabelled", "manual"], ["unlabelled", "reject"]]
    assert all(k.startswith("samples/p1/dev-1/unlabelled/") for k in keys)
    assert "_c-band.png_" in keys[0] and "_b-reject.png_" in keys[1]
    last = [u for u in reported() if u][-1]
    assert set(last) == {
        "uploaded",
        "uploaded_bytes",
        "failures",
        "waiting",
        "held",
        "state",
        "last_error",
    }


def test_held_samples_go_unlabelled_before_the_disk_cap_would_evict_them(device: Device) -> None:
    seqs = [device.sample(f"h{i}", "reject", PNG, 0.3) for i in range(4)]
    total = 4 * len(PNG)
    roomy = device.uploader(sample_cap_bytes=2 * total)
    drain(roomy)
    assert device.keys() == {} and roomy.stats.held == 4  # half full: they wait for a verdict
    tight = device.uploader(sample_cap_bytes=int(total / 0.8))  # 80 % full: the oldest go
    assert tight.step() == 0.0
    assert set(device.keys()) == {
        f"samples/{PLANT}/{DEVICE}/unlabelled/reject/20261128_h0_{seqs[0]}.png"
    }
    drain(tight)
    assert len(device.keys()) == 1  # then 60 % full, under the mark: the rest wait again
    assert tight.stats.held == 3


def test_the_retraining_merge_reads_what_the_uploader_wrote(device: Device, tmp_path: Path) -> None:
    from tests.support.tiny_model import image_bytes, part_image
    from training.merge import merge_samples

    j = device.journal
    device.sample("part/7 ü", "manual", image_bytes(part_image(0.15)))
    give(j, "part/7 ü", "good")
    device.sample("b", "reject", image_bytes(part_image(0.3), "JPEG"), 0.3)
    give(j, "b", "defect", defect_type="scratch")
    device.sample("d", "pass", image_bytes(part_image(0.19)), 0.19)
    # a sample kept without its result's seq: named s<id>, unlabelled only
    nameless = j.add_sample(part_id="e", reason="pass", data=image_bytes(part_image(0.2)))
    drain(device.uploader())
    stored = device.keys()
    assert f"samples/{PLANT}/{DEVICE}/unlabelled/pass/19700101_e_s{nameless}.png" in stored
    base = tmp_path / "base"
    (base / "good").mkdir(parents=True)
    (base / "good" / "g.png").write_bytes(image_bytes(part_image(0.0)))
    summary = merge_samples(
        base, f"s3://{device.bucket}/samples/{PLANT}/", tmp_path / "merged",
        s3_client=device.s3, log=lambda _: None,
    )  # fmt: skip
    assert summary.skipped == [] and summary.unlabelled == {"pass": 2}
    assert summary.labels == {"listed": 2, "used": 0, "without_image": 0}
    assert sum(summary.used.values()) == 2
    merged = {
        p.relative_to(tmp_path / "merged").parts[0] for p in (tmp_path / "merged").rglob("*.*")
    }
    assert {"good", "defect"} <= merged
    scratch = list((tmp_path / "merged" / "defect" / "scratch").iterdir())
    assert len(scratch) == 1 and scratch[0].name.startswith(f"{DEVICE}_20261128_b_")
    provenance = (tmp_path / "merged" / "samples.csv").read_text()
    assert "part/7 ü" in provenance and "alice" in provenance  # the metadata, decoded


def merged_parts(device: Device, tmp_path: Path, name: str) -> dict[str, dict[str, str]]:
    """Merge the device's bucket into a one-image base; the merged field samples by part id."""
    import csv

    from tests.support.tiny_model import image_bytes, part_image
    from training.merge import merge_samples

    base = tmp_path / f"{name}-base"
    (base / "good").mkdir(parents=True)
    (base / "good" / "g.png").write_bytes(image_bytes(part_image(0.0)))
    out = tmp_path / name
    summary = merge_samples(
        base, f"s3://{device.bucket}/samples/{PLANT}/", out, s3_client=device.s3,
        log=lambda _: None,
    )  # fmt: skip
    assert summary.skipped == []
    if not (out / "samples.csv").exists():  # no field sample trained on
        return {}
    with (out / "samples.csv").open(newline="", encoding="utf-8") as handle:
        return {row["part_id"]: row for row in csv.DictReader(handle)}


def test_a_verdict_corrected_after_the_upload_reaches_training(
    device: Device, tmp_path: Path
) -> None:
    from tests.support.tiny_model import image_bytes, part_image

    j = device.journal
    data = image_bytes(part_image(0.3))
    seq = device.sample("m", "manual", data)
    give(j, "m", "good")  # a mis-tap: the image goes as good
    uploader = device.uploader()
    drain(uploader)
    assert merged_parts(device, tmp_path, "before")["m"]["label"] == "good"
    assert j.stats().samples == 0  # the image has left the device
    give(j, "m", "defect", defect_type="scratch")  # corrected on the review station
    # a restart: the cursor is in the journal, the first verdict is not sent again
    j.close()
    device.journal = j = Journal(device.journal_path, device=DEVICE, cap_bytes=64 << 20)
    again = device.uploader()
    drain(again)
    prefix = f"samples/{PLANT}/{DEVICE}"
    assert device.keys() == {
        f"{prefix}/good/20261128_m_{seq}.png": 1,
        f"{prefix}/labels/20261128_m_{seq}_r1.json": 1,
        f"{prefix}/labels/20261128_m_{seq}_r2.json": 1,
    }
    assert again.stats.labels == 1 and j.label_uploads() == []
    row = merged_parts(device, tmp_path, "after")["m"]
    assert (row["label"], row["defect_type"]) == ("defect", "scratch")
    assert row["path"].startswith("defect/scratch/") and row["key"].endswith(
        f"/good/20261128_m_{seq}.png"
    )


def test_a_verdict_given_after_the_hold_released_the_image_reaches_training(
    device: Device, tmp_path: Path
) -> None:
    from tests.support.tiny_model import image_bytes, part_image

    j = device.journal
    seq = device.sample("late", "reject", image_bytes(part_image(0.3)), 0.3)
    device.now = RESULT_TIME + 8 * 3600 + 1  # the shift is over: the image goes unlabelled
    drain(device.uploader(hold_s=8 * 3600))
    assert set(device.keys()) == {
        f"samples/{PLANT}/{DEVICE}/unlabelled/reject/20261128_late_{seq}.png"
    }
    assert "late" not in merged_parts(device, tmp_path, "before")
    give(j, "late", "defect")  # the verdict comes the next morning
    drain(device.uploader(hold_s=8 * 3600))
    row = merged_parts(device, tmp_path, "after")["late"]
    assert row["label"] == "defect" and row["path"].startswith("defect/")
    assert row["labelled_at"] == "2027-01-15T08:00:00Z"


def test_verdicts_are_charged_to_the_hourly_budget_and_wait_for_the_next_hour(
    device: Device,
) -> None:
    device.sample("v", "manual", PNG)
    give(device.journal, "v", "good")
    device.now = 3600 * 500_000 + 10.0
    uploader = device.uploader(bytes_per_hour=len(PNG) + 100)  # room for the image, not both
    waits = drain(uploader)
    keys = set(device.keys())
    assert [k.rsplit("/", 2)[1] for k in keys] == ["labels"]  # the verdict went first
    assert uploader.stats.state == "over_budget" and waits[-1] == pytest.approx(3590.0, abs=0.01)
    label_bytes = device.journal.upload_hour()[1]
    assert 0 < label_bytes < 1000
    device.now += 3600
    drain(uploader)
    assert len(device.keys()) == 2 and device.journal.upload_hour() == (500_001, len(PNG))


def test_an_offline_period_leaves_the_hours_budget_intact(device: Device) -> None:
    relay = Relay(device.cloud.upstream).start()
    for i in range(2):
        device.sample(f"f{i}", "pass", PNG, 0.19)
    device.now = 3600 * 500_000 + 10.0
    uploader = device.uploader(
        endpoint=relay.url, bytes_per_hour=int(len(PNG) * 2.5), backoff_max_s=1.0
    )
    relay.stop()  # connections refused: botocore's EndpointConnectionError, nothing sent
    for _ in range(30):
        uploader.step()
    assert uploader.stats.failures == 30 and uploader.stats.state == "offline"
    assert device.journal.upload_hour() == (500_000, 0)  # every charge taken back
    relay.start()
    drain(uploader)
    assert len(device.keys()) == 2 and device.journal.upload_hour() == (500_000, 2 * len(PNG))
    relay.stop()


class _Failing(http.server.BaseHTTPRequestHandler):
    """An endpoint that reads each request's body whole and answers 500 InternalError."""

    requests: ClassVar[list[int]] = []

    def do_PUT(self) -> None:  # noqa: N802 - the http.server handler name
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        type(self).requests.append(length)
        body = b"<Error><Code>InternalError</Code><Message>m</Message></Error>"
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_one_charged_put_is_one_transfer_even_when_s3_answers_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore's standard retry mode retries 500 after the body went out (retries/standard.py,
    # TransientRetryableChecker._TRANSIENT_STATUS_CODES); the uploader allows one attempt, so
    # each charge is one transfer
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Failing.requests = []
    journal = Journal(tmp_path / "j.db", device=DEVICE, cap_bytes=64 << 20, clock=lambda: 1000.0)
    try:
        journal.add_sample(part_id="x", reason="pass", data=PNG, score=0.19)
        store = BotoObjectStore(
            "bucket", region=REGION, endpoint_url=f"http://127.0.0.1:{server.server_port}"
        )
        now = 3600 * 500_000 + 10.0
        uploader = Uploader(journal, IDENTITY, store, bytes_per_hour=10 * len(PNG),
                            clock=lambda: now)  # fmt: skip
        for _ in range(3):
            uploader.step()
        assert len(_Failing.requests) == 3 and uploader.stats.failures == 3
        assert journal.upload_hour() == (500_000, 3 * len(PNG))  # charged as transmitted
        assert uploader.stats.last_error is not None and "InternalError (500)" in (
            uploader.stats.last_error
        )
    finally:
        server.shutdown()
        journal.close()

"""Merging the field's labelled samples into a base dataset (S3 through moto, real PNG images)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from tests.docs.test_commands import free_port
from training.dataset import load_dataset, split_dataset
from training.errors import DatasetError, SamplesError
from training.merge import (
    MERGE_SUMMARY,
    PROVENANCE_FILE,
    data_check_main,
    merge_samples,
)
from training.sample_data import PRODUCTS, Size, generate_product

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "lineguard-artifacts-123456789012-eu-west-1"
REGION = "eu-west-1"
PLANT = "demo"
BRICK = next(p for p in PRODUCTS if p.name == "brick")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Real PNGs from the sample generator: ``good`` and one list per defect type."""
    root = tmp_path_factory.mktemp("field-images")
    generate_product(BRICK, root, Size(good=40, per_defect_type=4, side=96), seed=11)
    found = {"good": sorted((root / "good").glob("*.png"))}
    for folder in sorted((root / "defect").iterdir()):
        found[folder.name] = sorted(folder.glob("*.png"))
    return found


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base") / "brick"
    generate_product(BRICK, root, Size(good=16, per_defect_type=1, side=96), seed=3)
    return root


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield client


def put(
    client: Any,
    device: str,
    layout: str,
    part: str,
    seq: int,
    body: bytes | Path,
    /,
    *,
    day: str = "20250301",
    labelled_at: str | None = "2025-03-01T10:00:00.000Z",
    **extra: str,
) -> str:
    """Upload one sample as the device does: the contract's key and user metadata."""
    key = f"samples/{PLANT}/{device}/{layout}/{day}_{part}_{seq}.png"
    label = "" if layout.startswith("unlabelled") else layout.split("/")[0]
    metadata = {
        "part-id": part,
        "seq": str(seq),
        "decision": "manual",
        "score": "0.61",
        "model-version": "brick@1.0.0",
        "label": label,
        "defect-type": layout.split("/")[1] if layout.startswith("defect/") else "",
        "operator": "alice" if label else "",
        "device": device,
        "plant": PLANT,
        "line": "line-1",
        "station": "final-check",
    }
    if labelled_at is not None and label:
        metadata["labelled-at"] = labelled_at
    metadata.update(extra)
    data = body.read_bytes() if isinstance(body, Path) else body
    client.put_object(Bucket=BUCKET, Key=key, Body=data, Metadata=metadata)
    return key


def merge(client: Any, base: Path, out: Path, prefix: str = "") -> Any:
    uri = f"s3://{BUCKET}/samples/{PLANT}/{prefix}"
    return merge_samples(base, uri, out, s3_client=client, log=lambda _: None)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_labelled_samples_join_the_base_unlabelled_ones_are_only_counted(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    good = put(s3, "lineguard-demo-A1", "good", "P-1", 1, images["good"][0])
    scratch = put(s3, "lineguard-demo-A1", "defect/scratch", "P-2", 2, images["scratch"][0])
    untyped = put(s3, "lineguard-demo-B2", "defect", "P-3", 3, images["hole"][0])
    put(s3, "lineguard-demo-B2", "unlabelled/manual", "P-4", 4, images["good"][1])
    put(s3, "lineguard-demo-B2", "unlabelled/reject", "P-5", 5, images["spot"][0])
    put(s3, "lineguard-demo-B2", "unlabelled/reject", "P-6", 6, images["spot"][1])
    out = tmp_path / "merged"

    summary = merge(s3, base, out)

    assert summary.listed == 6
    assert summary.by_layout == {
        "good": 1,
        "defect/scratch": 1,
        "defect": 1,
        "unlabelled/manual": 1,
        "unlabelled/reject": 2,
    }
    assert summary.unlabelled == {"manual": 1, "reject": 2}
    assert summary.used == {"good": 1, "defect": 2}
    merged = load_dataset(out)  # the documented layout, every image readable
    assert (len(merged.good), len(merged.defects)) == (17, 8)
    provenance = {r["key"]: r for r in rows(out / PROVENANCE_FILE)}
    assert set(provenance) == {good, scratch, untyped}  # no unlabelled image went in
    assert provenance[scratch]["path"].startswith("defect/scratch/")
    assert provenance[untyped]["path"].count("/") == 1  # defect/<file>: untyped
    assert provenance[scratch]["operator"] == "alice"
    written = json.loads((out / MERGE_SUMMARY).read_text())
    assert written["unlabelled"] == {"manual": 1, "reject": 2}
    assert written["merged"] == {
        "good": 17,
        "defect": 8,
        "defect_types": merged.defect_types,
        "field_images": 3,
        "devices": 2,
        "device_days": 2,
    }


def test_a_relabel_keeps_the_latest_labelled_at_then_the_highest_seq(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    device = "lineguard-demo-A1"
    first = put(s3, device, "defect/scratch", "P-7", 7, images["scratch"][0],
                labelled_at="2025-03-01T10:00:00.000Z")  # fmt: skip
    later = put(s3, device, "good", "P-7", 7, images["scratch"][0],
                labelled_at="2025-03-01T10:05:00.000Z")  # fmt: skip
    # same labelled-at: the higher seq (a later result of the same part) stands
    low = put(s3, device, "good", "P-8", 8, images["good"][0])
    high = put(s3, device, "defect/crack", "P-8", 9, images["crack"][0])
    # the same part id on another device is another part
    other = put(s3, "lineguard-demo-B2", "defect/spot", "P-7", 7, images["spot"][0])

    summary = merge(s3, base, tmp_path / "merged")

    kept = {r["key"] for r in rows(tmp_path / "merged" / PROVENANCE_FILE)}
    assert kept == {later, high, other}
    dropped = {d["key"]: d["kept"] for d in summary.duplicates_dropped}
    assert dropped == {first: later, low: high}
    assert summary.used == {"good": 1, "defect": 2}
    assert not summary.skipped


def test_equal_labelled_at_and_seq_with_different_labels_skips_the_part(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    a = put(s3, "lineguard-demo-A1", "good", "P-9", 9, images["good"][0])
    b = put(s3, "lineguard-demo-A1", "defect/hole", "P-9", 9, images["hole"][0])

    summary = merge(s3, base, tmp_path / "merged")

    assert {s["key"] for s in summary.skipped} == {a, b}
    assert "same labelled-at and seq" in summary.skipped[0]["reason"]
    assert summary.used == {"good": 0, "defect": 0}
    assert not (tmp_path / "merged" / PROVENANCE_FILE).exists()


def test_corrupt_objects_are_reported_by_key_and_never_trained_on(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    whole = images["good"][0].read_bytes()
    truncated = put(s3, "lineguard-demo-A1", "good", "P-10", 10, whole[: len(whole) // 2])
    empty = put(s3, "lineguard-demo-A1", "defect/crack", "P-11", 11, b"")
    # the newest object of P-12 is corrupt: its verdict (good) stands, never the older label;
    # the image comes from the readable older object of the same part
    older = put(s3, "lineguard-demo-A1", "defect/spot", "P-12", 12, images["spot"][0],
                labelled_at="2025-03-01T09:00:00.000Z")  # fmt: skip
    newest = put(s3, "lineguard-demo-A1", "good", "P-12", 12, b"GIF89a not really",
                 labelled_at="2025-03-01T09:30:00.000Z")  # fmt: skip
    fine = put(s3, "lineguard-demo-A1", "good", "P-13", 13, images["good"][1])

    summary = merge(s3, base, tmp_path / "merged")

    reasons = {s["key"]: s["reason"] for s in summary.skipped}
    assert set(reasons) == {truncated, empty, newest}
    assert reasons[empty] == "empty file"
    assert reasons[truncated].startswith("not a readable image")
    assert reasons[newest].startswith("not a readable image")
    assert str(tmp_path) not in json.dumps(reasons)  # the key names it, not a scratch path
    merged = {r["key"]: r for r in rows(tmp_path / "merged" / PROVENANCE_FILE)}
    assert set(merged) == {older, fine}
    assert merged[older]["label"] == "good" and merged[older]["path"].startswith("good/")
    load_dataset(tmp_path / "merged")  # every image in the folder is readable


def test_keys_and_metadata_outside_the_contract_are_skipped_with_the_reason(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    png = images["good"][0].read_bytes()
    odd = {
        f"samples/{PLANT}/lineguard-demo-A1/defect/../../../../etc/20250301_P-1_1.png": "safe names",
        f"samples/{PLANT}/lineguard-demo-A1/maybe/20250301_P-2_2.png": "unknown layout",
        f"samples/{PLANT}/lineguard-demo-A1/unlabelled/later/20250301_P-3_3.png": "unknown layout",
        f"samples/{PLANT}/lineguard-demo-A1/good/P-4.png": "is not <YYYYMMDD>",
        f"samples/{PLANT}/lineguard-demo-A1/good/20251340_P-5_5.png": "is not a date",
        f"samples/{PLANT}/lineguard-demo-A1/good/20250301_P-6_6.txt": "not an image type",
    }
    for key in odd:
        s3.put_object(Bucket=BUCKET, Key=key, Body=png)
    wrong_device = put(s3, "lineguard-demo-A1", "good", "P-7", 7, png, **{"device": "lineguard-x"})
    wrong_label = put(s3, "lineguard-demo-A1", "good", "P-8", 8, png, label="defect")
    wrong_seq = put(s3, "lineguard-demo-A1", "good", "P-9", 9, png, seq="10")
    bad_time = put(s3, "lineguard-demo-A1", "good", "P-10", 10, png, **{"labelled-at": "today"})
    # P-11's newer object contradicts its key: the older one cannot stand in for it
    older = put(s3, "lineguard-demo-A1", "good", "P-11", 11, png,
                labelled_at="2025-03-01T09:00:00.000Z")  # fmt: skip
    contradicting = put(s3, "lineguard-demo-A1", "defect/hole", "P-11", 11, png,
                        labelled_at="2025-03-01T09:30:00.000Z", **{"defect-type": "crack"})  # fmt: skip

    summary = merge(s3, base, tmp_path / "merged")

    reasons = {s["key"]: s["reason"] for s in summary.skipped}
    for key, expected in odd.items():
        assert expected in reasons[key], (key, reasons.get(key))
    assert "metadata device" in reasons[wrong_device]
    assert "metadata label" in reasons[wrong_label]
    assert "metadata seq" in reasons[wrong_seq]
    assert "RFC 3339" in reasons[bad_time]
    assert "metadata defect-type" in reasons[contradicting]
    assert "newest label is unknown" in reasons[older]
    assert summary.used == {"good": 0, "defect": 0}
    assert not any((tmp_path / "merged").rglob("*P-*"))
    assert not (tmp_path.parent / "etc").exists()


def test_a_defect_type_new_to_the_base_is_kept_and_reported(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    put(s3, "lineguard-demo-A1", "defect/burr", "P-1", 1, images["crack"][0])
    summary = merge(s3, base, tmp_path / "merged")
    assert summary.new_defect_types == ["burr"]
    assert "burr" in load_dataset(tmp_path / "merged").defect_types


def test_groups_put_a_device_day_on_one_side_of_the_split(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    seq = 0
    goods = iter(images["good"])
    defects = iter([p for kind in sorted(images) if kind != "good" for p in images[kind]])
    for device in ("lineguard-demo-A1", "lineguard-demo-B2", "lineguard-demo-C3"):
        for day in ("20250301", "20250302", "20250303"):
            for _ in range(3):
                seq += 1
                put(s3, device, "good", f"P-{seq}", seq, next(goods), day=day)
            if day != "20250302":
                seq += 1
                put(s3, device, "defect/scratch", f"P-{seq}", seq, next(defects), day=day)
    out = tmp_path / "merged"
    merge(s3, base, out)

    groups = {r["path"]: r["group"] for r in rows(out / "groups.csv")}
    provenance = rows(out / PROVENANCE_FILE)
    assert len(provenance) == 33
    for row in provenance:
        assert groups[row["path"]] == f"{row['device']}/{row['day']}"
    dataset = load_dataset(out)
    assert dataset.grouping == "groups.csv"
    for seed in range(4):
        for fraction in (0.0, 0.5):
            splits = split_dataset(dataset, seed, defect_train_fraction=fraction)
            sides: dict[str, set[str]] = {}
            for name in ("train", "validation", "test"):
                for sample in getattr(splits, name):
                    if sample.group is not None and "/" in sample.group:
                        sides.setdefault(sample.group, set()).add(name)
            assert len(sides) == 9
            assert all(len(where) == 1 for where in sides.values()), sides


def test_base_images_keep_their_groups_and_merging_again_dedups_against_the_base(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    grouped = tmp_path / "grouped"
    import shutil

    shutil.copytree(base, grouped)
    (grouped / "groups.csv").write_text(
        "path,group\ngood/0000.png,burst-1\ngood/0001.png,burst-1\n"
    )
    device = "lineguard-demo-A1"
    first = put(s3, device, "defect/scratch", "P-1", 1, images["scratch"][0],
                labelled_at="2025-03-01T10:00:00.000Z")  # fmt: skip
    stays = put(s3, device, "good", "P-2", 2, images["good"][0])
    once = tmp_path / "once"
    merge(s3, grouped, once)
    assert {"good/0000.png": "burst-1", "good/0001.png": "burst-1"}.items() <= {
        r["path"]: r["group"] for r in rows(once / "groups.csv")
    }.items()

    # later the part is relabelled good; the next merge starts from the first one's folder
    relabel = put(s3, device, "good", "P-1", 1, images["scratch"][0],
                  labelled_at="2025-03-02T08:00:00.000Z")  # fmt: skip
    s3.delete_object(Bucket=BUCKET, Key=first)
    twice = tmp_path / "twice"
    summary = merge(s3, once, twice)

    by_key = {r["key"]: r for r in rows(twice / PROVENANCE_FILE)}
    assert set(by_key) == {stays, relabel}  # one image per part, the newest label
    assert by_key[relabel]["label"] == "good"
    assert [r["by"] for r in summary.base_replaced] == [relabel]
    assert [d["key"] for d in summary.duplicates_dropped] == [stays]  # already in the base
    dataset = load_dataset(twice)
    assert not [s for s in dataset.defects if s.defect_type == "scratch" and "P-1" in s.rel]
    assert sum(1 for s in dataset.good if "P-1" in s.rel) == 1
    groups = {r["path"]: r["group"] for r in rows(twice / "groups.csv")}
    assert groups["good/0000.png"] == "burst-1"
    assert groups[by_key[stays]["path"]] == f"{device}/20250301"


def test_a_local_mirror_with_metadata_files_merges_like_the_bucket(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    put(s3, "lineguard-demo-A1", "defect/scratch", "P-1", 1, images["scratch"][0],
        labelled_at="2025-03-01T10:00:00.000Z")  # fmt: skip
    put(s3, "lineguard-demo-A1", "good", "P-1", 1, images["scratch"][0],
        labelled_at="2025-03-01T11:00:00.000Z")  # fmt: skip
    put(s3, "lineguard-demo-B2", "unlabelled/pass", "P-2", 2, images["good"][0])
    mirror = tmp_path / "mirror"
    prefix = f"samples/{PLANT}/"
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]:
        answer = s3.get_object(Bucket=BUCKET, Key=item["Key"])
        target = mirror / item["Key"].removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(answer["Body"].read())
        target.with_name(target.name + ".metadata.json").write_text(json.dumps(answer["Metadata"]))
    from_s3 = merge(s3, base, tmp_path / "a")
    from_folder = merge_samples(base, mirror, tmp_path / "b", log=lambda _: None)
    assert from_folder.used == from_s3.used == {"good": 1, "defect": 0}
    assert from_folder.unlabelled == from_s3.unlabelled == {"pass": 1}
    assert len(from_folder.duplicates_dropped) == len(from_s3.duplicates_dropped) == 1
    assert sorted(p.name for p in (tmp_path / "a" / "good").iterdir()) == sorted(
        p.name for p in (tmp_path / "b" / "good").iterdir()
    )


def test_bad_sources_and_outputs_are_clear_errors_that_leave_nothing(
    s3: Any, base: Path, tmp_path: Path
) -> None:
    with pytest.raises(SamplesError, match="not a samples prefix"):
        merge_samples(base, f"s3://{BUCKET}/datasets/", tmp_path / "x", s3_client=s3)
    with pytest.raises(SamplesError, match="NoSuchBucket"):
        merge_samples(base, "s3://no-such-bucket/samples/demo/", tmp_path / "x", s3_client=s3)
    with pytest.raises(SamplesError, match="samples folder not found"):
        merge_samples(base, tmp_path / "absent", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        merge(s3, base, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no partial folder left


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """S3 in a moto server on loopback, for the CLI in its own process."""
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    yield f"http://127.0.0.1:{port}"
    moto.stop()


def env() -> dict[str, str]:
    import os

    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_the_command_merges_from_an_endpoint_and_writes_the_summary(
    server: str, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    client = boto3.client("s3", region_name=REGION, endpoint_url=server,
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    put(client, "lineguard-demo-A1", "good", "P-1", 1, images["good"][0])
    put(client, "lineguard-demo-A1", "unlabelled/reject", "P-2", 2, images["good"][1])
    command = [sys.executable, "-m", "training.merge", "--base", str(base), "--samples",
               f"s3://{BUCKET}/samples/{PLANT}/", "--out", str(tmp_path / "merged"),
               "--summary", str(tmp_path / "summary.json"), "--endpoint-url", server]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == json.loads((tmp_path / "summary.json").read_text())
    assert printed["used"] == {"defect": 0, "good": 1} and printed["unlabelled"] == {"reject": 1}
    assert "downloaded 1/1" in done.stderr  # progress goes to stderr
    again = subprocess.run(
        command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'merged'}: exists")
    missing = [sys.executable, "-m", "training.merge", "--base", str(base), "--samples",
               "s3://no-such-bucket/samples/demo/", "--out", str(tmp_path / "other"),
               "--endpoint-url", server]  # fmt: skip
    failed = subprocess.run(
        missing, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 2
    assert "NoSuchBucket" in failed.stderr.strip().splitlines()[-1]


def test_the_pipeline_data_check_merges_and_gives_each_split_its_records(
    s3: Any,
    base: Path,
    images: dict[str, list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)  # the step's own client, as on SageMaker
    seq = 0
    for day in ("20250301", "20250302", "20250303", "20250304"):
        for image in images["good"][seq % 30 : seq % 30 + 3]:
            seq += 1
            put(s3, "lineguard-demo-A1", "good", f"P-{seq}", seq, image, day=day)
    out = tmp_path / "splits"
    with contextlib.redirect_stdout(io.StringIO()):
        code = data_check_main(
            [
                "--data",
                str(base),
                "--out",
                str(out),
                "--seed",
                "0",
                "--samples",
                f"s3://{BUCKET}/samples/{PLANT}/",
            ]  # fmt: skip
        )
    assert code == 0
    total = 0
    for split in ("train", "validation", "test"):
        folder = out / split
        assert json.loads((folder / MERGE_SUMMARY).read_text())["used"]["good"] == 12
        listed = rows(folder / PROVENANCE_FILE)
        assert all((folder / r["path"]).is_file() for r in listed)
        assert len(listed) == sum(1 for p in folder.rglob("lineguard-demo-*"))
        total += len(listed)
    assert total == 12
    with contextlib.redirect_stdout(io.StringIO()):  # empty SamplesPrefix: the base alone
        assert (
            data_check_main(["--data", str(base), "--out", str(tmp_path / "b"), "--samples", ""])
            == 0
        )
    assert not list((tmp_path / "b").rglob(MERGE_SUMMARY))


def test_merge_then_train_and_evaluate_name_the_field_samples_in_the_package(
    s3: Any, sample: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    from inspector.model_package import load_package
    from training.evaluate import evaluate
    from training.train import train

    seq = 0
    for device in ("lineguard-demo-A1", "lineguard-demo-B2"):
        for day in ("20250301", "20250302"):
            for image in images["good"][seq : seq + 2]:
                seq += 1
                put(s3, device, "good", f"P-{seq}", seq, image, day=day)
    seq += 1
    put(s3, "lineguard-demo-A1", "defect/scratch", f"P-{seq}", seq, images["scratch"][0])
    put(s3, "lineguard-demo-A1", "good", f"P-{seq}", seq, images["scratch"][0],
        labelled_at="2025-03-01T11:00:00.000Z")  # fmt: skip  # relabelled good
    put(s3, "lineguard-demo-B2", "unlabelled/manual", "P-99", 99, images["good"][30])
    merged = tmp_path / "merged"
    summary = merge(s3, sample / "brick", merged)
    assert summary.used == {"good": 9, "defect": 0}

    package = tmp_path / "package"
    with contextlib.redirect_stdout(io.StringIO()):
        train(merged, package, seed=1, max_bank=256, version="2.0.0")
    field = load_package(package).manifest.metrics["field_samples"]
    assert field["merge"]["used"] == {"defect": 0, "good": 9}
    assert field["merge"]["unlabelled"] == {"manual": 1}
    assert field["merge"]["duplicates_dropped"] == 1
    assert field["merge"]["source"] == f"s3://{BUCKET}/samples/{PLANT}/"
    with contextlib.redirect_stdout(io.StringIO()):
        report = evaluate(package, merged, tmp_path / "evaluation.json", latency_runs=2,
                          plots=False, resamples=50)  # fmt: skip
    counts = report["field_samples"]
    # every field image is in exactly one split: those the package trained and calibrated on,
    # and those the test split scored
    assert sum(counts[s]["good"] for s in ("train", "validation", "test")) == 9
    assert counts["merge"] == field["merge"]
    assert json.loads((tmp_path / "evaluation.json").read_text())["field_samples"] == counts


def put_label(
    client: Any,
    device: str,
    part: str,
    result_seq: int,
    revision: int,
    label: str,
    labelled_at: str,
    *,
    seq: int,
    defect_type: str | None = None,
    body: dict[str, Any] | None = None,
) -> str:
    """Upload one verdict as the device does (labels/<day>_<part>_<result seq>_r<revision>.json,
    the label message with ``labelled_at``)."""
    key = f"samples/{PLANT}/{device}/labels/20250301_{part}_{result_seq}_r{revision}.json"
    doc: dict[str, Any] = {
        "v": 1, "plant": PLANT, "line": "line-1", "station": "final-check", "device": device,
        "camera": "cam0", "part_id": part, "seq": seq, "ts": labelled_at, "label": label,
        "operator": "bob", "revision": revision, "result_seq": result_seq,
        "decision": "manual", "model": "brick@1.0.0", "labelled_at": labelled_at,
        "result_ts": "2025-03-01T08:00:00.000Z",
    }  # fmt: skip
    if defect_type is not None:
        doc["defect_type"] = defect_type
    doc.update(body or {})
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(doc).encode())
    return key


def test_label_objects_are_verdicts_for_the_parts_images(
    s3: Any, base: Path, images: dict[str, list[Path]], tmp_path: Path
) -> None:
    dev = "lineguard-demo-A1"
    # a mis-tap corrected after the image went: the image says good, the label object defect
    relabelled = put(s3, dev, "good", "P-20", 20, images["good"][0],
                     labelled_at="2025-03-01T09:00:00.000Z")  # fmt: skip
    put_label(s3, dev, "P-20", 20, 1, "good", "2025-03-01T09:00:00.000Z", seq=21)
    put_label(s3, dev, "P-20", 20, 2, "defect", "2025-03-01T09:05:00.000Z", seq=25,
              defect_type="scratch")  # fmt: skip
    # a verdict given after the hold released the image unlabelled
    released = put(s3, dev, "unlabelled/manual", "P-30", 30, images["good"][1])
    put_label(s3, dev, "P-30", 30, 1, "good", "2025-03-01T17:00:00.000Z", seq=40)
    # a label object older than the image's own label does not win
    put(s3, dev, "defect/crack", "P-50", 50, images["crack"][0],
        labelled_at="2025-03-01T12:00:00.000Z")  # fmt: skip
    put_label(s3, dev, "P-50", 50, 1, "good", "2025-03-01T11:00:00.000Z", seq=51)
    # a verdict whose image never arrived, and one that breaks the contract
    put_label(s3, dev, "P-60", 60, 1, "good", "2025-03-01T09:00:00.000Z", seq=61)
    broken = put_label(s3, dev, "P-70", 70, 1, "good", "2025-03-01T09:00:00.000Z", seq=71,
                       body={"revision": 3})  # fmt: skip
    doubted = put(s3, dev, "good", "P-70", 70, images["good"][2])
    # a sample kept without its result's seq: counted unlabelled, never trained on, even when a
    # label object names its part
    nameless = f"samples/{PLANT}/{dev}/unlabelled/pass/20250301_P-80_s7.png"
    s3.put_object(Bucket=BUCKET, Key=nameless, Body=images["good"][3].read_bytes())
    put_label(s3, dev, "P-80", 80, 1, "defect", "2025-03-01T09:00:00.000Z", seq=81)
    outside = f"samples/{PLANT}/{dev}/good/20250301_P-81_s8.png"
    s3.put_object(Bucket=BUCKET, Key=outside, Body=images["good"][3].read_bytes())

    summary = merge(s3, base, tmp_path / "merged")

    merged = {r["part_id"]: r for r in rows(tmp_path / "merged" / PROVENANCE_FILE)}
    assert set(merged) == {"P-20", "P-30", "P-50"}
    assert merged["P-20"]["key"] == relabelled and merged["P-20"]["label"] == "defect"
    assert merged["P-20"]["path"].startswith("defect/scratch/")
    assert merged["P-20"]["operator"] == "bob"
    assert merged["P-30"]["key"] == released and merged["P-30"]["path"].startswith("good/")
    assert merged["P-50"]["path"].startswith("defect/crack/")
    reasons = {s["key"]: s["reason"] for s in summary.skipped}
    assert set(reasons) == {broken, doubted, outside}
    assert "revision" in reasons[broken] and "newest label is unknown" in reasons[doubted]
    assert "unlabelled/ only" in reasons[outside]
    assert summary.unlabelled == {"manual": 1, "pass": 1}
    assert summary.labels == {"listed": 7, "used": 2, "without_image": 2}
    load_dataset(tmp_path / "merged")

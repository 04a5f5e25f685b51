"""`make demo` (python -m demo): the camera folders it builds, its bad input, and one whole run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.__main__ import (
    DEFECT_SHARE,
    DEMO_PASSWORD,
    _review_data,
    anomaly_maps,
    main,
    make_camera_folders,
)
from demo.station_review import ReviewTurn, verdict_key
from inspector.model_package import TileSpec, load_package, write_manifest
from tests.support.tiny_model import build_tiny_package, part_image

REPO = Path(__file__).resolve().parents[2]


def _dataset(root: Path, good: int, defects: int) -> Path:
    for i in range(good):
        (root / "good").mkdir(parents=True, exist_ok=True)
        Image.new("L", (32, 32), 100 + i).save(root / "good" / f"g{i:02d}.png")
    for i in range(defects):
        (root / "defect" / "scratch").mkdir(parents=True, exist_ok=True)
        Image.new("L", (32, 32), 10 + i).save(root / "defect" / "scratch" / f"d{i:02d}.png")
    return root


def test_camera_folders_hold_every_good_part_and_the_defect_share(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "data", good=17, defects=10)
    truth = make_camera_folders(dataset, tmp_path / "frames", {"s1": 1, "s2": 2}, seed=7)
    wanted_defects = round(DEFECT_SHARE / (1 - DEFECT_SHARE) * 17)
    for station in ("s1", "s2"):
        files = sorted(p.name for p in (tmp_path / "frames" / station).iterdir())
        assert files == sorted(truth[station])
        labels = list(truth[station].values())
        assert labels.count("good") == 17
        assert labels.count("scratch") == wanted_defects
        # the truth names what each replayed file really is
        for name, label in truth[station].items():
            pixel = Image.open(tmp_path / "frames" / station / name).getpixel((0, 0))
            assert isinstance(pixel, int)
            assert (pixel >= 100) == (label == "good")
    # shuffled: good parts are not all first
    assert list(truth["s1"].values())[:17] != ["good"] * 17


def test_anomaly_maps_of_a_tiled_package_cover_its_region(tmp_path: Path) -> None:
    package = build_tiny_package(tmp_path / "pkg", golden=False)
    tiled = replace(package.manifest.input, roi=(8, 4, 64, 32), tiles=TileSpec(rows=1, cols=2))
    write_manifest(tmp_path / "pkg", replace(package.manifest, input=tiled))
    load_package(tmp_path / "pkg")  # the package is valid as the device reads it
    frame = Image.new("RGB", (80, 40), (128, 128, 128))
    frame.paste(part_image(0.0), (8, 4))  # left tile: the reference, scores 0
    frame.paste(part_image(0.3), (40, 4))  # right tile: 0.3 off everywhere
    frame.save(tmp_path / "part.png")
    result = {"station": "s1", "part_id": "p-1", "camera": "c", "decision": "reject",
              "score": 0.3, "threshold": 0.2}  # fmt: skip
    (item,) = anomaly_maps(tmp_path / "pkg", [(result, tmp_path / "part.png")], tmp_path / "maps")
    heat = np.load(item["map"])
    assert item["region"] == [8, 4, 72, 36]
    assert heat.shape == (32, 64)  # the region at the tiles' map scale (1 cell per pixel)
    assert np.allclose(heat[:, :32], 0.0, atol=0.01)
    assert np.allclose(heat[:, 32:], 0.3, atol=0.01)


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--frames", "0"])
    assert raised.value.code == 2
    assert "--frames must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_whole_demo_runs_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "demo", "--out", str(out), "--frames", "4", "--fps", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = (out / "report.html").read_text()
    for section in ("summary", "latency", "decisions", "anomaly-maps", "plc", "bytes", "rollout",
                    "plant-model"):  # fmt: skip
        assert f'id="{section}"' in html
    data = json.loads((out / "report-data.json").read_text())
    # the demo's dataset has labelled defects: training chose between both candidates
    kind = data["summary"]["model kind (kept by validation)"]
    assert kind.split()[0] in ("patchcore", "supervised") and "supervised " in kind, kind
    results = data["results"]
    assert len(results) == 3 * 4  # 3 cameras, 4 frames each
    assert {r["decision"] for r in results} <= {"pass", "reject", "manual"}
    acted = {r["part_id"] for r in results if r["decision"] != "pass"}
    assert {s["part_id"] for s in data["plc"]["seen"]} >= acted
    assert data["rollout"]["status"] == "completed"
    releases = json.loads((out / "releases" / "demo.json").read_text())
    assert {ring["components"]["com.lineguard.Model"] for ring in releases["rings"].values()} == {
        "1.1.0"
    }
    assert "saturates" in data["plant_model"]["statement"]
    assert "PLC:" in proc.stdout and "0 missed" in proc.stdout
    # every device served its review station on loopback, with the demo-only login printed
    stations = data["review"]["stations"]
    assert len(stations) == 2 and len({s["url"] for s in stations}) == 2  # one per device
    assert all(s["url"].startswith("http://127.0.0.1:") for s in stations)
    assert f"login (demo only): demo-operator / {DEMO_PASSWORD}" in proc.stdout
    assert 'id="review"' in html and stations[0]["url"] + "/" in html
    # one turn of the loop: the next version is trained on the base merged with what the devices
    # uploaded to the local S3 (a 4-frame line may upload nothing; the step runs all the same)
    field = data["field"]
    assert field["bucket_url"] == "s3://lineguard-demo-artifacts/samples/demo/"
    assert field["uploaded"]["objects"] == sum(field["uploaded"]["layouts"].values())
    assert field["merge"]["listed"] == field["uploaded"]["objects"]
    assert 'id="field"' in html
    assert (out / "field-data" / "merge.json").is_file()  # 1.1.0's data is the merged folder
    manifest = json.loads((out / "models" / "brick-1.1.0" / "manifest.json").read_text())
    if sum(field["merge"]["used"].values()):  # the package names the field samples it used
        assert manifest["metrics"]["field_samples"]["merge"]["used"] == field["merge"]["used"]
    # the device roots (every component's venv and artifacts) are gone; each device's logs stay
    for device in ("demo-line-1-press-out", "demo-line-1-final-check"):
        kept = out / "line" / device
        assert kept.is_dir() and not kept.is_symlink(), kept
        assert any((kept / "logs").glob("*.log")), sorted(kept.rglob("*"))
    assert not [p for p in Path("/tmp").glob("lineguard-demo-*") if p.stat().st_mtime >= started]


def test_the_review_data_keeps_the_standing_verdict_per_part() -> None:
    label = {"device": "d1", "station": "s1", "part_id": "cam0-x-000001", "result_seq": 7,
             "label": "good", "operator": "demo-operator", "revision": 1,
             "ts": "2026-11-28T05:00:01.000Z", "decision": "reject"}  # fmt: skip
    corrected = {**label, "label": "defect", "revision": 2, "ts": "2026-11-28T05:00:02.000Z"}
    other = {**label, "device": "d2", "ts": "2026-11-28T05:00:00.500Z"}
    turn = ReviewTurn(verdicts=[{}, {}], seconds=4.2)
    notes: list[str] = []
    seen = {"labels": [corrected, label, other, label], "review_turn": turn,
            "stations": [{"device": "d1", "station": "s1", "url": "http://127.0.0.1:1"}]}  # fmt: skip
    data = _review_data(seen, notes)
    assert [(m["device"], m["label"]) for m in data["labels"]] == [("d2", "good"), ("d1", "defect")]
    assert data["credentials"]["demo_only"] is True
    assert data["summary"].startswith("2 verdict(s) given through the page") and notes == []
    turn.problems.append("d1: page gone")
    assert _review_data(seen, notes)["summary"].endswith("problems: d1: page gone")
    assert notes == ["Review turn: d1: page gone"]
    skipped = _review_data({"review_skipped": "not run: no Chromium"}, [])
    assert skipped["summary"] == "not run: no Chromium" and skipped["labels"] == []


def test_the_operator_presses_the_key_of_what_the_part_is() -> None:
    types = ["crack", "scratch"]
    assert verdict_key("good", types) == ("g", "good", None)
    assert verdict_key("scratch", types) == ("2", "defect", "scratch")
    assert verdict_key("hole", types) == ("d", "defect", None)  # a type the model does not list

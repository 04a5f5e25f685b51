"""The static demo report: every section, embedded PNGs, graceful gaps, CLI."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from demo import report

SECTION_IDS = [anchor for anchor, _ in report.SECTIONS]
DATA_URI = re.compile(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def sections_of(html: str) -> dict[str, str]:
    """Section id -> its inner HTML."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))


def test_every_section_renders_with_decodable_pngs(
    sample_data: dict[str, Any], tmp_path: Path
) -> None:
    html = report.render_html(sample_data, base=tmp_path)
    found = sections_of(html)
    assert list(found) == SECTION_IDS
    for anchor, body in found.items():
        assert "Not run" not in body, anchor
        assert "Could not render" not in body, anchor
    pngs = DATA_URI.findall(html)
    # latency, decisions, 2 anomaly maps, bytes, rollout, 2 plant-model plots
    assert len(pngs) == 8
    assert len(pngs) == html.count("<img")
    for data in pngs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG"
            assert im.width > 200 and im.height > 100
    for anchor in ("latency", "decisions", "bytes", "rollout", "plant-model"):
        assert DATA_URI.search(found[anchor]), anchor
    # the health message's nested latency reaches the table
    assert '<td>core-1</td><td>patchcore@1.0.0</td><td class="num">18.0</td>' in found["latency"]


def test_page_needs_no_network_and_no_script(sample_data: dict[str, Any], tmp_path: Path) -> None:
    html = report.render_html(sample_data, base=tmp_path)
    assert "<script" not in html
    assert not re.search(r'src="(https?:)?//', html)
    assert not re.search(r'<link[^>]*href="(https?:)?//', html)
    # the only links out are to the demo's own review stations, on this machine
    outside = re.findall(r'<a href="((?:https?:)?//[^"]*)"', html)
    assert outside and all(url.startswith("http://127.0.0.1:") for url in outside)
    assert '<meta charset="utf-8">' in html


def test_missing_data_says_not_run_in_every_section() -> None:
    found = sections_of(report.render_html({}))
    assert list(found) == SECTION_IDS
    for anchor, body in found.items():
        assert "Not run" in body, anchor
        assert "<img" not in body


def test_a_broken_section_does_not_stop_the_others(
    sample_data: dict[str, Any], tmp_path: Path
) -> None:
    del sample_data["bytes"]["images_bytes"]
    sample_data["anomaly_maps"][0]["image"] = "no-such-file.png"
    found = sections_of(report.render_html(sample_data, base=tmp_path))
    assert "Could not render" in found["bytes"] and "images_bytes" in found["bytes"]
    assert "no-such-file.png" in found["anomaly-maps"]
    assert found["anomaly-maps"].count("<img") == 1  # the second map still renders
    assert "Could not render" not in found["plant-model"]


def test_plc_section_counts_missed_unexpected_and_duplicates(sample_data: dict[str, Any]) -> None:
    seen = sample_data["plc"]["seen"]
    expected = {r["part_id"] for r in sample_data["results"] if r["decision"] != "pass"}
    missed = seen.pop(0)["part_id"]
    seen.append(dict(seen[0]))  # a duplicate delivery
    seen.append({"part_id": "ghost", "ts": seen[0]["ts"]})
    body = report.section_plc(sample_data)
    assert "1 expected reject(s) did not reach the PLC" in body
    assert f"<td>{missed}</td>" in body and "MISSED" in body
    assert "ghost" in body and "unexpected" in body
    counts = dict(re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">([^<]+)</td></tr>", body))
    assert counts["rejects expected (inspector)"] == str(len(expected))
    assert counts["rejects seen by the PLC"] == str(len(expected) - 1)
    assert counts["missed"] == "1"
    assert counts["unexpected at the PLC"] == "1"
    assert counts["duplicates dropped (at-least-once)"] == "1"


def test_rollout_section_shows_a_failed_gate(sample_data: dict[str, Any]) -> None:
    ring = sample_data["rollout"]["rings"][1]
    ring["passed"] = False
    ring["rolled_back_s"] = 170
    ring["gates"] = [
        {"name": "reject rate", "value": 0.4, "op": "<=", "threshold": 0.05, "passed": False}
    ]
    sample_data["rollout"].update(outcome="rolled_back", failed_gate="wave1: reject rate")
    body = report.section_rollout(sample_data)
    assert "rolled_back" in body and "wave1: reject rate" in body
    assert body.count('class="fail">FAIL') == 2  # the ring and its gate


def test_load_data_reads_jsonl_fields_relative_to_the_file(
    sample_data: dict[str, Any], tmp_path: Path
) -> None:
    results = sample_data.pop("results")
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in results) + "\n\n")
    plc_seen = sample_data["plc"]["seen"]
    (tmp_path / "plc.jsonl").write_text("".join(json.dumps(s) + "\n" for s in plc_seen))
    sample_data["results"] = "results.jsonl"
    sample_data["plc"]["seen"] = "plc.jsonl"
    (tmp_path / "model.json").write_text(json.dumps(sample_data.pop("plant_model")))
    sample_data["plant_model"] = "model.json"
    (tmp_path / "data.json").write_text(json.dumps(sample_data))
    loaded = report.load_data(tmp_path / "data.json")
    assert loaded["results"] == results
    assert loaded["plc"]["seen"] == plc_seen
    assert loaded["plant_model"]["v"] == 1


def test_load_data_names_file_and_line_of_bad_jsonl(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"v": 1}\nnot json\n')
    (tmp_path / "data.json").write_text(json.dumps({"results": "r.jsonl"}))
    with pytest.raises(report.ReportError, match=r"r\.jsonl:2: not JSON"):
        report.load_data(tmp_path / "data.json")


def test_cli_builds_the_report(sample_data: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text(json.dumps(sample_data))
    out = tmp_path / "site"
    assert report.main(["--data", str(tmp_path / "data.json"), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert list(sections_of(html)) == SECTION_IDS
    assert html.count("<img") == 8  # anomaly images resolved against the data file's folder


def test_cli_bad_data_is_one_line_and_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data.json").write_text("[1, 2]")
    assert report.main(["--data", str(tmp_path / "data.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'data.json'}: the top level must be a JSON object"]
    assert report.main(["--data", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2


DATA = (
    Path(__file__).parent / "data"
)  # reports captured from `python -m rollout promote --simulate`


def test_controller_report_of_a_completed_rollout_becomes_the_timeline() -> None:
    doc = json.loads((DATA / "rollout_completed.json").read_text())
    shaped = report.rollout_from_controller(doc, {"canary": 600, "fleet": 0})
    assert shaped["outcome"] == "succeeded" and shaped["release"] == doc["model_version"]
    canary, fleet = shaped["rings"]
    assert canary["ring"] == "canary" and canary["deploy_started_s"] == 0
    reached = doc["rings"]["canary"]["reached_at"] - doc["rings"]["canary"]["deployed_at"]
    assert canary["deployed_s"] == reached and canary["bake_ended_s"] == reached + 600
    assert canary["passed"] is True and fleet["passed"] is True
    assert len(canary["gates"]) == len(doc["rings"]["canary"]["gates"])
    assert {g["name"] for g in canary["gates"]} >= {"p99_budget", "reject_rate"}
    # without bake times, a ring's bake ends when the next ring starts
    unbaked = report.rollout_from_controller(doc)
    assert unbaked["rings"][0]["bake_ended_s"] == fleet["deploy_started_s"]


def test_controller_report_of_a_rolled_back_rollout_names_the_failed_gate() -> None:
    doc = json.loads((DATA / "rollout_rolled_back.json").read_text())
    body = report.section_rollout({"rollout": doc, "rollout_bake_s": 600})
    failed = doc["failed_gates"][0]
    assert f"{failed['ring']}: {failed['gate']}" in body
    assert "rolled-back" in body and "rolled back" in body  # outcome and the ring's phase
    assert body.count('class="fail">FAIL') == 2  # the ring and its failing gate
    assert DATA_URI.search(body)


def test_live_rollout_cli_report_renders(tmp_path: Path) -> None:
    """The current rollout controller's JSON (fleet simulator) renders without errors."""
    import shutil
    import subprocess
    import sys

    from tests.support.tiny_model import build_tiny_package

    repo = Path(__file__).resolve().parents[2]
    build_tiny_package(tmp_path / "pkg", version="9.9.0")
    shutil.copytree(repo / "releases", tmp_path / "releases")
    proc = subprocess.run(
        [sys.executable, "-m", "rollout", "promote", "--plant", "demo", "--simulate", "slow",
         "--releases-dir", str(tmp_path / "releases"), "--state-dir", str(tmp_path / "state"),
         "--model-package", str(tmp_path / "pkg"), "--json"],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]  # slow model: a gate fails, rolled back
    body = report.section_rollout({"rollout": json.loads(proc.stdout)})
    assert "Could not render" not in body and "FAIL" in body
    assert DATA_URI.search(body)


def test_review_section_links_each_station_and_tables_the_labels(
    sample_data: dict[str, Any], tmp_path: Path
) -> None:
    body = sections_of(report.render_html(sample_data, base=tmp_path))["review"]
    links = re.findall(r'<a href="([^"]+)">', body)
    assert links == ["http://127.0.0.1:41001/", "http://127.0.0.1:41002/"]
    assert "<b>for this demo only</b>" in body and "demo-only-password" in body
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("<th>part</th>", 1)[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    assert cells == [
        ["s1/cam0-x-000007", "reject", "defect / crack", "demo-operator",
         "2026-11-28T05:00:31.250Z"],
        ["s2/cam0-y-000003", "reject", "good", "demo-operator", "2026-11-28T05:00:33.900Z"],
    ]  # fmt: skip


def test_field_section_shows_the_uploads_the_merge_and_the_version_trained_on_them(
    sample_data: dict[str, Any], tmp_path: Path
) -> None:
    body = sections_of(report.render_html(sample_data, base=tmp_path))["field"]
    assert "uploaded 5 sample(s), 0.18 MB" in body
    assert "s3://lineguard-demo-artifacts/samples/demo/" in body
    for layout, count in (("defect/crack", 1), ("good", 1), ("unlabelled/reject", 3)):
        assert f"<td>{layout}</td><td>{count}</td>" in body
    assert "added 2 labelled sample(s)" in body and "left 3 unlabelled" in body
    assert "brick@1.1.0 was trained on the merged data" in body
    del sample_data["field"]
    body = sections_of(report.render_html(sample_data, base=tmp_path))["field"]
    assert "Not run: no samples were uploaded" in body


def test_review_section_without_labels_or_stations_says_so(
    sample_data: dict[str, Any], tmp_path: Path
) -> None:
    sample_data["review"]["labels"] = []
    body = sections_of(report.render_html(sample_data, base=tmp_path))["review"]
    assert "Not run: no labels reached the cloud." in body and "<a href" in body
    sample_data["review"] = {"summary": "not run: no Chromium on this machine", "stations": []}
    body = sections_of(report.render_html(sample_data, base=tmp_path))["review"]
    assert "no Chromium on this machine" in body and "no review station was served" in body
    assert "<a href" not in body


def test_review_section_embeds_the_stations_screenshot(
    sample_data: dict[str, Any], tmp_path: Path
) -> None:
    Image.new("RGB", (400, 300), "white").save(tmp_path / "station-screenshot.png")
    sample_data["review"]["screenshot"] = "station-screenshot.png"
    body = sections_of(report.render_html(sample_data, base=tmp_path))["review"]
    (png,) = DATA_URI.findall(body)
    with Image.open(io.BytesIO(base64.b64decode(png))) as shot:
        assert shot.size == (400, 300)

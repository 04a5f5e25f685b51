"""The review station in a real browser: Debian's Chromium, headless, driven by Playwright, against
a real inspector process (``python -m inspector run``) whose station serves loopback.

The operators file is written by ``python -m inspector station-password``; frames from a folder
are judged by a real ONNX model whose manifest lists defect types and an anomaly map. The
browser is redirected to the login form without a session, logs in through the form, sees a
manual part with its image and the anomaly-map overlay over the part's defect, gives a verdict
with the keyboard (a defect type's key) and with a button, and the test then reads the journal
the inspector wrote: who, when, which label — and the part has left the queue.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from demo import browser
from inspector.journal import Journal
from inspector.transports.file import UPSTREAM_FILE, read_jsonl
from tests.support.tiny_model import build_tiny_package, expected_score, reference_array

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "out" / "station"
OPERATOR, PASSWORD = "alice", "correct horse battery"
DEFECT_TYPES = ("scratch", "crack")
TABLET = {"width": 1024, "height": 768}
SPOT = (0.3, 0.6)  # where the defect is, as fractions of the frame's width and height
IMAGE_READY = """() => {
  const image = document.getElementById('image');
  return !document.getElementById('part').hidden && image.complete && image.naturalWidth > 0;
}"""
# the overlay's opacity where the defect is and in the opposite corner of the frame
HEAT_AT = """([x, y]) => {
  const canvas = document.getElementById('heat');
  if (canvas.hidden || !canvas.width) return null;
  const at = (fx, fy) => canvas.getContext('2d').getImageData(
    Math.floor(fx * canvas.width), Math.floor(fy * canvas.height), 1, 1).data[3];
  return {spot: at(x, y), corner: at(0.95, 0.05), width: canvas.width,
          shown: canvas.getBoundingClientRect().width};
}"""


def _chromium() -> str:
    found = browser.find_chromium()
    if found is None:
        message = "chromium is not installed (scripts/install-debs.sh installs Debian's)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI requires the browser test")
        pytest.skip(message)
    return found


def spotted(base: float, spot: float, radius: float, size: int = 240) -> Image.Image:
    """A frame like the model's reference, shifted by ``base``, darker by ``spot`` in a disc."""
    ref = reference_array(size).astype(np.float64)
    ys, xs = np.mgrid[0:size, 0:size] / size
    disc = (xs - SPOT[0]) ** 2 + (ys - SPOT[1]) ** 2 <= radius**2
    pixels = ref + base * 255 - disc[..., None] * spot * 255
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_station(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until the station answers its login form (the process must stay up meanwhile)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the inspector exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/login", headers={"Host": f"127.0.0.1:{port}"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the review station did not answer on {port}:\n{log.read_text()[-3000:]}")


@pytest.fixture
def inspector(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A running inspector (file transport, folder source) with its station on loopback."""
    package = tmp_path / "tiny-1.0.0"
    build_tiny_package(package, defect_types=DEFECT_TYPES)
    frames = tmp_path / "frames"
    frames.mkdir()
    images = {
        "a-good.png": spotted(0.0, 0.0, 0.0),
        "b-manual.png": spotted(0.0, 0.5, 0.3),
        "c-manual.png": spotted(0.01, 0.5, 0.3),
        "d-reject.png": spotted(0.05, 0.6, 0.4),
    }
    for name, image in images.items():
        image.save(frames / name)
    scores = {name: expected_score(image) for name, image in images.items()}
    assert scores["a-good.png"] < 0.1 <= scores["b-manual.png"] < 0.2 <= scores["d-reject.png"]
    assert 0.1 <= scores["c-manual.png"] < 0.2
    operators = tmp_path / "station" / "operators.json"
    done = subprocess.run(
        [sys.executable, "-m", "inspector", "station-password", "--operator", OPERATOR,
         "--bind", "127.0.0.1", "--file", str(operators)],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    port = free_port()
    journal = tmp_path / "journal.db"
    log = tmp_path / "inspector.log"
    cmd = [
        sys.executable, "-m", "inspector", "run", "--transport", "file",
        "--out", str(tmp_path / "out"), "--images", str(frames), "--model", str(package),
        "--journal", str(journal), "--plant", "p1", "--line", "l1", "--station", "s1",
        "--device", "dev-1", "--review-operators", str(operators), "--review-port", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_station(proc, port, log)
        yield {"url": f"http://127.0.0.1:{port}", "proc": proc, "journal": journal,
               "out": tmp_path / "out", "log": log}  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_an_operator_reviews_a_manual_part_in_chromium(
    inspector: dict[str, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    url = inspector["url"]
    console: list[str] = []
    started = datetime.datetime.now(datetime.UTC)
    with sync_playwright() as playwright:
        chromium = browser.launch_playwright(playwright, executable)
        try:
            page = chromium.new_context(viewport=TABLET).new_page()
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: console.append(str(exc)))
            page.on(
                "response",
                lambda r: console.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )

            # without a session the page sends the browser to the login form
            page.goto(url + "/")
            assert page.url == url + "/login"
            assert page.request.get(url + "/api/state").status == 401
            page.fill("input[name=operator]", OPERATOR)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(url + "/")

            # both manual parts are queued (the page polls every 2 s); the first is on screen
            page.wait_for_function(
                "() => document.getElementById('count').textContent === '(2)'", timeout=30_000
            )
            page.wait_for_function(IMAGE_READY, timeout=30_000)
            page.wait_for_function("() => !document.getElementById('heat').hidden")
            caption = page.text_content("#caption") or ""
            first = caption.split(" · ")[1]
            assert first in ("b-manual.png", "c-manual.png") and "manual" in caption
            assert page.eval_on_selector("#image", "i => i.naturalWidth") == 240
            heat = page.evaluate(HEAT_AT, list(SPOT))
            assert heat is not None and heat["width"] == 32  # the model's map, 32 × 32 cells
            assert heat["spot"] > 100 and heat["corner"] == 0, heat  # heat on the defect only
            assert heat["shown"] == page.eval_on_selector(
                "#image", "i => i.getBoundingClientRect().width"
            )
            buttons = page.locator("#buttons button").all_text_contents()
            assert buttons == ["Good (g)", "Defect (d)", "1 scratch", "2 crack"]
            shot = tmp_path / "review-station.png"
            page.screenshot(path=str(shot), full_page=True)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            (SCREENSHOTS / "review-station.png").write_bytes(shot.read_bytes())
            print(f"\nreview station screenshot: {SCREENSHOTS / 'review-station.png'} ({shot})")

            # the m key hides the overlay and shows it again, and so does its box; a tapped
            # box keeps the focus, and the keys still act after it
            page.keyboard.press("m")
            assert page.evaluate("() => document.getElementById('heat').hidden") is True
            page.keyboard.press("m")
            assert page.evaluate("() => document.getElementById('heat').hidden") is False
            page.click("#showmap")
            assert page.evaluate("() => document.getElementById('heat').hidden") is True
            page.click("#showmap")
            assert page.evaluate("() => document.getElementById('heat').hidden") is False
            assert page.evaluate("() => document.activeElement.id") == "showmap"

            # key 1: defect, the first defect type; the page acts once the part was on screen
            # for its pause (400 ms), so the test waits that long before the key
            page.wait_for_timeout(600)
            page.keyboard.press("1")
            page.wait_for_function(
                f"() => document.getElementById('status').textContent"
                f" === '{first}: defect / scratch (recorded)'"
            )
            page.wait_for_function("() => document.getElementById('count').textContent === '(1)'")
            queue = page.locator("#queue li").all_text_contents()
            assert len(queue) == 1 and first not in queue[0]
            labelled = page.locator("#labelled li").all_text_contents()
            assert any(f"{first}: defect / scratch by {OPERATOR}" in item for item in labelled)

            # the other part, with the Good button
            page.wait_for_function(IMAGE_READY)
            second = (page.text_content("#caption") or "").split(" · ")[1]
            assert second != first
            page.wait_for_timeout(600)
            page.click("#good")
            page.wait_for_function(
                f"() => document.getElementById('status').textContent === '{second}: good (recorded)'"
            )
            page.wait_for_function(
                "() => !document.getElementById('empty').hidden"
                " && document.getElementById('count').textContent === '(0)'"
            )
            (SCREENSHOTS / "review-station-done.png").write_bytes(page.screenshot(full_page=True))
        finally:
            chromium.close()
    finished = datetime.datetime.now(datetime.UTC)
    assert console == []
    assert _stop(inspector["proc"]) == 0, inspector["log"].read_text()[-3000:]

    journal = Journal(inspector["journal"], device="dev-1", cap_bytes=512 << 20)
    try:
        review = journal.review(first)
        assert review is not None
        assert (review.label, review.defect_type, review.operator, review.revision) == (
            "defect", "scratch", OPERATOR, 1,
        )  # fmt: skip
        assert review.labelled_at is not None
        at = datetime.datetime.fromisoformat(review.labelled_at.replace("Z", "+00:00"))
        assert started - datetime.timedelta(seconds=1) <= at <= finished
        other = journal.review(second)
        assert other is not None and (other.label, other.operator) == ("good", OPERATOR)
        assert journal.reviews(decisions=("manual",), labelled=False, limit=10) == []
    finally:
        journal.close()
    # and the verdicts went upstream with the results
    sent = [
        label
        for line in read_jsonl(inspector["out"] / UPSTREAM_FILE)
        if line["topic"].endswith("/results")
        for label in line["payload"].get("labels", [])
    ]
    assert sorted((m["part_id"], m["label"], m["operator"]) for m in sent) == sorted(
        [(first, "defect", OPERATOR), (second, "good", OPERATOR)]
    )


def test_the_station_serves_the_map_only_with_a_session(inspector: dict[str, Any]) -> None:
    """The map of a queued part: a PNG behind the session like the image, 404 for none."""
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    url = inspector["url"]
    with sync_playwright() as playwright:
        chromium = browser.launch_playwright(playwright, executable)
        try:
            context = chromium.new_context(viewport=TABLET)
            page = context.new_page()
            page.goto(url + "/")
            page.fill("input[name=operator]", OPERATOR)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(url + "/")
            state = json.loads(page.request.get(url + "/api/state").text())
            deadline = time.monotonic() + 30
            while len(state["queue"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.3)
                state = json.loads(page.request.get(url + "/api/state").text())
            part = state["queue"][0]
            assert part["map"] and part["map"] != part["image"]
            answer = page.request.get(url + part["map"])
            assert answer.status == 200 and answer.headers["content-type"] == "image/png"
            assert answer.body().startswith(b"\x89PNG")
            assert page.request.get(url + "/api/map/999999").status == 404
            anonymous = chromium.new_context().request
            assert anonymous.get(url + part["map"]).status == 401
            anonymous.dispose()
        finally:
            chromium.close()

"""One review turn through the real review station pages, in headless Chromium (Playwright).

The demo's devices each serve their station on loopback; this logs in through each login form,
shows rejected parts too (the demo's line sees few ``manual`` parts), and gives a few parts the
verdict a person looking at them would give — the part's ground truth from the demo's replay
folders — with the page's own keys (g, d, 1–9), as an operator on a tablet would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo import browser

SETTLE_S = 0.6  # the page acts on a key once the part was on screen 400 ms (station.js)
TABLET = {"width": 1024, "height": 768}
IMAGE_READY = """() => {
  const image = document.getElementById('image');
  return !document.getElementById('part').hidden &&
    (image.complete && image.naturalWidth > 0 || !image.getAttribute('src'));
}"""


@dataclass(frozen=True)
class StationAccess:
    """Where one device's station is served and the demo's (demo-only) login."""

    device: str
    station: str
    url: str
    operator: str
    password: str


@dataclass
class ReviewTurn:
    """What the turn did: verdicts given per device, the screenshot, what went wrong."""

    verdicts: list[dict[str, Any]] = field(default_factory=list)
    screenshot: Path | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def verdict_key(truth: str, defect_types: Sequence[str]) -> tuple[str, str, str | None]:
    """The key an operator presses for a part that really is ``truth`` (``good`` or a defect
    type): (key, label, defect type)."""
    if truth == "good":
        return "g", "good", None
    if truth in defect_types and defect_types.index(truth) < 9:
        return str(defect_types.index(truth) + 1), "defect", truth
    return "d", "defect", None


def review_turn(
    stations: Sequence[StationAccess],
    truth_of: Callable[[str, str], str | None],
    *,
    parts_per_station: int = 2,
    screenshot: Path | None = None,
    deadline_s: float = 60.0,
) -> ReviewTurn:
    """Review up to ``parts_per_station`` queued parts on every station, within ``deadline_s``.

    ``truth_of(station, part_id)`` is what the part really is (None: unknown, skipped). Never
    raises for a station that fails: its problem is recorded and the next one is reviewed.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    turn = ReviewTurn()
    started = time.monotonic()
    end = started + deadline_s
    with sync_playwright() as playwright:
        chromium = browser.launch_playwright(playwright)
        try:
            for index, access in enumerate(stations):
                context = chromium.new_context(viewport=TABLET)
                try:
                    shot = screenshot if index == 0 else None
                    _review_one(context, access, truth_of, parts_per_station, shot, end, turn)
                except (PlaywrightError, TimeoutError) as exc:
                    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    turn.problems.append(f"{access.device}: {first_line}")
                finally:
                    context.close()
        finally:
            chromium.close()
    turn.seconds = round(time.monotonic() - started, 1)
    return turn


def _review_one(
    context: Any,
    access: StationAccess,
    truth_of: Callable[[str, str], str | None],
    parts: int,
    screenshot: Path | None,
    end: float,
    turn: ReviewTurn,
) -> None:
    page = context.new_page()
    page.goto(access.url + "/")
    if not page.url.endswith("/login"):
        raise TimeoutError(f"{access.url}/ did not send a browser without a session to /login")
    page.fill("input[name=operator]", access.operator)
    page.fill("input[name=password]", access.password)
    page.click("button[type=submit]")
    page.wait_for_url(access.url + "/")
    page.check("#rejects")  # rejected parts too: the demo's line sees few manual parts
    timeout_ms = max(1000.0, (end - time.monotonic()) * 1000)
    page.wait_for_function(IMAGE_READY, timeout=timeout_ms)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        turn.screenshot = screenshot
    types = [text.split(" ", 1)[1] for text in page.locator("#types button").all_text_contents()]
    done = 0
    while done < parts and time.monotonic() < end:
        page.wait_for_function(IMAGE_READY, timeout=max(1000.0, (end - time.monotonic()) * 1000))
        caption = page.text_content("#caption") or ""
        fields = caption.split(" · ")
        if len(fields) < 3:
            break
        part_id, decision = fields[1], fields[2].split(" ")[0]
        truth = truth_of(access.station, part_id)
        if truth is None:
            page.keyboard.press("j")  # not a part the demo knows: the next one
            continue
        key, label, defect_type = verdict_key(truth, types)
        page.wait_for_timeout(SETTLE_S * 1000)
        page.keyboard.press(key)
        expected = f"{part_id}: {label}" + (f" / {defect_type}" if defect_type else "")
        page.wait_for_function(
            "(text) => document.getElementById('status').textContent.startsWith(text)",
            arg=expected,
            timeout=10_000,
        )
        status = page.text_content("#status") or ""
        turn.verdicts.append(
            {"device": access.device, "station": access.station, "part_id": part_id,
             "decision": decision, "label": label, "defect_type": defect_type,
             "truth": truth, "status": status}
        )  # fmt: skip
        done += 1
        # the verdict's refresh takes the part off the queue; an empty queue ends this station
        page.wait_for_function(
            "(id) => !(document.getElementById('caption').textContent.split(' · ')[1] === id"
            " && !document.getElementById('part').hidden)",
            arg=part_id,
        )
        if page.evaluate("() => document.getElementById('part').hidden"):
            break

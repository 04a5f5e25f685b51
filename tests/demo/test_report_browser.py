"""The demo report in a real browser: headless Chromium loads it from disk, every plot renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from demo import browser, report

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "out" / "demo" / "report-screenshot.png"

pytestmark = pytest.mark.skipif(
    browser.find_chromium() is None,
    reason="chromium is not installed: the browser test of the report is skipped "
    "(make setup installs Debian's chromium when it can)",
)


def test_report_loads_in_chromium_with_every_plot_rendered(
    sample_data: dict[str, Any], tmp_path: Path
) -> None:
    page = report.write_report(sample_data, tmp_path / "site", base=tmp_path)
    check = browser.check_page(page, SCREENSHOT, timeout_s=90)
    assert check.title == sample_data["title"]
    assert check.sections == [anchor for anchor, _ in report.SECTIONS]
    assert len(check.images) == 8
    assert check.broken_images == [], check.broken_images
    assert all(img["width"] > 200 for img in check.images)
    assert check.console_errors == []
    with Image.open(SCREENSHOT) as shot:
        assert shot.format == "PNG"
        assert shot.width == 1280 and shot.height > 2000  # the whole page, not one viewport
        colours = shot.convert("RGB").resize((64, 64)).getcolors(64 * 64)
        assert colours is not None and len(colours) > 20  # not a blank page


def test_the_check_catches_a_broken_image_and_a_console_error(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "<title>bad</title></head><body>"
        '<img alt="gone" src="missing.png">'
        '<img alt="ok" src="data:image/png;base64,'
        'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==">'
        "<script>console.error('boom')</script></body></html>"
    )
    check = browser.check_page(page, timeout_s=90)
    assert [img["alt"] for img in check.broken_images] == ["gone"]
    assert any("boom" in e for e in check.console_errors)
    assert any("missing.png" in e for e in check.console_errors)  # the failed load is logged too
    assert not check.ok

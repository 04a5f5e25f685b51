"""Open a local HTML page in headless Chromium and check it: images rendered, no console error.

Talks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (NUL-terminated JSON on file
descriptors 3 and 4), so it needs no websocket library, no TCP port and no network. The browser
runs with a fresh ``--user-data-dir`` and is always killed at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)
# Playwright passes --headless and --remote-debugging-pipe itself (it speaks CDP over the same
# pipe); the rest are the flags above
PLAYWRIGHT_FLAGS = tuple(
    f for f in CHROMIUM_FLAGS if f not in ("--headless", "--remote-debugging-pipe")
)
# what the page reports about itself once loaded
PAGE_PROBE = """JSON.stringify({
  title: document.title,
  sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
    src: i.currentSrc.slice(0, 40)})),
})"""


class BrowserError(RuntimeError):
    """The browser could not be started or did not answer."""


class BrowserNotFound(BrowserError):
    """No Chromium on this machine."""


@dataclass
class PageCheck:
    """What the browser saw on the page."""

    url: str
    title: str
    sections: list[str]
    images: list[dict[str, Any]]
    console_errors: list[str]
    screenshot: Path | None = None
    elapsed_s: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        """Images that did not load or decode (naturalWidth 0)."""
        return [i for i in self.images if not i["complete"] or i["width"] <= 0]

    @property
    def ok(self) -> bool:
        """True when every image rendered and the console stayed clean."""
        return not self.broken_images and not self.console_errors


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_playwright(playwright: Any, executable: str | None = None) -> Any:
    """Debian's Chromium under Playwright for Python, headless, with :data:`PLAYWRIGHT_FLAGS`.

    No browser is downloaded (``playwright install`` is never needed): the machine's Chromium
    is launched by path. Each launch gets a fresh temporary profile, removed when it closes
    (Playwright's ``BrowserType.launch``; ``launch_persistent_context`` is the one that keeps a
    profile). Raises :class:`BrowserNotFound` without a Chromium.
    """
    path = executable or find_chromium()
    if path is None:
        raise BrowserNotFound(f"no Chromium found (tried {', '.join(CHROMIUM_CANDIDATES)})")
    return playwright.chromium.launch(
        executable_path=path, headless=True, args=list(PLAYWRIGHT_FLAGS)
    )


class _Pipe:
    """A CDP session over the browser's debugging pipe."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float) -> None:
        self._w, self._r, self._deadline = to_browser, from_browser, deadline
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._w, data) :]
        return self._next_id

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise BrowserError("the browser closed its debugging pipe (did it crash?)")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send a command and wait for its answer, keeping events that arrive meanwhile."""
        want = self.send(method, params, session)
        while True:
            msg = self._read_message()
            if msg.get("id") == want:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message', msg['error'])}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        """Wait for an event (it may have arrived already)."""
        for i, ev in enumerate(self.events):
            if ev["method"] == method and (session is None or ev.get("sessionId") == session):
                return self.events.pop(i)
        while True:
            msg = self._read_message()
            if "method" in msg:
                if msg["method"] == method and (session is None or msg.get("sessionId") == session):
                    return msg
                self.events.append(msg)


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for ev in events:
        p = ev.get("params", {})
        if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            )
        elif ev["method"] == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            errors.append(
                details.get("exception", {}).get("description") or details.get("text", "exception")
            )
        elif ev["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            errors.append(
                f"{entry.get('source', '')}: {entry.get('text', '')} {entry.get('url', '')}".strip()
            )
    return errors


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are above fd 9, so moving them onto fds 3 and 4 cannot clobber them."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


def check_page(
    html_path: Path,
    screenshot: Path | None = None,
    *,
    width: int = 1280,
    timeout_s: float = 60.0,
    chromium: str | None = None,
) -> PageCheck:
    """Load ``html_path`` from disk in headless Chromium; report images, errors, screenshot."""
    binary = chromium or find_chromium()
    if binary is None:
        raise BrowserNotFound("chromium is not installed (apt-get install chromium)")
    path = Path(html_path).resolve()
    if not path.is_file():
        raise BrowserError(f"no such page: {path}")
    started = time.monotonic()
    deadline = started + timeout_s
    to_r, to_w = _high_pipe()  # we write commands, the browser reads them on fd 3
    from_r, from_w = _high_pipe()  # the browser writes on fd 4, we read
    profile = tempfile.mkdtemp(prefix="lineguard-chromium-")
    # bash (dash cannot name fds above 9) moves the pipe ends onto the browser's fds 3 and 4
    launcher = f'exec "$0" "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&- {to_w}>&- {from_r}<&-'
    bash = shutil.which("bash") or "/bin/bash"
    cmd = [
        bash,
        "-c",
        launcher,
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={width},900",
        "about:blank",
    ]
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed on every path below
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file,
            pass_fds=(to_r, from_w), start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        shutil.rmtree(profile, ignore_errors=True)
        stderr_file.close()
        os.close(to_w)
        os.close(from_r)
        raise BrowserError(f"cannot start {binary}: {exc}") from exc
    finally:
        os.close(to_r)
        os.close(from_w)
    cdp = _Pipe(to_w, from_r, deadline)
    try:
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            cdp.call(method, session=session)
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        url = path.as_uri()
        nav = cdp.call("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            raise BrowserError(f"cannot open {url}: {nav['errorText']}")
        cdp.wait_event("Page.loadEventFired", session=session)
        probe = cdp.call(
            "Runtime.evaluate", {"expression": PAGE_PROBE, "returnByValue": True}, session=session
        )
        info = json.loads(probe["result"]["value"])
        shot_path = None
        if screenshot is not None:
            metrics = cdp.call("Page.getLayoutMetrics", session=session)
            height = int(
                metrics.get("cssContentSize", metrics.get("contentSize", {})).get("height", 900)
            )
            shot = cdp.call(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True,
                 "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1}},
                session=session,
            )  # fmt: skip
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            shot_path = screenshot
        # let late console messages arrive: a round trip flushes what the page already logged
        cdp.call("Runtime.evaluate", {"expression": "1"}, session=session)
        with contextlib.suppress(BrowserError):  # it may close the pipe before it answers
            cdp.call("Browser.close")
        return PageCheck(
            url=url,
            title=info["title"],
            sections=info["sections"],
            images=info["images"],
            console_errors=_console_errors(cdp.events),
            screenshot=shot_path,
            elapsed_s=round(time.monotonic() - started, 2),
        )
    except BrowserError as exc:
        stderr_file.seek(0)
        tail = stderr_file.read().decode(errors="replace").strip().splitlines()[-5:]
        raise BrowserError(f"{exc}; browser stderr: {' | '.join(tail) or '(empty)'}") from exc
    finally:
        os.close(to_w)
        os.close(from_r)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # helpers (zygote, gpu, crashpad) share the session; make sure none outlives the check
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stderr_file.close()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: check a page in headless Chromium, optionally keep a screenshot."""
    p = argparse.ArgumentParser(prog="python -m demo.browser", description=__doc__.splitlines()[0])
    p.add_argument("page", type=Path, help="HTML file to open")
    p.add_argument("--screenshot", type=Path, help="PNG to write (whole page)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default %(default)s)")
    args = p.parse_args(argv)
    try:
        check = check_page(args.page, args.screenshot, timeout_s=args.timeout)
    except BrowserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{check.url}: {len(check.images)} images, {len(check.broken_images)} broken, "
          f"{len(check.console_errors)} console errors ({check.elapsed_s} s)")  # fmt: skip
    for err in check.console_errors:
        print(f"console error: {err}")
    for img in check.broken_images:
        print(f"broken image: {img}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

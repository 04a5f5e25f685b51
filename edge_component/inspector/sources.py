"""Where frames come from: a directory of images, a simulated camera, an OpenCV capture.

Every source yields :class:`Frame` objects stamped with the capture time (monotonic, for the
deadline and the latency) and the wall time (the result's ``ts``). A source never decodes: a
file it cannot read becomes a frame with ``error`` set, which the engine judges ``manual``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

DEFAULT_MAX_BYTES = 32 * 1024 * 1024


class SourceError(Exception):
    """A source cannot start or continue (missing folder, no images, OpenCV missing...)."""


@dataclass(frozen=True)
class Frame:
    """One frame of one part from one camera.

    ``data`` holds encoded image bytes; ``image`` an already decoded image (OpenCV); ``error``
    says why the source could not read it. ``key`` identifies the frame in its source (the file
    name), for resuming after a restart.
    """

    camera: str
    part_id: str
    data: bytes | None = None
    image: Image.Image | None = field(default=None, compare=False)
    captured: float = 0.0
    wall: float = 0.0
    error: str | None = None
    key: str = ""


def read_capped(path: Path, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes, so an oversized file is seen without loading it."""
    with path.open("rb") as handle:
        return handle.read(max_bytes + 1)


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.is_file() and not p.name.startswith((".", "~"))
    )


JUDGED_MODES = ("move", "delete")
JUDGED_DIR = ".judged"
DEFAULT_JUDGED_CAP_BYTES = 256 * 1024 * 1024


def _file_key(path: Path) -> str | None:
    """``name<TAB>mtime_ns<TAB>size``: the file, not just its name (names may be reused)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{path.name}\t{st.st_mtime_ns}\t{st.st_size}"


class DirectorySource:
    """Every regular file of a directory, in arrival order; the part id is the file name.

    The whole name, extension included: ``part-7.png`` and ``part-7.jpg`` are two parts. Every
    file that appears gets exactly one frame: once the caller has journaled a frame it calls
    :meth:`acknowledge`, which moves the file into ``judged_dir`` (bounded by
    ``judged_cap_bytes``, oldest out first) or deletes it, so what is left in the folder is
    exactly what is still to judge, whatever the names sort like or the order files complete in.

    Args:
        directory: the folder to read.
        camera: the camera id carried in results.
        after: the key of the last journaled frame (a journal cursor): if that very file is
            still here (killed between the journal commit and the move), it is moved, not judged.
        max_bytes: files are read only up to this many bytes (+1, so oversize is detectable).
        judged: ``move`` or ``delete`` judged files.
        judged_dir: where ``move`` puts them (default ``<directory>/.judged``).
        judged_cap_bytes: the most ``judged_dir`` keeps.
        clock, wall_clock: monotonic and epoch seconds (injected for tests).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        camera: str = "dir",
        after: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        judged: str = "move",
        judged_dir: Path | str | None = None,
        judged_cap_bytes: int = DEFAULT_JUDGED_CAP_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise SourceError(f"{self.directory}: image directory not found")
        if judged not in JUDGED_MODES:
            raise SourceError(f"judged: {judged!r} is not move or delete")
        if judged_cap_bytes < 0:
            raise SourceError(f"judged_cap_bytes must be >= 0, got {judged_cap_bytes}")
        self.camera = camera
        self.max_bytes = max_bytes
        self.judged = judged
        self.judged_dir = Path(judged_dir) if judged_dir else self.directory / JUDGED_DIR
        self.judged_cap_bytes = judged_cap_bytes
        self._kept: deque[tuple[Path, int]] | None = None
        self._kept_bytes = 0
        self._clock = clock
        self._wall = wall_clock
        if after and "\t" in after:
            name = after.split("\t", 1)[0]
            if _file_key(self.directory / name) == after:
                self._dispose(self.directory / name)

    def files(self) -> list[Path]:
        """The files this source will yield now, oldest first (modification time, then name)."""

        def arrival(path: Path) -> tuple[int, str]:
            try:
                return path.stat().st_mtime_ns, path.name
            except OSError:
                return 0, path.name

        return sorted(_image_files(self.directory), key=arrival)

    def frame_for(self, path: Path) -> Frame:
        """Read one file into a frame (an unreadable file gives a frame with ``error``)."""
        captured, wall = self._clock(), self._wall()
        key = _file_key(path) or f"{path.name}\t0\t0"
        try:
            data: bytes | None = read_capped(path, self.max_bytes)
            error = None
        except OSError as exc:
            data, error = None, f"image_unreadable: {exc.strerror or type(exc).__name__}"
        return Frame(
            camera=self.camera,
            part_id=path.name,
            data=data,
            captured=captured,
            wall=wall,
            error=error,
            key=key,
        )

    def acknowledge(self, frame: Frame) -> None:
        """The frame is journaled: move or delete its file; raise SourceError if that fails."""
        self._dispose(self.directory / frame.key.split("\t", 1)[0])

    def _dispose(self, path: Path) -> None:
        try:
            if self.judged == "delete":
                path.unlink(missing_ok=True)
                return
            self.judged_dir.mkdir(parents=True, exist_ok=True)
            kept = self._judged_files()
            target = self.judged_dir / path.name
            size = path.stat().st_size
            os.replace(path, target)
        except FileNotFoundError:
            return  # removed by someone else meanwhile: nothing left to judge twice
        except OSError as exc:
            # left in place it would be judged again at every poll: stop instead
            raise SourceError(
                f"{path}: cannot {self.judged} a judged file ({exc.strerror or exc})"
            ) from None
        kept.append((target, size))
        self._kept_bytes += size
        while self._kept_bytes > self.judged_cap_bytes and kept:
            old, old_size = kept.popleft()
            self._kept_bytes -= old_size
            with contextlib.suppress(FileNotFoundError):
                old.unlink()

    def _judged_files(self) -> deque[tuple[Path, int]]:
        if self._kept is None:  # scanned once; then kept up to date as files move in
            entries = []
            for p in self.judged_dir.iterdir():
                with contextlib.suppress(OSError):
                    if p.is_file():
                        st = p.stat()
                        entries.append((st.st_mtime_ns, p, st.st_size))
            entries.sort()
            self._kept = deque((p, size) for _, p, size in entries)
            self._kept_bytes = sum(size for _, _, size in entries)
        return self._kept

    def __iter__(self) -> Iterator[Frame]:
        for path in self.files():
            yield self.frame_for(path)

    def watch(
        self,
        stop: threading.Event,
        *,
        poll_s: float = 0.5,
        idle: Callable[[float], None] | None = None,
    ) -> Iterator[Frame]:
        """Yield files as they appear (once their size stopped changing), until ``stop`` is set.

        A file is yielded again at the next poll if it was not acknowledged. Between polls
        ``idle(until)`` is called repeatedly (it must return by ``until``), so the caller's
        heartbeat and health keep their interval while no file arrives.
        """
        sizes: dict[str, int] = {}
        while not stop.is_set():
            for path in self.files():
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if sizes.get(path.name) != size:
                    sizes[path.name] = size  # still being written, or new: look again next poll
                    continue
                sizes.pop(path.name, None)
                yield self.frame_for(path)
            if idle is None:
                stop.wait(poll_s)
                continue
            next_poll = self._clock() + poll_s
            while not stop.is_set() and self._clock() < next_poll:
                idle(next_poll)


class SimulatedCamera:
    """A camera replaying a dataset folder at a set frame rate.

    Frames are due at ``start + n / fps``; part ids are ``<camera>-<epoch>-<n:06d>``
    (``<camera>-<n:06d>`` without an epoch): ``n`` restarts with a new journal, the journal's
    epoch does not repeat, so part ids stay unique per device across restarts and resets. Each file is read
    when its frame is emitted (memory stays flat however large the folder); a file that cannot
    be read gives a frame with ``error`` set.

    Args:
        folder: images to replay in name order (looping when ``loop``).
        camera: camera id.
        fps: frames per second (> 0).
        max_frames: stop after this many frames (None: unbounded, or one pass without ``loop``).
        first_part: number of the first part (to resume after a restart).
        epoch: the journal's :attr:`~inspector.journal.Journal.epoch`, put into part ids.
        phase_s: the first frame is due this long after the start (free-running cameras are
            out of phase with each other; hardware-triggered ones are not).

    A frame is stamped with the time it was due (its capture), not when it was read: a loop
    that polls late sees that lateness in the frame's latency and against its deadline.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        camera: str,
        fps: float,
        loop: bool = True,
        max_frames: int | None = None,
        first_part: int = 0,
        epoch: str = "",
        phase_s: float = 0.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not fps > 0:
            raise SourceError(f"camera {camera}: fps must be > 0, got {fps}")
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(f"camera {camera}: dataset folder {folder} not found")
        files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if not files:
            raise SourceError(f"camera {camera}: no files in {folder}")
        self._files = sorted(files)
        self._max_bytes = max_bytes
        self.camera = camera
        self.fps = fps
        self.loop = loop
        self.max_frames = max_frames if loop else min(max_frames or len(files), len(files))
        self.count = 0
        self.first_part = first_part
        self._prefix = f"{camera}-{epoch}-" if epoch else f"{camera}-"
        self.phase_s = max(0.0, phase_s)
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._start: float | None = None

    def next_due(self) -> float:
        """Monotonic time at which the next frame is due."""
        if self._start is None:
            self._start = self._clock()
        return self._start + self.phase_s + self.count / self.fps

    def exhausted(self) -> bool:
        """True when ``max_frames`` frames were emitted."""
        return self.max_frames is not None and self.count >= self.max_frames

    def poll(self) -> Frame | None:
        """The next frame if it is due now (for loops serving several cameras), else None."""
        if self.exhausted() or self._clock() < self.next_due():
            return None
        return self._emit()

    def _emit(self) -> Frame:
        number = self.first_part + self.count
        path = self._files[self.count % len(self._files)]
        due = self.next_due()
        self.count += 1
        now = self._clock()
        captured = min(due, now)  # taken when due; read now (never stamped in the future)
        wall = self._wall() - (now - captured)
        try:
            data: bytes | None = read_capped(path, self._max_bytes)
            error = None
        except OSError as exc:
            data, error = None, f"image_unreadable: {exc.strerror or type(exc).__name__}"
        return Frame(
            camera=self.camera,
            part_id=f"{self._prefix}{number:06d}",
            data=data,
            captured=captured,
            wall=wall,
            error=error,
            key=str(number),
        )

    def __iter__(self) -> Iterator[Frame]:
        while not self.exhausted():
            wait = self.next_due() - self._clock()
            if wait > 0:
                self._sleep(wait)
            yield self._emit()


def _import_cv2() -> Any:
    try:
        import cv2  # optional extra: only OpenCV sources need it
    except ImportError:
        raise SourceError(
            "OpenCV capture needs the optional extra opencv-python-headless "
            "(pip install opencv-python-headless); it is not installed"
        ) from None
    return cv2


class OpenCVSource:
    """Frames from ``cv2.VideoCapture`` (a device index or an RTSP/file URL).

    OpenCV is imported only when the source opens; without it :class:`SourceError` says which
    package to install. Frames carry decoded RGB images (no re-encoding). Part ids number
    the frames read as :class:`SimulatedCamera` does: pass ``first_part`` (the journal's
    cursor + 1) and ``epoch`` so they do not repeat after a restart or a journal reset.
    """

    def __init__(
        self,
        url: str | int,
        *,
        camera: str,
        first_part: int = 1,
        epoch: str = "",
        max_failures: int = 10,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.camera = camera
        self.max_failures = max_failures
        self._clock = clock
        self._wall = wall_clock
        self._capture: Any = None
        self.count = 0
        self.first_part = first_part
        self._prefix = f"{camera}-{epoch}-" if epoch else f"{camera}-"

    def open(self) -> None:
        """Open the capture; raise :class:`SourceError` if OpenCV is missing or it fails."""
        cv2 = _import_cv2()
        capture = cv2.VideoCapture(self.url)
        if not capture.isOpened():
            raise SourceError(f"camera {self.camera}: cannot open {self.url!r}")
        self._capture = capture

    def close(self) -> None:
        """Release the capture."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __iter__(self) -> Iterator[Frame]:
        if self._capture is None:
            self.open()
        cv2 = _import_cv2()
        failures = 0
        while True:
            ok, pixels = self._capture.read()
            captured, wall = self._clock(), self._wall()
            if not ok or pixels is None:
                failures += 1
                if failures >= self.max_failures:
                    raise SourceError(
                        f"camera {self.camera}: {failures} failed reads from {self.url!r}"
                    )
                continue
            failures = 0
            image = Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))
            number = self.first_part + self.count
            self.count += 1
            yield Frame(
                camera=self.camera,
                part_id=f"{self._prefix}{number:06d}",
                image=image,
                captured=captured,
                wall=wall,
                key=str(number),
            )

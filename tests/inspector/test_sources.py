"""Frame sources: directory, simulated camera (with an injected clock), OpenCV's clear error."""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from inspector.sources import DirectorySource, OpenCVSource, SimulatedCamera, SourceError


def _folder(tmp_path: Path, names: list[str]) -> Path:
    """Files written in the order given, a second apart (file times are coarser than a loop)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    past = time.time_ns() - 10**12
    for i, name in enumerate(names):
        (folder / name).write_bytes(name.encode())
        os.utime(folder / name, ns=(past + i * 10**9, past + i * 10**9))
    return folder


def test_directory_yields_files_in_order_with_names_as_part_ids(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["b.png", "a.jpg", ".hidden", "c"])
    (folder / "sub").mkdir()
    frames = list(
        DirectorySource(folder, camera="cam-9", clock=lambda: 5.0, wall_clock=lambda: 7.0)
    )
    # in arrival order (written b, a, c), whatever the names sort like
    assert [(f.part_id, f.key.split("\t")[0], f.data) for f in frames] == [
        ("b.png", "b.png", b"b.png"),
        ("a.jpg", "a.jpg", b"a.jpg"),
        ("c", "c", b"c"),
    ]
    assert {(f.camera, f.captured, f.wall) for f in frames} == {("cam-9", 5.0, 7.0)}


def test_directory_reads_at_most_the_cap_plus_one(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "huge.png").write_bytes(b"x" * 5000)
    (frame,) = DirectorySource(folder, max_bytes=1000)
    assert frame.data is not None and len(frame.data) == 1001


def test_unreadable_path_becomes_an_error_frame(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png"])
    source = DirectorySource(folder)
    frame = source.frame_for(folder / "vanished.png")
    assert frame.data is None and (frame.error or "").startswith("image_unreadable")


def test_missing_directory_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        DirectorySource(tmp_path / "none")


def test_watch_yields_new_files_once_complete(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["1.png"])
    stop = threading.Event()
    source = DirectorySource(folder)
    seen = []
    for frame in source.watch(stop, poll_s=0.01):
        seen.append(frame.part_id)
        source.acknowledge(frame)
        if frame.part_id == "1.png":
            (folder / "2.png").write_bytes(b"two")
        if len(seen) == 2:
            stop.set()
    assert seen == ["1.png", "2.png"]


class FakeTime:
    """A clock and a sleep that advances it: simulated cameras run without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_simulated_camera_paces_frames_at_its_fps(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png", "b.png"])
    fake = FakeTime()
    camera = SimulatedCamera(
        folder,
        camera="cam-2",
        fps=4.0,
        max_frames=5,
        clock=fake.clock,
        sleep=fake.sleep,
        wall_clock=lambda: 1e9,
    )
    frames = list(camera)
    assert [f.part_id for f in frames] == [f"cam-2-{i:06d}" for i in range(5)]
    assert [f.captured for f in frames] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [f.data for f in frames] == [b"a.png", b"b.png", b"a.png", b"b.png", b"a.png"]
    assert fake.slept == pytest.approx(1.0)


def test_a_simulated_camera_frame_is_stamped_when_due_and_phases_spread(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png"])
    fake = FakeTime()
    late = SimulatedCamera(folder, camera="c", fps=2.0, phase_s=0.25, clock=fake.clock,
                           wall_clock=lambda: 1000.0 + fake.clock())  # fmt: skip
    assert late.poll() is None and late.next_due() == 0.25  # out of phase by 0.25 s
    fake.sleep(0.4)  # the loop polls 0.15 s late: the frame keeps the time it was taken
    frame = late.poll()
    assert frame is not None and frame.captured == 0.25 and frame.wall == pytest.approx(1000.25)
    assert late.next_due() == 0.75


def test_simulated_camera_poll_serves_several_cameras_in_one_loop(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png"])
    fake = FakeTime()
    cams = [
        SimulatedCamera(folder, camera=f"c{i}", fps=1.0, clock=fake.clock, first_part=10)
        for i in range(3)
    ]
    got = []
    for _ in range(25):  # 2.5 s in 100 ms steps
        got += [f.part_id for cam in cams if (f := cam.poll()) is not None]
        fake.now += 0.1
    assert sorted(got) == sorted(f"c{i}-{n:06d}" for i in range(3) for n in (10, 11, 12))


def test_simulated_camera_without_loop_stops_after_one_pass(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png", "b.png"])
    fake = FakeTime()
    camera = SimulatedCamera(
        folder, camera="c", fps=100, loop=False, clock=fake.clock, sleep=fake.sleep
    )
    assert len(list(camera)) == 2


def test_simulated_camera_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="fps"):
        SimulatedCamera(tmp_path, camera="c", fps=0)
    with pytest.raises(SourceError, match="no files"):
        SimulatedCamera(tmp_path, camera="c", fps=1)


def test_opencv_source_says_clearly_when_opencv_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 → ImportError
    with pytest.raises(SourceError, match="opencv-python-headless"):
        OpenCVSource("rtsp://127.0.0.1:1/none", camera="c").open()


def test_simulated_camera_reports_a_file_that_vanished(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png", "b.png"])
    fake = FakeTime()
    camera = SimulatedCamera(folder, camera="c", fps=10, clock=fake.clock, sleep=fake.sleep)
    (folder / "b.png").unlink()
    first, second = next(iter(camera)), next(iter(camera))
    assert first.data == b"a.png" and first.error is None
    assert second.data is None and (second.error or "").startswith("image_unreadable")


class FakeCapture:
    """``cv2.VideoCapture`` at its boundary: two BGR frames, then failed reads."""

    def __init__(self, url: object) -> None:
        self.url = url
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.url != "bad"

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads += 1
        if self.reads > 2:
            return False, None
        pixels = np.zeros((4, 6, 3), dtype=np.uint8)
        pixels[..., 0] = 255  # blue in OpenCV's BGR order
        return True, pixels

    def release(self) -> None:
        self.released = True


def test_opencv_source_with_opencv_at_its_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cv2 = types.SimpleNamespace(
        VideoCapture=FakeCapture,
        COLOR_BGR2RGB=4,
        cvtColor=lambda pixels, code: pixels[..., ::-1].copy(),
    )
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2)
    source = OpenCVSource("rtsp://127.0.0.1/cam", camera="c", max_failures=3, clock=lambda: 1.0)
    frames = []
    with pytest.raises(SourceError, match="3 failed reads"):
        for frame in source:
            frames.append(frame)
    assert [f.part_id for f in frames] == ["c-000001", "c-000002"]
    resumed = OpenCVSource("rtsp://127.0.0.1/cam", camera="c", first_part=7, epoch="k1",
                           max_failures=3, clock=lambda: 1.0)  # fmt: skip
    frames = []
    with pytest.raises(SourceError, match="3 failed reads"):
        for frame in resumed:
            frames.append(frame)
    assert [(f.part_id, f.key) for f in frames] == [("c-k1-000007", "7"), ("c-k1-000008", "8")]
    assert frames[0].image is not None and frames[0].image.getpixel((0, 0)) == (0, 0, 255)
    source.close()
    with pytest.raises(SourceError, match="cannot open 'bad'"):
        OpenCVSource("bad", camera="c").open()


def test_files_sharing_a_stem_are_distinct_parts(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["part-7.png", "part-7.jpg", "part-7"])
    ids = [f.part_id for f in DirectorySource(folder)]
    assert len(set(ids)) == 3 and sorted(ids) == ["part-7", "part-7.jpg", "part-7.png"]


def _watch_until(source: DirectorySource, stop: threading.Event, on_frame, limit: int) -> list[str]:
    seen: list[str] = []
    for frame in source.watch(stop, poll_s=0.01):
        seen.append(frame.part_id)
        source.acknowledge(frame)
        on_frame(frame, seen)
        if len(seen) >= limit:
            stop.set()
    return seen


def test_a_file_whose_name_sorts_first_but_arrives_late_is_judged(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["b.png"])

    def later(frame, seen) -> None:
        if frame.part_id == "b.png":
            (folder / "a.png").write_bytes(b"late but first by name")

    seen = _watch_until(DirectorySource(folder), threading.Event(), later, 2)
    assert seen == ["b.png", "a.png"]


def test_a_file_still_being_written_is_judged_once_complete(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [])
    growing = folder / "a.png"
    growing.write_bytes(b"x")
    stop = threading.Event()
    source = DirectorySource(folder)
    frames = source.watch(stop, poll_s=0.01)
    (folder / "b.png").write_bytes(b"stable")
    seen = []
    for _ in range(3):  # a.png grows between polls while b.png is stable and judged
        growing.write_bytes(growing.read_bytes() + b"x")
        frame = next(frames)
        seen.append(frame.part_id)
        source.acknowledge(frame)
        if frame.part_id == "a.png":
            break
    assert seen[:2] == ["b.png", "a.png"] or seen[:1] == ["a.png"]
    assert "a.png" in seen and seen.count("a.png") == 1
    stop.set()


def test_judged_files_are_moved_and_the_judged_folder_is_bounded(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [])
    for i in range(5):
        (folder / f"{i}.png").write_bytes(b"x" * 1000)
    source = DirectorySource(folder, judged="move", judged_cap_bytes=2500)
    for frame in source:
        source.acknowledge(frame)
    assert not [p for p in folder.iterdir() if p.is_file()]  # nothing left to judge again
    kept = sorted(p.name for p in (folder / ".judged").iterdir())
    assert kept == ["3.png", "4.png"]  # the newest, within 2500 bytes


def test_judged_files_can_be_deleted(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png", "b.png"])
    source = DirectorySource(folder, judged="delete")
    for frame in source:
        source.acknowledge(frame)
    assert list(folder.iterdir()) == []
    with pytest.raises(SourceError, match="judged: 'keep' is not move or delete"):
        DirectorySource(folder, judged="keep")


def test_a_file_journaled_before_a_crash_is_moved_not_judged_again(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.png", "b.png"])
    first = DirectorySource(folder)
    frame = next(iter(first))  # judged and journaled (cursor = its key) ... then killed
    restarted = DirectorySource(folder, after=frame.key)
    assert [f.part_id for f in restarted] == ["b.png"]
    assert (folder / ".judged" / "a.png").exists()
    # a new file reusing the name is another frame: the cursor names the file's size and time
    (folder / "a.png").write_bytes(b"a new part, same name")
    again = [f.part_id for f in DirectorySource(folder, after=frame.key)]
    assert again == ["b.png", "a.png"]  # in arrival order

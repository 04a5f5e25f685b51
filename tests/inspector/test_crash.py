"""kill -9 at random points, many times: every frame ends up with exactly one result upstream.

Each run is a real ``python -m inspector run`` process (file transport = the "cloud"), killed
with SIGKILL at a random moment — during start-up, judging, journaling or publishing — and
restarted. Once deduplicated by (device, seq), every frame must have exactly one result, and a
``seq`` seen twice must carry the identical result (a resend, which the cloud drops).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.transports.file import UPSTREAM_FILE, read_jsonl
from tests.support.tiny_model import image_bytes, part_image

REPO = Path(__file__).resolve().parents[2]


def run_and_kill(args: list[str], delay: float | None) -> int | None:
    """Start the service; SIGKILL it after ``delay`` s (None: let it finish). Exit code or None."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", "run", *args],
        cwd=REPO,
        # this checkout's code, whatever an installed .pth puts on the path
        env={**os.environ, "PYTHONPATH": f"{REPO / 'edge_component'}{os.pathsep}{REPO}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if delay is None:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        return proc.returncode
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return None
    finally:
        assert proc.stderr is not None
        proc.stderr.close()
    return proc.returncode


def deduplicated(out: Path) -> dict[tuple[str, int], dict[str, object]]:
    """Upstream results keyed by (device, seq); a repeated key must be the identical result."""
    seen: dict[tuple[str, int], dict[str, object]] = {}
    for line in read_jsonl(out / UPSTREAM_FILE):
        if not line["topic"].endswith("/results"):
            continue
        for result in line["payload"]["results"]:
            key = (str(result["device"]), int(result["seq"]))
            if key in seen:
                assert seen[key] == result, f"seq {key} reused for a different result"
            seen[key] = result
    return seen


def check_exactly_once(out: Path, parts: list[str]) -> None:
    results = deduplicated(out)
    per_part: dict[str, int] = {}
    for result in results.values():
        per_part[str(result["part_id"])] = per_part.get(str(result["part_id"]), 0) + 1
    assert sorted(per_part) == sorted(parts), "a frame has no result (or an unknown one appeared)"
    doubled = {p: n for p, n in per_part.items() if n != 1}
    assert not doubled, f"frames judged twice under different seqs: {doubled}"
    seqs = sorted(seq for _, seq in results)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap in seq"


def common_args(tmp_path: Path, images: Path, model: Path) -> list[str]:
    return [
        "--transport", "file", "--out", str(tmp_path / "out"),
        "--plant", "p1", "--line", "l1", "--station", "s1", "--device", "dev-1",
        "--images", str(images), "--model", str(model), "--journal", str(tmp_path / "j.db"),
        "--journal-cap-mb", "16", "--deadline-ms", "10000", "--heartbeat-interval", "0.2",
    ]  # fmt: skip


def test_kill9_camera_source_20_runs(tmp_path: Path, tiny_package_dir: Path) -> None:
    images = tmp_path / "dataset"
    images.mkdir()
    for i, delta in enumerate((0.0, 0.05, 0.15, 0.3)):
        (images / f"{i}.png").write_bytes(image_bytes(part_image(delta)))
    frames = 1200

    def args() -> list[str]:
        return [
            *common_args(tmp_path, images, tiny_package_dir),
            "--source", "camera", "--cameras", "2", "--fps", "100",
            "--max-frames", str(frames),
        ]  # fmt: skip

    rng = random.Random(int(os.environ.get("LINEGUARD_CRASH_SEED", "20261128")))
    killed = attempts = 0
    while killed < 20 and attempts < 40:
        attempts += 1
        if run_and_kill(args(), rng.uniform(0.3, 1.3)) is None:
            killed += 1
        else:
            # the run finished its frames before the kill: `--max-frames` counts across
            # restarts, so raising it gives the next runs more work to be killed in
            frames += 600
    run_and_kill(args(), None)
    assert killed >= 20, f"only {killed} of {attempts} runs were killed before finishing"
    from inspector.journal import Journal

    # one journal across every kill: one epoch, and the numbers resume from its cursors
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=16 << 20)
    epoch = journal.epoch
    journal.close()
    parts = [f"cam{c}-{epoch}-{n:06d}" for c in range(2) for n in range(frames)]
    check_exactly_once(tmp_path / "out", parts)


def test_kill9_folder_source(tmp_path: Path, tiny_package_dir: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    parts = []
    for i in range(40):
        (images / f"part-{i:03d}.png").write_bytes(image_bytes(part_image((i % 7) * 0.05)))
        parts.append(f"part-{i:03d}.png")
    args = [*common_args(tmp_path, images, tiny_package_dir), "--once"]
    rng = random.Random(7)
    for _ in range(8):
        run_and_kill(args, rng.uniform(0.4, 1.5))
    run_and_kill(args, None)
    check_exactly_once(tmp_path / "out", parts)
    # the journal says everything is sent
    lines = read_jsonl(tmp_path / "out" / UPSTREAM_FILE)
    assert json.loads(json.dumps(lines[-1]))["topic"].startswith("lineguard/p1/l1/s1/dev-1/")


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even ``except Exception``)."""


def test_kill_between_publish_and_mark_sent_resends_the_same_seqs(tmp_path: Path) -> None:
    """The one window random kills rarely hit: delivered upstream, not yet marked sent."""
    from inspector.journal import Journal
    from inspector.transports.file import FileTransport
    from inspector.uplink import Uplink
    from tests.inspector.test_journal import result
    from tests.inspector.test_uplink import FakeClock

    class DiesAfterPublish(FileTransport):
        def publish_upstream(self, topic: str, payload: bytes) -> None:
            super().publish_upstream(topic, payload)
            raise _Killed  # the batch is upstream; the process dies before mark_sent

    clock = FakeClock()
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=8 << 20)
    seqs = journal.append_many([result(f"p{i}") for i in range(30)])
    dying = DiesAfterPublish(tmp_path / "out")
    with pytest.raises(_Killed):
        Uplink(journal, dying, "lineguard/p1/l1/s1/dev-1/results", clock=clock).step(flush=True)
    dying.close()
    journal.close()
    # restart: the journal still has the batch, sends it again with the same seqs
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=8 << 20)
    assert journal.backlog() == 30
    files = FileTransport(tmp_path / "out")
    uplink = Uplink(journal, files, "lineguard/p1/l1/s1/dev-1/results", clock=clock)
    assert uplink.drain(timeout_s=5)
    files.close()
    sent = [
        r["seq"]
        for line in read_jsonl(tmp_path / "out" / UPSTREAM_FILE)
        for r in line["payload"]["results"]
    ]
    assert sent == seqs + seqs  # a duplicate, but only ever under the same (device, seq)
    parts = [f"p{i}" for i in range(30)]
    check_exactly_once(tmp_path / "out", parts)


def test_kill_between_reject_signal_and_journal_commit(
    tmp_path: Path, tiny_package_dir: Path
) -> None:
    """A reject signalled just before a crash is signalled again; journaled exactly once."""
    from inspector import service
    from inspector.transports.file import LOCAL_FILE, FileTransport

    images = tmp_path / "images"
    images.mkdir()
    (images / "a-good.png").write_bytes(image_bytes(part_image(0.0)))
    (images / "b-bad.png").write_bytes(image_bytes(part_image(0.3)))
    (images / "c-good.png").write_bytes(image_bytes(part_image(0.0)))
    args = [*common_args(tmp_path, images, tiny_package_dir), "--once"]
    svc = service.Service(service.parse_settings(args), FileTransport(tmp_path / "out"))
    real_append = svc.journal.append_many

    def dies_on_the_reject(results: list[dict[str, object]], **kw: object) -> list[int]:
        if results[0]["part_id"] == "b-bad.png":
            raise _Killed  # the reject went out to the line; the commit never happened
        return real_append(results, **kw)  # type: ignore[arg-type]

    svc.journal.append_many = dies_on_the_reject  # type: ignore[method-assign,assignment]
    with pytest.raises(_Killed):
        svc.run()
    # restart: b-bad is judged again (it was never acknowledged) and signalled again
    assert service.main(args) == 0
    lines = read_jsonl(tmp_path / "out" / LOCAL_FILE)
    local = [m["payload"] for m in lines if m["topic"].endswith("/reject")]
    rejects = [m for m in local if m.get("decision") == "reject"]
    assert [m["part_id"] for m in rejects] == ["b-bad.png", "b-bad.png"]
    assert rejects[0]["seq"] == rejects[1]["seq"]  # the same seq both times
    check_exactly_once(tmp_path / "out", ["a-good.png", "b-bad.png", "c-good.png"])
    results = deduplicated(tmp_path / "out")
    assert results[("dev-1", rejects[0]["seq"])]["part_id"] == "b-bad.png"


def test_verdicts_flag_publishes_every_parts_verdict_beside_the_rejects(
    tmp_path: Path, tiny_package_dir: Path
) -> None:
    from inspector import service
    from inspector.transports.file import LOCAL_FILE

    images = tmp_path / "frames"
    images.mkdir()
    (images / "a-good.png").write_bytes(image_bytes(part_image(0.0)))
    (images / "b-bad.png").write_bytes(image_bytes(part_image(0.3)))
    args = [*common_args(tmp_path, images, tiny_package_dir), "--once", "--verdicts"]
    assert service.main(args) == 0
    lines = read_jsonl(tmp_path / "out" / LOCAL_FILE)
    verdicts = {
        m["payload"]["part_id"]: m["payload"]["decision"]
        for m in lines
        if m["topic"].endswith("/verdict")
    }
    assert verdicts == {"a-good.png": "pass", "b-bad.png": "reject"}
    rejects = [m["payload"]["part_id"] for m in lines if m["topic"].endswith("/reject")]
    assert rejects == ["b-bad.png"]

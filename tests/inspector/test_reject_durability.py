"""A reject the local bus refused survives a kill -9 after the journal commit (real process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from inspector.actuation import Actuator
from inspector.journal import Journal
from inspector.transports.file import LOCAL_FILE, UPSTREAM_FILE, read_jsonl
from tests.inspector.test_service import base_args
from tests.support.tiny_model import image_bytes, part_image

REPO = Path(__file__).resolve().parents[2]
# the processes run this checkout's code, whatever the interpreter's own path says
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "edge_component")])}


def _upstream_parts(out: Path) -> set[str]:
    if not (out / UPSTREAM_FILE).exists():
        return set()
    return {
        str(r["part_id"])
        for line in read_jsonl(out / UPSTREAM_FILE)
        if line["topic"].endswith("/results")
        for r in line["payload"]["results"]
    }


def test_a_reject_refused_by_the_bus_is_signalled_after_kill9_and_restart(
    tmp_path: Path, tiny_package_dir: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a-good.png").write_bytes(image_bytes(part_image(0.0)))
    (images / "b-reject.png").write_bytes(image_bytes(part_image(0.3)))
    out = tmp_path / "out"
    out.mkdir()
    # the local bus is "down": every write to the local file fails with ENOSPC
    (out / LOCAL_FILE).symlink_to("/dev/full")
    args = [*base_args(tmp_path, images, tiny_package_dir), "--once", "--drain-timeout", "120"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", "run", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        # upstream holds the reject's result: the journal commit is long done, the signal not
        while "b-reject.png" not in _upstream_parts(out):
            assert proc.poll() is None, "the inspector exited before it was killed"
            assert time.monotonic() < deadline, "the reject never reached the journal"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    (out / LOCAL_FILE).unlink()  # the bus is back for the restart
    # the restart has nothing left to judge: only a durable record can bring the reject back
    restart = subprocess.run(
        [sys.executable, "-m", "inspector", "run", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        timeout=120,
    )
    assert restart.returncode == 0, restart.stderr.decode(errors="replace")[-2000:]
    local = read_jsonl(out / LOCAL_FILE)
    rejects = [m["payload"]["part_id"] for m in local if m["topic"].endswith("/reject")]
    assert rejects == ["b-reject.png"]
    topics = [m["topic"].rsplit("/", 1)[1] for m in local]
    assert "heartbeat" not in topics[: topics.index("reject")]  # no "alive" before the reject


def test_a_signalled_reject_is_forgotten_and_not_replayed(tmp_path: Path) -> None:
    bus_up = False
    sent: list[bytes] = []

    def publish(topic: str, payload: bytes) -> None:
        if not bus_up:
            raise OSError("bus down")
        if topic.endswith("/reject"):
            sent.append(payload)

    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=8 << 20)
    actuator = Actuator("st-1", "dev-1", publish, store=journal)
    actuator.on_result({"decision": "reject", "part_id": "p1", "seq": 1})
    actuator.on_result({"decision": "pass", "part_id": "p2", "seq": 2})
    journal.close()
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=8 << 20)
    bus_up = True
    again = Actuator("st-1", "dev-1", publish, store=journal)
    assert again.pending == 1
    assert again.flush() is True
    assert [b'"p1"' in p for p in sent] == [True]
    journal.close()
    journal = Journal(tmp_path / "j.db", device="dev-1", cap_bytes=8 << 20)
    assert Actuator("st-1", "dev-1", publish, store=journal).pending == 0
    journal.close()

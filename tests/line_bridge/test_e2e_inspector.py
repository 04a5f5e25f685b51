"""Real processes: ``python -m inspector run`` → mosquitto (mutual TLS) → ``python -m line_bridge
run`` → simulated OPC UA PLC, on the demo's local line (demo/local_line.py; ``make e2e-line``)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from bench.line_e2e import DEVICE, LINE, PLANT, STATION, make_frames, run_line_e2e
from demo.local_line import Device, LocalLine, wait_until
from tests.support.tiny_model import build_tiny_package

pytestmark = pytest.mark.slow


def test_plc_sees_exactly_the_rejected_and_manual_parts(tmp_path: Path) -> None:
    figures = run_line_e2e(tmp_path, frames=40, fps=20.0, defect_share=0.15, manual_share=0.1)
    assert figures["rejects_expected"] == 10  # 6 reject + 4 manual of 40
    assert figures["missed_rejects"] == 0, figures
    assert figures["rejects_seen_by_plc"] == 10
    assert figures["duplicates_at_plc"] == 0
    assert figures["unexpected_at_plc"] == []  # no pass part was ever rejected
    assert figures["inspector_reject_messages"] >= 10
    assert figures["healthy_false_while_inspecting"] == 0
    assert figures["decision_to_plc_ms_p50"] is not None


def test_killed_inspector_drives_healthy_false_within_the_window(tmp_path: Path) -> None:
    make_frames(tmp_path / "frames", 10, 0.2, 0.0)
    model = build_tiny_package(tmp_path / "model").root
    window = 1.0
    devices = [Device(DEVICE, STATION)]
    with LocalLine(
        tmp_path, plant=PLANT, line=LINE, devices=devices, heartbeat_window_s=window
    ) as rig:
        station = STATION
        proc = rig.start_inspector(
            DEVICE, tmp_path / "frames", model, fps=10, frames=None, heartbeat_s=0.2
        )
        wait_until(lambda: rig.plc.record.healthy.get(station) is True, 60, "healthy")
        wait_until(lambda: len(rig.plc.record.rejects) >= 1, 10, "a reject while running")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.time()
        wait_until(lambda: rig.plc.record.healthy[station] is False, window + 5, "false after kill")
        went_false = [t for t, s, v in rig.plc.record.healthy_history if s == station and not v][-1]
        # the last heartbeat left at most 0.2 s before the kill; then the window, a 50 ms tick
        # and the OPC UA write. Generous slack for a busy 2-core machine.
        assert went_false - killed <= window + 0.5, (went_false - killed, rig.logs())
        # a restarted inspector brings the station back
        rig.start_inspector(
            DEVICE, tmp_path / "frames", model, fps=10, frames=None, heartbeat_s=0.2
        )
        wait_until(lambda: rig.plc.record.healthy[station] is True, 60, "healthy again")


def test_e2e_cli_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.line_e2e import main

    assert main(["--frames", "0"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: need --frames >= 1")

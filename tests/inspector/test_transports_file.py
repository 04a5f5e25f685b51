"""The file transport: JSONL lines, torn-line repair, configuration from config.json."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from inspector.transports.file import (
    CONFIG_FILE,
    LOCAL_FILE,
    UPSTREAM_FILE,
    FileTransport,
    read_jsonl,
)


def test_publishes_go_to_their_files(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    transport.publish_upstream("lineguard/p/l/s/d/results", b'{"results":[1]}')
    transport.publish_local("lineguard/local/s/reject", b'{"v":1}')
    transport.publish_local("lineguard/local/s/heartbeat", b"not json")
    transport.close()
    assert read_jsonl(tmp_path / UPSTREAM_FILE) == [
        {"topic": "lineguard/p/l/s/d/results", "payload": {"results": [1]}}
    ]
    local = read_jsonl(tmp_path / LOCAL_FILE)
    assert [line["topic"] for line in local] == [
        "lineguard/local/s/reject",
        "lineguard/local/s/heartbeat",
    ]
    assert local[1]["payload"] == "not json"


def test_torn_last_line_is_cut_on_reopen(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    transport.publish_upstream("t", b"{}")
    transport.close()
    with (tmp_path / UPSTREAM_FILE).open("ab") as handle:
        handle.write(b'{"topic":"t","pay')
    assert len(read_jsonl(tmp_path / UPSTREAM_FILE)) == 1  # readers skip it already
    transport = FileTransport(tmp_path)
    transport.publish_upstream("t2", b"{}")
    transport.close()
    assert [line["topic"] for line in read_jsonl(tmp_path / UPSTREAM_FILE)] == ["t", "t2"]


def test_config_file_is_delivered_and_watched(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"reject": 0.3}))
    got: list[dict[str, Any]] = []
    transport = FileTransport(tmp_path, config_poll_s=0.02)

    def flaky(doc: dict[str, Any]) -> None:
        got.append(doc)
        raise RuntimeError("callback bug")  # must not kill the watcher

    transport.on_config(flaky)
    assert got == [{"reject": 0.3}]
    (tmp_path / CONFIG_FILE).write_text("{broken")
    os.utime(tmp_path / CONFIG_FILE, (time.time() + 5, time.time() + 5))
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"reject": 0.5}))
    os.utime(tmp_path / CONFIG_FILE, (time.time() + 10, time.time() + 10))
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    transport.close()
    assert "__error__" in got[1]
    assert got[2] == {"reject": 0.5}

"""The service end to end: folder/cameras → engine → journal → actuation → uplink → health."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from demo.broker import MosquittoBroker
from inspector import service
from inspector.journal import Journal
from inspector.transports.file import CONFIG_FILE, LOCAL_FILE, UPSTREAM_FILE, read_jsonl
from tests.inspector.conftest import bad_images
from tests.support.tiny_model import image_bytes, part_image

REPO = Path(__file__).resolve().parents[2]


def make_images(folder: Path, n_good: int = 6) -> dict[str, str]:
    """Good, reject, manual-band and unreadable files; returns part id → expected decision."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i in range(n_good):
        (folder / f"a{i:03d}.png").write_bytes(image_bytes(part_image(0.0)))
        expected[f"a{i:03d}.png"] = "pass"
    (folder / "b-reject.png").write_bytes(image_bytes(part_image(0.3)))
    expected["b-reject.png"] = "reject"
    (folder / "c-band.png").write_bytes(image_bytes(part_image(0.15)))
    expected["c-band.png"] = "manual"
    data, _ = bad_images()["truncated_png"]
    (folder / "d-truncated.png").write_bytes(data)
    expected["d-truncated.png"] = "manual"
    (folder / "e-empty.png").write_bytes(b"")
    expected["e-empty.png"] = "manual"
    return expected


def upstream_results(out: Path) -> list[dict[str, Any]]:
    return [
        r
        for line in read_jsonl(out / UPSTREAM_FILE)
        if line["topic"].endswith("/results")
        for r in line["payload"]["results"]
    ]


def base_args(tmp_path: Path, images: Path, model: Path) -> list[str]:
    return [
        "--transport", "file", "--out", str(tmp_path / "out"),
        "--plant", "p1", "--line", "l1", "--station", "s1", "--device", "dev-1",
        "--images", str(images), "--model", str(model),
        "--journal", str(tmp_path / "journal.db"), "--journal-cap-mb", "8",
        "--deadline-ms", "10000", "--health-interval", "1", "--heartbeat-interval", "0.2",
    ]  # fmt: skip


def test_folder_once_end_to_end(tmp_path: Path, tiny_package_dir: Path) -> None:
    expected = make_images(tmp_path / "images")
    code = service.main([*base_args(tmp_path, tmp_path / "images", tiny_package_dir), "--once"])
    assert code == 0
    out = tmp_path / "out"
    results = upstream_results(out)
    assert {r["part_id"]: r["decision"] for r in results} == expected
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == len(expected)
    assert all(r["device"] == "dev-1" and r["model"] == "tiny@1.0.0" for r in results)
    # local reject messages: one per reject/manual part, same seq as upstream
    local = read_jsonl(out / LOCAL_FILE)
    rejects = [m["payload"] for m in local if m["topic"] == "lineguard/local/s1/reject"]
    by_part = {r["part_id"]: r for r in results}
    assert {m["part_id"] for m in rejects} == {p for p, d in expected.items() if d != "pass"}
    assert all(by_part[m["part_id"]]["seq"] == m["seq"] for m in rejects)
    beats = [m["payload"] for m in local if m["topic"] == "lineguard/local/s1/heartbeat"]
    assert beats and beats[0]["healthy"] is True and beats[0]["model"] == "tiny@1.0.0"
    # the sampler kept the reject and the near-threshold frame, not the good ones
    journal = Journal(tmp_path / "journal.db", device="dev-1", cap_bytes=8 << 20)
    assert {s.part_id for s in journal.samples()} == {"b-reject.png", "c-band.png"}
    assert journal.backlog() == 0
    journal.close()
    # a second run over the same folder judges nothing twice (cursor in the journal)
    (tmp_path / "images" / "f-late.png").write_bytes(image_bytes(part_image(0.0)))
    assert (
        service.main([*base_args(tmp_path, tmp_path / "images", tiny_package_dir), "--once"]) == 0
    )
    again = upstream_results(out)
    assert [r["part_id"] for r in again[len(results) :]] == ["f-late.png"]
    assert again[-1]["seq"] == seqs[-1] + 1


def test_cameras_health_config_and_bad_model(tmp_path: Path, tiny_package_dir: Path) -> None:
    images = tmp_path / "dataset"
    make_images(images, n_good=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / CONFIG_FILE).write_text(json.dumps({"max_batch": 0}))  # invalid: refused
    args = [
        *base_args(tmp_path, images, tiny_package_dir),
        "--source", "camera", "--cameras", "3", "--fps", "20", "--max-frames", "30",
    ]  # fmt: skip
    settings = service.parse_settings(args)
    from inspector.transports.file import FileTransport

    svc = service.Service(settings, FileTransport(out))
    assert svc.config_reports and svc.config_reports[0][0] is False
    assert "max_batch" in (svc.config_reports[0][1] or "")
    assert svc.engine.config.max_batch == 8  # the last good configuration stays
    svc.health.interval_s = 0.5
    epoch = svc.journal.epoch  # the journal closes when run() returns
    started = time.monotonic()
    assert svc.run() == 0
    assert time.monotonic() - started >= 1.3  # 30 frames at 20 fps per camera
    results = upstream_results(out)
    assert len(results) == 90
    for cam in ("cam0", "cam1", "cam2"):
        parts = [r["part_id"] for r in results if r["camera"] == cam]
        assert parts == [f"{cam}-{epoch}-{n:06d}" for n in range(30)]
    health = [
        line["payload"]
        for line in read_jsonl(out / UPSTREAM_FILE)
        if line["topic"] == "lineguard/p1/l1/s1/dev-1/health"
    ]
    assert health, "no health message"
    assert "config_refused" in (health[0]["last_error"] or "")
    assert sum(h["frames"] for h in health) <= 90
    # a model package that fails verification: service still runs, every frame manual
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    (tmp_path / "journal.db").unlink()
    args2 = [a if a != str(tiny_package_dir) else str(broken) for a in args]
    assert service.main([*args2, "--max-frames", "2", "--cameras", "1"]) == 0
    tail = upstream_results(out)[-2:]
    assert [r["decision"] for r in tail] == ["manual", "manual"]
    assert all(r["reason"].startswith("no_model") for r in tail)
    # the wiped journal numbered its parts from 0 again, yet no part id repeats (defect 8)
    assert [r["part_id"].rsplit("-", 1)[1] for r in tail] == ["000000", "000001"]
    assert not {r["part_id"] for r in tail} & {r["part_id"] for r in results}


def test_camera_frames_are_judged_side_by_side_and_committed_in_order(
    tmp_path: Path, tiny_package_dir: Path
) -> None:
    from inspector.sources import Frame
    from inspector.transports.file import FileTransport

    images = tmp_path / "dataset"
    make_images(images, n_good=2)
    args = [*base_args(tmp_path, images, tiny_package_dir), "--source", "camera",
            "--judge-threads", "2", "--max-batch", "1"]  # one frame a unit (tiny batches pay)  # fmt: skip
    svc = service.Service(service.parse_settings(args), FileTransport(tmp_path / "out"))
    judge, slow = svc.engine.judge_batch, threading.Event()

    def first_is_slow(frames: list[Frame], *maps: Any) -> list[dict[str, Any]]:
        if frames[0].part_id == "p0":
            slow.wait(10)
        return judge(frames, *maps)

    svc.engine.judge_batch = first_is_slow  # type: ignore[method-assign]
    data = (images / sorted(os.listdir(images))[0]).read_bytes()
    frames = [Frame("cam0", f"p{n}", data=data, captured=time.monotonic()) for n in range(2)]
    svc.submit(frames, [("camera:cam0", "0"), ("camera:cam0", "1")])
    deadline = time.monotonic() + 10
    while not svc._pending[1].future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert svc._pending[1].future.done()  # the second frame did not wait for the first
    svc._commit_judged()
    # ...but it is not committed before it: the cursor never passes a frame being judged
    assert svc.journal.cursor("camera:cam0") is None and svc._in_flight == 2
    assert not svc.ready_for_update()
    slow.set()
    svc._commit_judged(everything=True)
    assert svc.journal.cursor("camera:cam0") == "1" and svc._in_flight == 0
    committed = [json.loads(p.payload) for p in svc.journal.pending()]
    assert [(r["part_id"], r["seq"] - committed[0]["seq"]) for r in committed] == [
        ("p0", 0),
        ("p1", 1),
    ]
    svc.engine.close()
    svc.journal.close()


def test_bad_options_give_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert service.main(["--images", str(tmp_path), "--journal", str(tmp_path / "j.db")]) == 2
    assert capsys.readouterr().err.strip() == "error: --out is required with --transport file"
    code = service.main(
        ["--transport", "mqtt", "--images", str(tmp_path), "--journal", str(tmp_path / "j")]
    )
    assert code == 2 and "--ca is required" in capsys.readouterr().err
    args = ["--out", str(tmp_path / "o"), "--journal", str(tmp_path / "j.db")]
    assert service.main([*args, "--images", str(tmp_path / "missing"), "--once"]) == 2
    assert "image directory not found" in capsys.readouterr().err
    assert service.main([*args, "--images", str(tmp_path), "--sample-band", "2"]) == 2
    assert "--sample-band must be in [0, 1]" in capsys.readouterr().err
    assert service.main([*args, "--images", str(tmp_path), "--journal-cap-mb", "0.01"]) == 2
    assert "cap_bytes" in capsys.readouterr().err
    assert service.main(["--help"]) == 0
    assert "--transport" in capsys.readouterr().out


def test_sigterm_stops_cleanly(tmp_path: Path, tiny_package_dir: Path) -> None:
    images = tmp_path / "dataset"
    make_images(images, n_good=2)
    args = [
        *base_args(tmp_path, images, tiny_package_dir),
        "--source", "camera", "--fps", "50", "-v",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", "run", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'edge_component'}{os.pathsep}{REPO}"},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    out = tmp_path / "out" / UPSTREAM_FILE
    while time.monotonic() < deadline and (
        not out.exists() or len(upstream_results(out.parent)) < 20
    ):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "inspector: stopped after" in err
    journal = Journal(tmp_path / "journal.db", device="dev-1", cap_bytes=8 << 20)
    sent = upstream_results(tmp_path / "out")
    assert journal.backlog() == 0  # the last flush sent everything
    assert [r["seq"] for r in sent] == list(range(sent[0]["seq"], sent[0]["seq"] + len(sent)))
    journal.close()


def test_mqtt_transport_end_to_end(tmp_path: Path, tiny_package_dir: Path) -> None:
    acl = {"dev-1": ["write lineguard/p1/l1/s1/dev-1/#", "write lineguard/local/s1/#"]}
    expected = make_images(tmp_path / "images", n_good=3)
    with MosquittoBroker(acl) as broker:
        creds = broker.credentials("dev-1")
        args = base_args(tmp_path, tmp_path / "images", tiny_package_dir)
        args[args.index("file")] = "mqtt"
        code = service.main(
            [
                *args,
                "--once",
                "--host",
                broker.host,
                "--port",
                str(broker.port),
                "--ca",
                str(creds.ca_file),
                "--cert",
                str(creds.cert_file),
                "--key",
                str(creds.key_file),
            ]  # fmt: skip
        )
    assert code == 0
    journal = Journal(tmp_path / "journal.db", device="dev-1", cap_bytes=8 << 20)
    stats = journal.stats()
    assert stats.pending == 0
    assert stats.last_sent_seq == stats.next_seq - 1
    assert stats.next_seq - len(expected) > 0
    journal.close()


def test_greengrass_transport_wired_through_the_service(
    tmp_path: Path, tiny_package_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from awsiot.greengrasscoreipc.model import ComponentUpdatePolicyEvents, PreComponentUpdateEvent

    from inspector.transports.greengrass import GreengrassTransport
    from tests.inspector.test_transports_greengrass import FakeIpcClient, config_event

    images = tmp_path / "dataset"
    make_images(images, n_good=2)
    args = [
        *base_args(tmp_path, images, tiny_package_dir),
        "--source", "camera", "--fps", "50", "--max-frames", "20",
    ]  # fmt: skip
    args[args.index("file")] = "greengrass"
    client = FakeIpcClient()
    client.config = {"plant": "p1", "runtime": {"deadline_ms": 300}}
    svc = service.Service(service.parse_settings(args), GreengrassTransport(client))
    handler = client.handlers["config"]["on_stream_event"]
    handler(config_event())
    assert svc.engine.config.deadline_ms == 300  # only the runtime section is applied
    client.config = {"runtime": {"max_batch": 0}}
    handler(config_event())
    assert svc.config_reports[-1][0] is False and svc.engine.config.deadline_ms == 300
    updates = client.handlers["updates"]["on_stream_event"]
    svc._in_flight = 1  # a frame is being judged: the update waits
    updates(
        ComponentUpdatePolicyEvents(pre_update_event=PreComponentUpdateEvent(deployment_id="d"))
    )
    svc._in_flight = 0
    epoch = svc.journal.epoch
    assert svc.run() == 0
    updates(
        ComponentUpdatePolicyEvents(pre_update_event=PreComponentUpdateEvent(deployment_id="d"))
    )
    defers = [kw["recheck_after_ms"] for n, kw in client.calls if n == "defer_component_update"]
    assert defers[0] > 0 and defers[-1] == 0
    upstream = [kw for n, kw in client.calls if n == "publish_to_iot_core"]
    results = [
        r for kw in upstream if kw["topic_name"].endswith("/results")
        for r in json.loads(kw["payload"])["results"]
    ]  # fmt: skip
    assert [r["part_id"] for r in results] == [f"cam0-{epoch}-{n:06d}" for n in range(20)]
    local = [kw["topic"] for n, kw in client.calls if n == "publish_to_topic"]
    assert "lineguard/local/s1/heartbeat" in local and "lineguard/local/s1/reject" in local
    assert client.closed
    # outside Greengrass the entry point says so in one line
    monkeypatch.delenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", raising=False)
    assert service.main(args) == 2


def test_heartbeats_and_health_flow_while_the_folder_stays_empty(
    tmp_path: Path, tiny_package_dir: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    out = tmp_path / "out"
    settings = service.parse_settings(base_args(tmp_path, images, tiny_package_dir))
    from inspector.transports.file import FileTransport

    svc = service.Service(settings, FileTransport(out))
    svc.health.interval_s = 0.4
    runner = threading.Thread(target=svc.run)
    runner.start()
    time.sleep(2.2)  # no file ever arrives: eleven heartbeat intervals of 0.2 s
    svc.stop.set()
    runner.join(timeout=20)
    assert not runner.is_alive()
    beats = [
        m["payload"]
        for m in read_jsonl(out / LOCAL_FILE)
        if m["topic"] == "lineguard/local/s1/heartbeat"
    ]
    assert len(beats) >= 8, f"only {len(beats)} heartbeats in 2.2 s at 0.2 s"
    stamps = [datetime.fromisoformat(b["ts"].replace("Z", "+00:00")).timestamp() for b in beats]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) < 0.35, f"heartbeat gap {max(gaps):.2f} s > interval 0.2 s"
    health = [line for line in read_jsonl(out / UPSTREAM_FILE) if line["topic"].endswith("/health")]
    assert len(health) >= 3
    assert svc.frames == 0


NUCLEUS_STAND_IN = """
import sys, threading
import awsiot.greengrasscoreipc.clientv2 as clientv2
from tests.inspector.test_transports_greengrass import FakeIpcClient

def connect() -> FakeIpcClient:
    client = FakeIpcClient()
    client.config = {"runtime": {}}
    # the nucleus answers for a second, then stalls ("hang") or its connection drops ("drop")
    threading.Timer(1.0, lambda: setattr(client, "mode", sys.argv[1])).start()
    return client

clientv2.GreengrassCoreIPCClientV2 = connect
from inspector import service
sys.exit(service.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("failure", ["hang", "drop"])
def test_a_lost_nucleus_ends_the_process_non_zero(
    tmp_path: Path, tiny_package_dir: Path, failure: str
) -> None:
    images = tmp_path / "dataset"
    make_images(images, n_good=2)
    args = [
        *base_args(tmp_path, images, tiny_package_dir),
        "--source", "camera", "--fps", "20", "--ipc-timeout", "0.2",
    ]  # fmt: skip
    args[args.index("file")] = "greengrass"
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'edge_component'}",
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(tmp_path / "ipc.socket"),
        "SVCUID": "test",
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", NUCLEUS_STAND_IN, failure, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert time.monotonic() - started < 30
    assert "error: lost the Greengrass nucleus" in proc.stderr
    journal = Journal(tmp_path / "journal.db", device="dev-1", cap_bytes=8 << 20)
    assert journal.backlog() > 0  # the results judged meanwhile wait in the journal
    journal.close()


def greengrass_service(tmp_path: Path, package: Path, client: Any) -> service.Service:
    from inspector.transports.greengrass import GreengrassTransport

    images = tmp_path / "dataset"
    make_images(images, n_good=1)
    args = [*base_args(tmp_path, images, package), "--source", "camera", "--max-frames", "1"]
    args[args.index("file")] = "greengrass"
    return service.Service(service.parse_settings(args), GreengrassTransport(client))


def test_greengrass_configuration_is_read_at_start(tmp_path: Path, tiny_package_dir: Path) -> None:
    from tests.inspector.test_transports_greengrass import FakeIpcClient

    client = FakeIpcClient()
    client.config = {"cameras": 1, "runtime": {"deadline_ms": 250, "max_batch": 4.0}}
    svc = greengrass_service(tmp_path, tiny_package_dir, client)
    assert svc.engine.config.deadline_ms == 250  # no update event needed
    assert svc.engine.config.max_batch == 4 and isinstance(svc.engine.config.max_batch, int)
    # the runtime section is the whole truth: a key a deployment removed goes back to its
    # start-up value (--deadline-ms 10000), not to the previous update's
    client.config = {"runtime": {"max_batch": 4}}
    client.handlers["config"]["on_stream_event"](None)
    assert svc.engine.config.deadline_ms == 10_000


@pytest.mark.parametrize(
    ("proposed", "refusal"),
    [
        ({"runtime": {"max_batch": 8.0}, "maxFrames": 2.0, "fps": 1}, None),
        ({"runtime": {"max_batch": 8.5}}, "runtime.max_batch: must be an integer, got 8.5"),
        ({"runtime": {"deadline_ms": "fast"}}, "runtime.deadline_ms: must be a number"),
        ({"runtime": {"colour": 1}}, "runtime.colour: unknown setting"),
        ({"runtime": [1]}, "runtime: must be an object"),
        ({"maxFrames": 2.5}, "maxFrames: must be an integer, got 2.5"),
        ({"threads": 0}, "threads: 0 is outside 1..64"),
        ({"cameras": 2}, "cameras: not configuration"),
        ({"fps": "1"}, "fps: must be a number, got '1'"),
        ({"source": "usb"}, "source: 'usb' is not one of dir, camera"),
        ({"threads": True}, "threads: must be a number, got True"),
        ({"heartbeatIntervalS": 0}, "heartbeatIntervalS: 0 is outside 0.05..3600"),
        ({"camrea": 2}, "camrea: unknown setting"),
        ({"ring": "canary", "runtime": {}}, None),
        ({"ring": ""}, None),
        ({"ring": "Canary ring"}, "ring: 'Canary ring' is not a ring name"),
        ({"ring": 3}, "ring: 3 is not a ring name"),
    ],
)
def test_greengrass_validates_a_proposed_configuration_before_it_is_stored(
    tmp_path: Path, tiny_package_dir: Path, proposed: dict[str, Any], refusal: str | None
) -> None:
    from awsiot.greengrasscoreipc.model import ConfigurationValidityStatus

    from tests.inspector.test_transports_greengrass import FakeIpcClient

    client = FakeIpcClient()
    client.config = {"runtime": {"deadline_ms": 300}}
    svc = greengrass_service(tmp_path, tiny_package_dir, client)
    client.validate("dep-7", proposed)
    (report,) = client.reports()
    assert report.deployment_id == "dep-7"
    if refusal is None:
        assert report.status == ConfigurationValidityStatus.ACCEPTED and not report.message
    else:
        assert report.status == ConfigurationValidityStatus.REJECTED
        assert refusal in (report.message or "")
    assert svc.engine.config.deadline_ms == 300  # validating never applies anything


def test_integer_options_accept_integral_floats(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--out", "o", "--images", "i", "--journal", "j"]
    settings = service.parse_settings([*base, "--cameras", "3.0", "--max-batch", "4.0"])
    assert settings.args.cameras == 3 and isinstance(settings.args.cameras, int)
    assert settings.config.max_batch == 4
    with pytest.raises(SystemExit):
        service.parse_settings([*base, "--cameras", "2.5"])
    assert "--cameras: must be an integer, got '2.5'" in capsys.readouterr().err


def test_the_ring_option_reaches_the_health_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--out", "o", "--images", "i", "--journal", "j"]
    assert service.parse_settings(base).args.ring is None
    assert service.parse_settings([*base, "--ring="]).args.ring is None  # recipe default ""
    assert service.parse_settings([*base, "--ring=canary"]).args.ring == "canary"
    with pytest.raises(service.ServiceError, match="ring: 'not/a/ring' is not a ring name"):
        service.parse_settings([*base, "--ring=not/a/ring"])


@pytest.mark.parametrize(
    ("mode", "present", "loaded"),
    [("auto", True, True), ("auto", False, False), ("off", True, False), ("on", True, True)],
)
def test_shadow_mode_wires_the_shadow_model_from_configuration(
    tmp_path: Path, tiny_package_dir: Path, mode: str, present: bool, loaded: bool
) -> None:
    import shutil

    from inspector.transports.file import FileTransport

    images = tmp_path / "images"
    make_images(images)
    shadow = tmp_path / "model" / "shadow"
    if present:
        shutil.copytree(tiny_package_dir, shadow)
    args = [*base_args(tmp_path, images, tiny_package_dir), "--once",
            "--shadow", str(shadow), "--shadow-mode", mode]  # fmt: skip
    svc = service.Service(service.parse_settings(args), FileTransport(tmp_path / "out"))
    try:
        assert (svc.engine.shadow_stats().model is not None) is loaded
    finally:
        svc.journal.close()


def test_a_component_update_waits_for_a_reject_the_bridge_has_not_taken(
    tmp_path: Path, tiny_package_dir: Path
) -> None:
    from inspector.transports.file import FileTransport

    images = tmp_path / "images"
    images.mkdir()
    args = base_args(tmp_path, images, tiny_package_dir)
    svc = service.Service(service.parse_settings(args), FileTransport(tmp_path / "out"))
    try:
        assert svc.ready_for_update()  # nothing to finish: the restart may happen now
        svc._in_flight = 1  # a frame being judged
        assert not svc.ready_for_update()
        svc._in_flight = 0
        bus_down = OSError("local bus down")

        def refuse(topic: str, payload: bytes) -> None:
            raise bus_down

        svc.actuator._publish = refuse  # type: ignore[attr-defined]
        svc.actuator.on_result({"decision": "reject", "part_id": "p1", "seq": 1})
        assert svc.actuator.pending and not svc.ready_for_update()
    finally:
        svc.journal.close()

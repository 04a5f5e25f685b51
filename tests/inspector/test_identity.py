"""A device's identity comes from its lineguard-identity shadow, never from a ring deployment."""

from __future__ import annotations

import json
import threading
import time

import pytest

from inspector.identity import (
    DeviceIdentity,
    IdentityError,
    IdentityWatch,
    parse_identity,
    read_identity,
    wait_for_identity,
)

THING = "lineguard-demo-DEMO-0001"


def shadow(**desired: object) -> bytes:
    doc = {
        "v": 1,
        "thing": THING,
        "plant": "demo",
        "line": "line-1",
        "station": "press-out",
        "cameras": 2,
    }
    doc.update(desired)
    # the GetThingShadow payload: the whole shadow document (ShadowManager, ipc-local-shadows)
    return json.dumps(
        {"state": {"desired": doc}, "metadata": {}, "version": 3, "timestamp": 1764547200}
    ).encode()


def test_identity_from_the_desired_state() -> None:
    assert parse_identity(shadow(), THING) == DeviceIdentity("demo", "line-1", "press-out", 2)
    # a deployment or a JSON round trip may turn integers into floats
    assert parse_identity(shadow(cameras=2.0), THING).cameras == 2


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"{", "not JSON"),
        (json.dumps({"state": {"reported": {}}}).encode(), "no state.desired"),
        (shadow(v=2), "format 2"),
        (shadow(thing="lineguard-demo-OTHER"), "names thing"),
        (shadow(station=""), "station ''"),
        (shadow(line="line/1"), "topic level"),
        (shadow(plant="+"), "topic level"),
        (shadow(cameras=0), "cameras 0"),
        (shadow(cameras=1.5), "cameras 1.5"),
        (shadow(cameras=True), "cameras True"),
    ],
)
def test_a_malformed_identity_is_refused_with_what_is_wrong(payload: bytes, words: str) -> None:
    with pytest.raises(IdentityError, match="lineguard-identity") as err:
        parse_identity(payload, THING)
    assert words in str(err.value)


def test_a_missing_or_unreadable_shadow_is_no_identity() -> None:
    with pytest.raises(IdentityError, match="does not exist yet"):
        read_identity(lambda: None, THING)

    def broken() -> bytes:
        raise TimeoutError("IPC call timed out")

    with pytest.raises(IdentityError, match="IPC call timed out"):
        read_identity(broken, THING)


def test_waits_until_the_shadow_arrives_then_stops_when_asked() -> None:
    answers: list[bytes | None] = [None, None, shadow()]
    stop = threading.Event()
    got = wait_for_identity(lambda: answers.pop(0), THING, stop, poll_s=0.01)
    assert got == DeviceIdentity("demo", "line-1", "press-out", 2)
    stop.set()
    assert wait_for_identity(lambda: None, THING, stop, poll_s=0.01) is None


def test_watch_keeps_the_identity_offline_and_reports_a_move() -> None:
    current = parse_identity(shadow(), THING)
    answers: list[bytes | None] = [shadow()]
    stop = threading.Event()

    def read() -> bytes | None:
        if not answers:
            raise ConnectionError("nucleus gone")
        return answers.pop(0)

    watch = IdentityWatch(read, THING, current, stop, poll_s=0.01)
    assert watch.check() is None  # unchanged
    assert watch.check() is None  # unreadable: the current identity stays
    answers.append(shadow(station="final-check"))
    watch.start()
    deadline = time.monotonic() + 5
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stop.is_set()
    assert watch.changed == DeviceIdentity("demo", "line-1", "final-check", 2)

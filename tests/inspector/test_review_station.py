"""The review station through its real HTTP boundary (a socket on 127.0.0.1, http.client, and
HTTPS with a throwaway self-signed certificate): login, sessions, CSRF and Origin checks, size
limits, rate limits, path traversal, verdicts, idle TLS clients."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from inspector import review_station
from inspector.journal import Journal
from inspector.messages import Identity, validate_label
from inspector.review_station import (
    MAX_BODY_BYTES,
    LiveFeed,
    ReviewStation,
    StationConfig,
    StationError,
)
from inspector.station_auth import (
    CredentialError,
    LoginLimiter,
    PasswordHash,
    client_key,
    hash_password,
    read_operators,
    read_station_file,
)
from tests.support.tiny_model import image_bytes, part_image

PASSWORD = "correct horse battery"
IDENTITY = Identity("p1", "l1", "s1", "dev-1")
PNG = image_bytes(part_image(0.15))


class Clock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def result(part: str, decision: str, score: float | None) -> dict[str, Any]:
    return {
        "v": 1, "plant": "p1", "line": "l1", "station": "s1", "device": "dev-1",
        "camera": "cam0", "part_id": part, "seq": 0, "ts": "2027-01-15T08:00:00.000Z",
        "decision": decision, "score": score, "threshold": 0.2, "model": "tiny@1.0.0",
        "latency_ms": 3.0, **({"reason": "manual_band"} if decision == "manual" else {}),
    }  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal(
        tmp_path / "journal.db", device="dev-1", cap_bytes=8 << 20, synchronous="NORMAL"
    )
    seqs = journal.append_many(
        [result("part-1", "manual", 0.15), result("part-2", "reject", 0.3), result("p3", "pass", 0.0)],
        review=("manual", "reject"),
    )  # fmt: skip
    journal.add_sample(part_id="part-1", reason="manual", data=PNG, score=0.15, seq=seqs[0])
    journal.add_sample(part_id="odd", reason="manual", data=b"<html>not an image", score=0.1)
    yield journal
    journal.close()


@pytest.fixture
def station(journal: Journal, clock: Clock) -> Iterator[ReviewStation]:
    operators = {"alice": PasswordHash.parse(hash_password(PASSWORD, n=2**10))}
    feed = LiveFeed()
    feed.record(result("p3", "pass", 0.0))
    station = ReviewStation(
        StationConfig(bind="127.0.0.1", port=0, operators=operators),
        journal,
        IDENTITY,
        feed=feed,
        defect_types=lambda: ("scratch", "crack"),
        model=lambda: "tiny@1.0.0",
        clock=clock,
    )
    station.start()
    yield station
    station.stop()


class Client:
    """A browser-like client: keeps cookies, sends the station's Origin on writes."""

    def __init__(self, station: ReviewStation) -> None:
        self.host, self.port = station.address
        self.cookies: dict[str, str] = {}
        self.origin = f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        sent = {"Host": f"127.0.0.1:{self.port}"}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        sent.update(headers or {})
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            cookie, _, attributes = rest.partition(";")
            if "Max-Age=0" in attributes:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = cookie
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def login(self, operator: str = "alice", password: str = PASSWORD) -> int:
        status, _, page = self.request("GET", "/login")
        assert status == 200
        token = re.search(rb'name="csrf" value="([^"]+)"', page)
        assert token is not None
        form = urlencode({"operator": operator, "password": password, "csrf": token.group(1)})
        status, _, _ = self.request(
            "POST",
            "/login",
            form.encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin},
        )
        return status

    def csrf(self) -> str:
        status, _, page = self.request("GET", "/")
        assert status == 200
        match = re.search(rb'<meta name="csrf" content="([^"]+)">', page)
        assert match is not None
        return match.group(1).decode()

    def verdict(self, doc: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
        sent = {"Content-Type": "application/json", "Origin": self.origin, **headers}
        status, _, body = self.request("POST", "/api/verdict", json.dumps(doc).encode(), sent)
        return status, json.loads(body)


def queued(journal: Journal, part: str) -> dict[str, Any]:
    review = journal.review(part)
    assert review is not None
    return {"part_id": part, "result_seq": review.result_seq, "revision": review.revision}


def labels(journal: Journal) -> list[dict[str, Any]]:
    return [json.loads(p.payload) for p in journal.pending() if p.kind == "label"]


def test_nothing_but_the_login_form_is_served_without_a_session(station: ReviewStation) -> None:
    client = Client(station)
    status, headers, _ = client.request("GET", "/")
    assert status == 303 and headers["location"] == "/login"
    for path in ("/api/state", "/api/image/1", "/static/station.js", "/static/station.css"):
        status, _, body = client.request("GET", path)
        assert status == 401, path
        assert PNG not in body and b"fetch(" not in body
    status, _, _ = client.request(
        "POST", "/api/verdict", b"{}", {"Content-Type": "application/json", "Origin": client.origin}
    )
    assert status == 401
    client.cookies["lg_session"] = "forged-token"
    assert client.request("GET", "/api/state")[0] == 401


def test_login_sets_a_strict_httponly_session_and_the_page_works(
    station: ReviewStation, journal: Journal
) -> None:
    client = Client(station)
    status, headers, page = client.request("GET", "/login")
    assert status == 200 and "lg_login=" in headers["set-cookie"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    conn = http.client.HTTPConnection(client.host, client.port, timeout=10)
    token = re.search(rb'name="csrf" value="([^"]+)"', page)
    assert token is not None
    form = urlencode({"operator": "alice", "password": PASSWORD, "csrf": token.group(1)})
    conn.request(
        "POST", "/login", form, {
            "Host": f"127.0.0.1:{client.port}", "Origin": client.origin,
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"lg_login={client.cookies['lg_login']}",
        },
    )  # fmt: skip
    response = conn.getresponse()
    response.read()
    assert response.status == 303 and response.getheader("Location") == "/"
    session = [c for c in response.headers.get_all("Set-Cookie") or [] if "lg_session=" in c]
    assert len(session) == 1
    assert "HttpOnly" in session[0] and "SameSite=Strict" in session[0] and "Max-Age=" in session[0]
    client.cookies["lg_session"] = session[0].split("=", 1)[1].split(";")[0]
    status, _, body = client.request("GET", "/api/state?rejects=1")
    state = json.loads(body)
    assert status == 200 and state["operator"] == "alice"
    assert [p["part_id"] for p in state["queue"]] == ["part-1", "part-2"]
    assert state["queue"][0]["image"] is not None and state["queue"][1]["image"] is None
    assert state["defect_types"] == ["scratch", "crack"]
    assert state["cameras"][0]["recent"][0]["part_id"] == "p3"
    manual_only = json.loads(client.request("GET", "/api/state")[2])
    assert [p["part_id"] for p in manual_only["queue"]] == ["part-1"]
    status, headers, image = client.request("GET", state["queue"][0]["image"])
    assert status == 200 and image == PNG and headers["content-type"] == "image/png"
    assert headers["x-content-type-options"] == "nosniff"
    status, _, script = client.request("GET", "/static/station.js")
    assert status == 200 and b"X-CSRF-Token" in script


def test_a_verdict_records_who_and_when_and_goes_upstream_once(
    station: ReviewStation, journal: Journal
) -> None:
    client = Client(station)
    assert client.login() == 303
    csrf = client.csrf()
    status, body = client.verdict(
        {**queued(journal, "part-1"), "label": "defect", "defect_type": "scratch"},
        **{"X-CSRF-Token": csrf},
    )
    assert status == 200 and body["status"] == "recorded"
    assert body["part"]["operator"] == "alice" and body["part"]["labelled_at"].endswith("Z")
    (message,) = labels(journal)
    validate_label(message)
    assert (message["operator"], message["label"], message["defect_type"]) == (
        "alice",
        "defect",
        "scratch",
    )
    assert message["result_seq"] == journal.review("part-1").result_seq  # type: ignore[union-attr]
    # the same verdict sent again (a double tap): no second label
    again = {
        **queued(journal, "part-1"),
        "revision": 0,
        "label": "defect",
        "defect_type": "scratch",
    }
    status, body = client.verdict(again, **{"X-CSRF-Token": csrf})
    assert status == 200 and body["status"] == "unchanged" and len(labels(journal)) == 1
    # a tablet that still shows revision 0 cannot overwrite it
    stale = {**queued(journal, "part-1"), "revision": 0, "label": "good"}
    status, body = client.verdict(stale, **{"X-CSRF-Token": csrf})
    assert status == 409 and "changed since it was shown" in body["error"]
    # a correction on what is there now replaces it (revision 2)
    status, body = client.verdict(
        {**queued(journal, "part-1"), "label": "good"}, **{"X-CSRF-Token": csrf}
    )
    assert status == 200 and body["part"]["revision"] == 2
    assert [m["label"] for m in labels(journal)] == ["defect", "good"]


def test_a_verdict_for_another_judgement_of_the_part_is_refused(
    station: ReviewStation, journal: Journal
) -> None:
    client = Client(station)
    assert client.login() == 303
    csrf = client.csrf()
    shown = {**queued(journal, "part-1"), "label": "good"}
    assert client.verdict(shown, **{"X-CSRF-Token": csrf})[0] == 200
    # the part id comes by again and is judged anew; a tablet labels the new judgement good
    journal.append_many([result("part-1", "manual", 0.16)], review=("manual",))
    now = {**queued(journal, "part-1"), "label": "good"}
    assert now["result_seq"] != shown["result_seq"]
    assert client.verdict(now, **{"X-CSRF-Token": csrf})[0] == 200
    # a tap on a page still showing the first judgement (same label, revision 1) is not it
    stale = {**shown, "revision": 1}
    status, body = client.verdict(stale, **{"X-CSRF-Token": csrf})
    assert status == 409 and "changed since it was shown" in body["error"]
    assert body["part"]["result_seq"] == now["result_seq"]
    assert [m["result_seq"] for m in labels(journal)] == [shown["result_seq"], now["result_seq"]]


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"label": "maybe"}, 400, "verdict.label"),
        ({"label": "good", "defect_type": "scratch"}, 400, "verdict.defect_type"),
        ({"label": "defect", "defect_type": "dent"}, 400, "not one of the model package's"),
        ({"label": "good", "operator": "mallory"}, 400, "verdict.operator: unknown field"),
        ({"label": "good", "part_id": "nope"}, 404, "not in the review queue"),
        ({"label": "good", "result_seq": "1"}, 400, "verdict.result_seq"),
    ],
)
def test_a_bad_verdict_is_refused_naming_the_field_and_writes_nothing(
    station: ReviewStation, journal: Journal, change: dict[str, Any], status: int, words: str
) -> None:
    client = Client(station)
    assert client.login() == 303
    got, body = client.verdict(
        {**queued(journal, "part-1"), **change}, **{"X-CSRF-Token": client.csrf()}
    )
    assert got == status and words in body["error"]
    assert labels(journal) == []


def test_forged_writes_are_refused(station: ReviewStation, journal: Journal) -> None:
    client = Client(station)
    assert client.login() == 303
    csrf = client.csrf()
    doc = {**queued(journal, "part-1"), "label": "good"}
    # no CSRF token, a wrong one, another site's Origin, no Origin or Referer at all
    assert client.verdict(doc)[0] == 403
    assert client.verdict(doc, **{"X-CSRF-Token": "x" * len(csrf)})[0] == 403
    status, body = client.verdict(doc, **{"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert status == 403 and "Origin" in body["error"]
    conn_headers = {"Content-Type": "application/json", "X-CSRF-Token": csrf}
    status, _, _ = client.request("POST", "/api/verdict", json.dumps(doc).encode(), conn_headers)
    assert status == 403
    # a form post from another page: wrong content type and no token
    status, _, _ = client.request(
        "POST",
        "/api/verdict",
        urlencode(doc).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"},
    )
    assert status == 403
    # a login form posted without the form's own token (login CSRF)
    other = Client(station)
    form = urlencode({"operator": "alice", "password": PASSWORD}).encode()
    status, _, _ = other.request(
        "POST",
        "/login",
        form,
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": other.origin},
    )
    assert status == 403 and "lg_session" not in other.cookies
    # DNS rebinding: another Host name is not this station
    status, _, _ = client.request("GET", "/api/state", headers={"Host": "evil.example"})
    assert status == 421
    assert labels(journal) == []


def test_oversized_and_chunked_bodies_are_refused_unread(
    station: ReviewStation, journal: Journal
) -> None:
    client = Client(station)
    assert client.login() == 303
    csrf = client.csrf()
    # a 10 MB upload announced: refused from its headers, the body never read
    with socket.create_connection(station.address, timeout=10) as raw:
        raw.sendall(
            (
                f"POST /api/verdict HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\n"
                f"Origin: {client.origin}\r\nX-CSRF-Token: {csrf}\r\n"
                f"Cookie: lg_session={client.cookies['lg_session']}\r\n"
                "Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
            ).encode()
            + b"{" * 1024
        )
        reply = raw.recv(4096)
    assert reply.startswith(b"HTTP/1.0 413")
    big = json.dumps({**queued(journal, "part-1"), "label": "good", "pad": "x" * MAX_BODY_BYTES})
    status, _, body = client.request(
        "POST",
        "/api/verdict",
        big.encode(),
        {"Content-Type": "application/json", "Origin": client.origin, "X-CSRF-Token": csrf},
    )
    assert status == 413 and b"at most 8192" in body
    status, _, _ = client.request(
        "POST",
        "/api/verdict",
        b"{}",
        {
            "Content-Type": "application/json",
            "Origin": client.origin,
            "X-CSRF-Token": csrf,
            "Transfer-Encoding": "chunked",
        },
    )
    assert status == 411
    status, _, _ = client.request(
        "POST",
        "/api/verdict",
        b"--b\r\nContent-Disposition: form-data; name=f; filename=x.png\r\n\r\n" + PNG,
        {"Content-Type": "multipart/form-data; boundary=b", "Origin": client.origin,
         "X-CSRF-Token": csrf},
    )  # fmt: skip
    assert status == 415
    assert labels(journal) == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/image/../../etc/passwd",
        "/api/image/..%2f..%2fjournal.db",
        "/api/image/%2e%2e/journal.db",
        "/api/image/1/../../journal.db",
        "/api/image/-1",
        "/api/image/1.png",
        "/static/../journal.py",
        "/static/%2e%2e/review_station.py",
        "/static/station.js/../../station_auth.py",
        "/static/login.html",
        "//etc/passwd",
    ],
)
def test_path_traversal_in_image_names_and_ids_finds_nothing(
    station: ReviewStation, path: str
) -> None:
    client = Client(station)
    assert client.login() == 303
    status, _, body = client.request("GET", path)
    assert status == 404
    assert b"import" not in body and b"SQLite" not in body and b"root:" not in body


def test_images_are_only_served_as_images(station: ReviewStation, journal: Journal) -> None:
    client = Client(station)
    assert client.login() == 303
    odd = [s for s in journal.samples() if s.part_id == "odd"][0]
    status, headers, body = client.request("GET", f"/api/image/{odd.id}")
    assert status == 415 and b"<html>" not in body
    assert client.request("GET", "/api/image/999999")[0] == 404


def test_wrong_passwords_are_rate_limited_even_before_the_right_one(
    station: ReviewStation, clock: Clock
) -> None:
    client = Client(station)
    for _ in range(station.config.max_failures):
        assert client.login(password="wrong password!") == 401
    assert client.login() == 429  # the right password, refused while limited
    assert "lg_session" not in client.cookies
    assert client.login(operator="bob", password="x" * 12) == 429  # same address
    clock.now += station.config.failure_window_s
    assert client.login() == 303


def test_an_unknown_operator_fails_like_a_wrong_password(station: ReviewStation) -> None:
    client = Client(station)
    assert client.login(operator="mallory") == 401
    assert "lg_session" not in client.cookies


def test_sessions_expire_when_idle_and_end_at_logout(station: ReviewStation, clock: Clock) -> None:
    client = Client(station)
    assert client.login() == 303
    assert client.request("GET", "/api/state")[0] == 200
    clock.now += station.config.idle_s
    assert client.request("GET", "/api/state")[0] == 401
    assert client.login() == 303
    csrf = client.csrf()
    session = client.cookies["lg_session"]
    status, _, _ = client.request(
        "POST",
        "/logout",
        urlencode({"csrf": csrf}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": client.origin},
    )
    assert status == 303 and "lg_session" not in client.cookies
    client.cookies["lg_session"] = session  # the old cookie no longer opens anything
    assert client.request("GET", "/api/state")[0] == 401


def test_requests_per_address_are_rate_limited(station: ReviewStation, clock: Clock) -> None:
    client = Client(station)
    statuses = [
        client.request("GET", "/login")[0] for _ in range(int(station.config.request_burst) + 1)
    ]
    assert statuses[:-1] == [200] * int(station.config.request_burst) and statuses[-1] == 429
    clock.now += 1.0
    assert client.request("GET", "/login")[0] == 200


def test_the_station_never_binds_every_interface_nor_starts_without_operators() -> None:
    operators = {"alice": PasswordHash.parse(hash_password(PASSWORD, n=2**10))}
    with pytest.raises(StationError, match="all interfaces"):
        StationConfig(bind="0.0.0.0", port=8088, operators=operators)
    with pytest.raises(StationError, match="not an IP address"):
        StationConfig(bind="", port=8088, operators=operators)
    with pytest.raises(StationError, match="no operators"):
        StationConfig(bind="127.0.0.1", port=8088, operators={})


def test_plain_http_on_the_plant_network_needs_an_explicit_yes(tmp_path: Path) -> None:
    operators = {"alice": PasswordHash.parse(hash_password(PASSWORD, n=2**10))}
    with pytest.raises(StationError, match="passwords and session cookies in clear"):
        StationConfig(bind="10.20.30.41", port=8088, operators=operators)
    assert StationConfig(bind="10.20.30.41", port=8088, operators=operators, allow_plain_http=True)
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls = StationConfig(bind="10.20.30.41", port=8443, operators=operators, tls_cert=cert,
                        tls_key=key)  # fmt: skip
    assert tls.scheme == "https"
    assert StationConfig(bind="::1", port=8088, operators=operators).scheme == "http"


def test_an_operators_file_must_be_private_and_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "operators.json"
    path.write_text(json.dumps({"operators": {"alice": hash_password(PASSWORD, n=2**10)}}))
    path.chmod(0o600)
    assert set(read_operators(path)) == {"alice"}
    path.chmod(0o666)
    with pytest.raises(CredentialError, match="writable by group or others"):
        read_operators(path)
    path.chmod(0o600)
    path.write_text(json.dumps({"operators": {}}))
    with pytest.raises(CredentialError, match="non-empty"):
        read_operators(path)
    path.write_text(json.dumps({"operators": {"alice": "plain-text-password"}}))
    with pytest.raises(CredentialError, match=r"operators\.alice: not an scrypt"):
        read_operators(path)
    hashed = {"alice": hash_password(PASSWORD, n=2**10)}
    for extra, words in (
        ({"bind": "0.0.0.0"}, "bind: '0.0.0.0' would serve every interface"),
        ({"bind": "tablet-lan"}, "bind: 'tablet-lan' is not an IP address"),
        ({"hosts": ["a b"]}, r"hosts\[0\]: 'a b' is not a host name"),
        ({"hosts": "station-7"}, "hosts: a list of at most"),
        ({"port": 80}, "port: unknown field"),
    ):
        path.write_text(json.dumps({"operators": hashed, **extra}))
        with pytest.raises(CredentialError, match=words):
            read_station_file(path)
    path.write_text(json.dumps({"operators": hashed, "bind": "::1", "hosts": ["QC-7.plant"]}))
    device = read_station_file(path)
    assert (device.bind, device.hosts) == ("::1", ("qc-7.plant",))
    with pytest.raises(CredentialError, match="at least 10"):
        hash_password("short")


def test_the_service_queues_its_manual_parts_and_sends_their_labels_upstream(
    tmp_path: Path, tiny_package_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from inspector import service
    from inspector.transports.file import UPSTREAM_FILE, FileTransport, read_jsonl

    images = tmp_path / "frames"
    images.mkdir()
    (images / "a-good.png").write_bytes(image_bytes(part_image(0.0)))
    (images / "b-band.png").write_bytes(PNG)
    operators = tmp_path / "operators.json"
    hashed = {"alice": hash_password(PASSWORD, n=2**10)}
    operators.write_text(json.dumps({"operators": hashed}))
    operators.chmod(0o600)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = [
        "--transport", "file", "--out", str(tmp_path / "out"), "--images", str(images),
        "--once", "--model", str(tiny_package_dir), "--journal", str(tmp_path / "j.db"),
        "--plant", "p1", "--line", "l1", "--station", "s1", "--device", "dev-1",
    ]  # fmt: skip
    with caplog.at_level("WARNING"):
        off = service.Service(service.parse_settings(base), FileTransport(tmp_path / "off"))
        assert off.station is None
        assert "review station off: no operators file configured" in caplog.text
        off.journal.close()
        # an operators file that names no address: still off (never a default interface)
        args = [*base, "--review-port", str(port), "--review-operators", str(operators)]
        off = service.Service(service.parse_settings(args), FileTransport(tmp_path / "off"))
        assert off.station is None and 'has no "bind"' in caplog.text
        off.journal.close()

    # the address and the host names are the device's, in its own file
    operators.write_text(
        json.dumps({"operators": hashed, "bind": "127.0.0.1", "hosts": ["Station-7.plant"]})
    )
    (tmp_path / "j.db").unlink()
    svc = service.Service(service.parse_settings(args), FileTransport(tmp_path / "out"))
    assert svc.station is not None
    assert svc.station.config.bind == "127.0.0.1"
    assert f"station-7.plant:{port}" in svc.station.config.allowed_hosts()
    for frames, cursors in svc._batches():
        svc.process(frames, cursors)
    svc.station.start()
    try:
        client = Client(svc.station)
        assert client.login() == 303
        state = json.loads(client.request("GET", "/api/state")[2])
        (part,) = state["queue"]
        assert part["part_id"] == "b-band.png" and part["decision"] == "manual"
        status, _, image = client.request("GET", part["image"])
        assert status == 200 and image == PNG
        status, body = client.verdict(
            {k: part[k] for k in ("part_id", "result_seq", "revision")} | {"label": "good"},
            **{"X-CSRF-Token": client.csrf()},
        )
        assert status == 200 and body["status"] == "recorded"
        assert svc.uplink.drain(timeout_s=10)
    finally:
        svc.station.stop()
        svc.journal.close()
    batches = [
        line["payload"]
        for line in read_jsonl(tmp_path / "out" / UPSTREAM_FILE)
        if line["topic"].endswith("/results")
    ]
    sent_labels = [m for b in batches for m in b.get("labels", [])]
    assert [(m["part_id"], m["label"], m["operator"]) for m in sent_labels] == [
        ("b-band.png", "good", "alice")
    ]
    results = {r["part_id"]: r for b in batches for r in b["results"]}
    assert sent_labels[0]["result_seq"] == results["b-band.png"]["seq"]
    assert sent_labels[0]["seq"] > results["b-band.png"]["seq"]


@pytest.mark.parametrize(
    ("station", "words"),
    [
        ({"bind": "10.0.0.5"}, "reviewStation.bind: a per-device fact, never a ring's"),
        ({"hosts": "station-7"}, "reviewStation.hosts: a per-device fact, never a ring's"),
        ({"port": 70000}, "reviewStation.port"),
        ({"tlsCert": "/etc/cert.pem"}, "reviewStation.tlsCert/tlsKey: set both or neither"),
        ({"password": "hunter2"}, "reviewStation.password: unknown setting"),
        ({"operatorsFile": "/var/lib/line guard/ops.json"}, "reviewStation.operatorsFile: '/var"),
        ({"operatorsFile": "etc/ops.json"}, "is not an absolute path"),
        ({"operatorsFile": '/etc/ops".json'}, "no spaces, quotes or shell characters"),
        ({"operatorsFile": "/etc/$(reboot)"}, "reviewStation.operatorsFile"),
        ({"operatorsFile": "/etc/ops.json;reboot"}, "reviewStation.operatorsFile"),
        ({"tlsCert": "/etc/c.pem", "tlsKey": "/etc/`id`.pem"}, "reviewStation.tlsKey"),
        ({"tlsCert": "/etc/c.pem\n", "tlsKey": "/etc/k.pem"}, "reviewStation.tlsCert"),
        ({"allowPlainHttp": "yes"}, "reviewStation.allowPlainHttp: must be true or false"),
    ],
)
def test_a_deployment_with_a_bad_station_setting_is_refused(
    station: dict[str, Any], words: str
) -> None:
    from inspector.component_config import validate_component_config
    from inspector.runtime_config import ConfigError, RuntimeConfig

    base = {"port": 8088, "operatorsFile": "", "tlsCert": "", "tlsKey": "", "sessionHours": 8,
            "allowPlainHttp": False}  # fmt: skip
    validate_component_config({"reviewStation": base}, RuntimeConfig())
    good = {
        "operatorsFile": "/var/lib/lineguard/review-operators.json",
        "tlsCert": "/etc/lineguard/tls/station_7.crt",
        "tlsKey": "/etc/lineguard/tls/k-7.pem",
    }
    validate_component_config({"reviewStation": {**base, **good}}, RuntimeConfig())
    with pytest.raises(ConfigError, match=re.escape(words)):
        validate_component_config({"reviewStation": {**base, **station}}, RuntimeConfig())


def test_station_password_writes_a_private_operators_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "etc" / "operators.json"
    for name, password, extra in (
        ("alice", PASSWORD, ["--bind", "10.0.0.5", "--host", "qc-7.plant"]),
        ("bob", "another long one", []),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "inspector", "station-password", "--operator", name,
             "--file", str(path), *extra],
            input=password + "\n", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    operators = read_operators(path)
    assert set(operators) == {"alice", "bob"} and operators["alice"].verify(PASSWORD)
    assert not operators["bob"].verify(PASSWORD)
    device = read_station_file(path)  # the second run kept the device's address and names
    assert (device.bind, device.hosts) == ("10.0.0.5", ("qc-7.plant",))
    short = subprocess.run(
        [sys.executable, "-m", "inspector", "station-password", "--operator", "carol",
         "--file", str(path)],
        input="short\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert short.returncode == 2 and "at least 10 characters" in short.stderr


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "review-station-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_an_idle_tls_client_blocks_neither_other_clients_nor_stop(
    tmp_path: Path, journal: Journal, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review_station, "REQUEST_TIMEOUT_S", 1.0)
    cert, key = self_signed(tmp_path)
    operators = {"alice": PasswordHash.parse(hash_password(PASSWORD, n=2**10))}
    station = ReviewStation(
        StationConfig(bind="127.0.0.1", port=0, operators=operators, tls_cert=cert, tls_key=key),
        journal,
        IDENTITY,
        feed=LiveFeed(),
        clock=clock,
    )
    station.start()
    host, port = station.address
    trusted = ssl.create_default_context(cafile=str(cert))
    idle = [socket.create_connection((host, port), timeout=10)]
    try:
        time.sleep(0.2)  # the station has accepted them and waits for their handshakes
        started = time.monotonic()
        conn = http.client.HTTPSConnection(host, port, timeout=3, context=trusted)
        conn.request("GET", "/login", headers={"Host": f"127.0.0.1:{port}"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 200 and b'name="csrf"' in body
        assert "Secure" in (response.getheader("Set-Cookie") or "")
        assert time.monotonic() - started < 2.0
        # a client that never starts its handshake is dropped after the request timeout
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""
        # and stop returns promptly while another client still holds a connection open
        idle.append(socket.create_connection((host, port), timeout=10))
        time.sleep(0.2)
        stopper = threading.Thread(target=station.stop)
        started = time.monotonic()
        stopper.start()
        stopper.join(timeout=5)
        assert not stopper.is_alive() and time.monotonic() - started < 3.0
    finally:
        for sock in idle:
            sock.close()
        station.stop()


def test_the_page_labels_the_part_on_screen_never_a_queue_position() -> None:
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the page's script runs under node here)")
    harness = Path(__file__).with_name("js") / "station_page.js"
    done = subprocess.run(
        [node, str(harness), str(review_station.ASSETS / "station.js")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = json.loads(done.stdout)
    assert log["before_image"] == 0, "a verdict before the part's image loaded"
    assert log["before_settle"] == 0, "a verdict within the pause after the part changed"
    assert "part-a" in log["caption"], "a refresh moved the screen off the part"
    assert [(v["part_id"], v["result_seq"]) for v in log["posted"]] == [("part-a", 1)]
    assert "part-b" in log["shown_after"] and log["after_double_tap"] == 1


def test_parallel_logins_cannot_outrun_the_failure_limit(journal: Journal, clock: Clock) -> None:
    # a real-cost hash (n=2^14), so guesses overlap while one is being checked
    operators = {"alice": PasswordHash.parse(hash_password(PASSWORD))}
    station = ReviewStation(
        StationConfig(bind="127.0.0.1", port=0, operators=operators),
        journal,
        IDENTITY,
        feed=LiveFeed(),
        clock=clock,
    )
    station.start()
    try:
        clients = [Client(station) for _ in range(15)]
        forms = []
        for client in clients:
            status, _, page = client.request("GET", "/login")
            token = re.search(rb'name="csrf" value="([^"]+)"', page)
            assert status == 200 and token is not None
            forms.append(
                urlencode({"operator": "alice", "password": "wrong password!",
                           "csrf": token.group(1)}).encode()
            )  # fmt: skip
        start = threading.Barrier(len(clients))
        statuses: list[int] = []

        def guess(client: Client, form: bytes) -> None:
            start.wait()
            headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": client.origin}
            statuses.append(client.request("POST", "/login", form, headers)[0])

        threads = [
            threading.Thread(target=guess, args=pair) for pair in zip(clients, forms, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(statuses) == [401] * station.config.max_failures + [429] * (
            len(clients) - station.config.max_failures
        )
    finally:
        station.stop()


def test_a_full_login_limiter_forgets_only_expired_keys(clock: Clock) -> None:
    limiter = LoginLimiter(max_failures=2, window_s=300.0, clock=clock, max_keys=3)
    assert limiter.reserve("addr:a") == 0 and limiter.reserve("addr:a") == 0
    assert limiter.reserve("addr:a") > 0  # locked out
    clock.now += 200
    assert limiter.reserve("addr:b") == 0 and limiter.reserve("addr:c") == 0
    # full of live keys: a new one is refused, the lockout stands
    assert limiter.reserve("addr:d") > 0
    assert limiter.retry_after("addr:a") > 0
    clock.now += 150  # a's attempts have left the window, b's and c's have not
    assert limiter.reserve("addr:d") == 0
    assert limiter.retry_after("addr:a") == 0
    assert limiter.reserve("addr:b") == 0 and limiter.reserve("addr:b") > 0
    limiter.succeeded("addr:d")
    assert limiter.retry_after("addr:d") == 0


def test_ipv6_clients_are_limited_by_their_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7" and client_key("10.0.0.7") == "10.0.0.7"


def test_polling_does_not_keep_an_idle_session_alive_a_verdict_does(
    station: ReviewStation, journal: Journal, clock: Clock
) -> None:
    client = Client(station)
    assert client.login() == 303
    step = station.config.idle_s / 3
    clock.now += step
    assert client.verdict(
        {**queued(journal, "part-1"), "label": "good"}, **{"X-CSRF-Token": client.csrf()}
    )[0] == 200  # fmt: skip
    for _ in range(2):  # the page polls on its own; nobody touches the tablet
        clock.now += step
        assert client.request("GET", "/api/state")[0] == 200
        assert client.request("GET", "/static/station.js")[0] == 200
    clock.now += step + 1  # idle_s since the page load and verdict (csrf() loads the page)
    assert client.request("GET", "/api/state")[0] == 401


def test_a_hash_a_password_check_could_not_allocate_is_refused_when_read() -> None:
    salt, key = "A" * 22, "A" * 43  # 16 and 32 bytes, base64url
    with pytest.raises(CredentialError, match="need 1024 MiB; a password check may use 256"):
        PasswordHash.parse(f"scrypt${2**20}$8$1${salt}${key}")
    PasswordHash.parse(f"scrypt${2**17}$8$1${salt}${key}")  # 128 MiB: fits


def test_an_unknown_name_costs_what_the_operators_hashes_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hashlib

    from inspector import station_auth

    operators = {"alice": PasswordHash.parse(hash_password(PASSWORD, n=2**12))}
    costs: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def spy(password: bytes, **kw: Any) -> bytes:
        costs.append((kw["n"], kw["r"], kw["p"]))
        return real(password, **kw)

    monkeypatch.setattr(station_auth.hashlib, "scrypt", spy)
    assert not station_auth.check_login(operators, "alice", "wrong password!")
    assert not station_auth.check_login(operators, "mallory", "wrong password!")
    assert costs == [(2**12, 8, 1), (2**12, 8, 1)]

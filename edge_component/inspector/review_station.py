"""The review station: a small authenticated web page on the plant network (docs/review-station.md).

A thread of the inspector (``ThreadingHTTPServer`` from the standard library, a bounded number
of connections): per camera the live verdict stream, the queue of ``manual`` parts (and on
request ``reject`` ones) with the image the sampler kept, and "good" / "defect" buttons (with the
model package's defect types when its manifest lists them, ``metrics.defect_types``). A verdict
is journaled durably by :meth:`Journal.record_label` as a label message, which the uplink sends
with the results.

Security on a shared LAN: every page but the login form needs a session (cookie ``HttpOnly;
SameSite=Strict``, absolute and idle expiry); every write needs the session's CSRF token and an
``Origin`` (or ``Referer``) of the station itself; the ``Host`` header must name the station
(DNS rebinding); the station binds the one address it is configured with, never all interfaces;
bodies are small and typed; failed logins and requests per address are rate-limited; ids in
paths are digits only. The server never raises into the inspector: a request that fails is a
500, logged.
"""

from __future__ import annotations

import contextlib
import http.cookies
import ipaddress
import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from inspector.anomaly_map import AT_THRESHOLD
from inspector.journal import Journal, JournalError, Review
from inspector.messages import (
    DEFECT_TYPE,
    LABELS,
    Identity,
    MessageError,
    build_label,
    rfc3339_ms,
)
from inspector.station_auth import (
    LoginLimiter,
    PasswordHash,
    RequestLimiter,
    Sessions,
    check_host,
    check_login,
    client_key,
)

LOG = logging.getLogger(__name__)
SESSION_COOKIE = "lg_session"
LOGIN_COOKIE = "lg_login"  # the login form's own CSRF token (there is no session yet)
LOGIN_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")  # secrets.token_urlsafe(24)
MAX_BODY_BYTES = 8 * 1024
MAX_PATH_CHARS = 2048
MAX_CONNECTIONS = 16
MAX_DEFECT_TYPES = 32
REQUEST_TIMEOUT_S = 10.0  # per socket operation, the TLS handshake included
STOP_TIMEOUT_S = 2.0
ASSETS = Path(__file__).with_name("station_assets")
# the only files served, by URL path (never a path built from the request)
STATIC = {
    "/static/station.js": ("station.js", "text/javascript; charset=utf-8"),
    "/static/station.css": ("station.css", "text/css; charset=utf-8"),
}
IMAGE = re.compile(r"^/api/image/([0-9]{1,18})$")
ANOMALY_MAP = re.compile(r"^/api/map/([0-9]{1,18})$")  # a sample's map (inspector.anomaly_map)
_IMAGE_TYPES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"BM", "image/bmp"),
)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class StationError(Exception):
    """The station cannot start (bad bind address, port taken, bad TLS files): one clear line."""


@dataclass(frozen=True)
class StationConfig:
    """Where and how the station serves.

    Args:
        bind: the one IP address to listen on (an interface's address, or loopback); a
            per-device fact, from the device's operators file (never a ring's deployment).
        port: TCP port.
        operators: operator name → password hash (:func:`station_auth.read_operators`).
        hosts: extra host names the station is reached by (the ``Host`` header is checked);
            per device, from the same file.
        session_s: a session's absolute lifetime; ``idle_s``: how long it lives unused.
        tls_cert, tls_key: serve HTTPS with this certificate (PEM); cookies are then ``Secure``.
        max_failures, failure_window_s: failed logins per address and per name before refusal.
        request_rate, request_burst: requests per second per address (token bucket).
        allow_plain_http: serve plain HTTP on an address other than loopback (refused unless
            set: passwords and cookies would cross the LAN in clear).
    """

    bind: str
    port: int
    operators: Mapping[str, PasswordHash]
    hosts: tuple[str, ...] = ()
    session_s: float = 8 * 3600.0
    idle_s: float = 30 * 60.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_failures: int = 5
    failure_window_s: float = 300.0
    request_rate: float = 20.0
    request_burst: float = 60.0
    allow_plain_http: bool = False

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.bind)
        except ValueError:
            raise StationError(
                f"review station bind {self.bind!r}: not an IP address (the plant-network "
                "interface's address, or 127.0.0.1)"
            ) from None
        if address.is_unspecified:
            raise StationError(
                f"review station bind {self.bind!r}: all interfaces are never served; give "
                "the address of the interface the tablets use"
            )
        if not 0 <= self.port < 65536:  # 0: the system picks one (tests)
            raise StationError(f"review station port {self.port}: outside 1..65535")
        if not self.operators:
            raise StationError("review station: no operators (nobody could log in)")
        for host in self.hosts:
            try:
                check_host(host)
            except ValueError as exc:
                raise StationError(f"review station host: {exc}") from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise StationError("review station: TLS needs both a certificate and a key")
        if self.tls_cert is None and not address.is_loopback and not self.allow_plain_http:
            raise StationError(
                f"review station bind {self.bind}: plain HTTP on the plant network would carry "
                "passwords and session cookies in clear; give tlsCert and tlsKey, or set "
                "allowPlainHttp: true to accept that"
            )

    @property
    def scheme(self) -> str:
        """``https`` with a certificate, else ``http``."""
        return "https" if self.tls_cert else "http"

    def allowed_hosts(self) -> frozenset[str]:
        """Every ``Host`` header value the station answers."""
        address = ipaddress.ip_address(self.bind)
        names = [f"[{self.bind}]" if address.version == 6 else self.bind, *self.hosts]
        if address.is_loopback:
            names.append("localhost")
        default = 443 if self.tls_cert else 80
        out = {f"{name}:{self.port}".lower() for name in names}
        if self.port == default:
            out |= {name.lower() for name in names}
        return frozenset(out)


class LiveFeed:
    """The latest verdicts per camera, for the page's live stream (memory only)."""

    def __init__(self, per_camera: int = 12, max_cameras: int = 64) -> None:
        self._per_camera = per_camera
        self._max_cameras = max_cameras
        self._lock = threading.Lock()
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._counts: dict[str, dict[str, int]] = {}

    def record(self, result: Mapping[str, Any]) -> None:
        """Note one journaled result (the frame loop calls this; cheap, never raises)."""
        camera = str(result.get("camera", ""))
        entry = {k: result.get(k) for k in ("part_id", "seq", "ts", "decision", "score", "reason")}
        with self._lock:
            if camera not in self._recent and len(self._recent) >= self._max_cameras:
                return
            self._recent.setdefault(camera, deque(maxlen=self._per_camera)).appendleft(entry)
            counts = self._counts.setdefault(camera, {})
            decision = str(result.get("decision"))
            counts[decision] = counts.get(decision, 0) + 1

    def snapshot(self) -> list[dict[str, Any]]:
        """Every camera's latest verdicts (newest first) and counts since start."""
        with self._lock:
            return [
                {"camera": cam, "recent": list(items), "counts": dict(self._counts[cam])}
                for cam, items in sorted(self._recent.items())
            ]


def defect_types_of(metrics: Mapping[str, Any]) -> tuple[str, ...]:
    """The defect types a model package lists (``metrics.defect_types``), or () for none."""
    value = metrics.get("defect_types")
    if not isinstance(value, list):
        return ()
    types = [v for v in value if isinstance(v, str) and DEFECT_TYPE.match(v)]
    return tuple(dict.fromkeys(types))[:MAX_DEFECT_TYPES]


class _Refused(Exception):
    """A request refused with a status and a message naming what was wrong."""

    def __init__(self, status: HTTPStatus, message: str, headers: Iterable[tuple[str, str]] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class ReviewStation:
    """The station: its HTTP server thread, sessions, limits and the journal it writes to.

    Args:
        config: where and how to serve.
        journal: the inspector's journal (review queue, samples, labels).
        identity: carried in every label message.
        feed: the live verdict stream.
        defect_types: the served model package's defect types now (() for none).
        model: the served model's ``name@version`` now.
        clock: monotonic seconds (sessions, limits); ``wall_clock``: epoch seconds (verdicts).
    """

    def __init__(
        self,
        config: StationConfig,
        journal: Journal,
        identity: Identity,
        *,
        feed: LiveFeed,
        defect_types: Callable[[], tuple[str, ...]] = tuple,
        model: Callable[[], str | None] = lambda: None,
        on_verdict: Callable[[Review, str | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.on_verdict = on_verdict
        self.journal = journal
        self.identity = identity
        self.feed = feed
        self.defect_types = defect_types
        self.model = model
        self.wall_clock = wall_clock
        self.sessions = Sessions(lifetime_s=config.session_s, idle_s=config.idle_s, clock=clock)
        self.logins = LoginLimiter(config.max_failures, config.failure_window_s, clock)
        self.requests = RequestLimiter(config.request_rate, config.request_burst, clock)
        self.hosts = config.allowed_hosts()
        self.origins = frozenset(f"{config.scheme}://{host}" for host in self.hosts)
        self.password_check = threading.Semaphore(1)  # scrypt: at most one core for logins
        self.assets = {path: (ASSETS / name).read_bytes() for path, (name, _) in STATIC.items()}
        self.page = (ASSETS / "station.html").read_text(encoding="utf-8")
        self.login_page = (ASSETS / "login.html").read_text(encoding="utf-8")
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually listened on (the port is chosen when configured as 0)."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Listen and serve in a daemon thread; raise StationError if it cannot listen."""
        family = socket.AF_INET6 if ":" in self.config.bind else socket.AF_INET
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        try:
            server = server_class((self.config.bind, self.config.port), _Handler)
        except OSError as exc:
            raise StationError(
                f"review station cannot listen on {self.config.bind}:{self.config.port} "
                f"({exc.strerror or exc})"
            ) from None
        if self.config.tls_cert is not None and self.config.tls_key is not None:
            try:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
            except (OSError, ssl.SSLError) as exc:
                server.server_close()
                raise StationError(f"review station TLS: {exc}") from None
            # each connection is wrapped (and its handshake run) in its own thread, with a
            # timeout: a handshake in accept() would let one idle client block every other
            server.tls = context
        server.station = self
        if self.config.port == 0:  # tests: the real port, for the Host check
            port = server.server_address[1]
            self.config = _with_port(self.config, port)
            self.hosts = self.config.allowed_hosts()
            self.origins = frozenset(f"{self.config.scheme}://{h}" for h in self.hosts)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="review-station"
        )
        self._thread.daemon = True
        self._thread.start()
        LOG.warning(
            "review station serving %s://%s:%d for %d operator(s)",
            self.config.scheme,
            *self.address,
            len(self.config.operators),
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop serving, close the socket and every open connection; return within about
        ``timeout_s`` whatever the clients do (a connection's thread is a daemon)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        deadline = time.monotonic() + timeout_s
        stopper = threading.Thread(target=server.shutdown, name="review-station-stop")
        stopper.daemon = True
        stopper.start()
        stopper.join(timeout=timeout_s)
        if stopper.is_alive():
            LOG.warning("review station: still serving after %.1f s; closing anyway", timeout_s)
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- what the pages show and do ------------------------------------------------------

    def state(self, *, rejects: bool) -> dict[str, Any]:
        """The page's data: live verdicts, the queue, the latest verdicts, defect types."""
        decisions = ("manual", "reject") if rejects else ("manual",)
        queue = self.journal.reviews(decisions=decisions, labelled=False, limit=50)
        done = self.journal.reviews(decisions=("manual", "reject"), labelled=True, limit=10)
        return {
            "cameras": self.feed.snapshot(),
            "queue": [_review_json(r) for r in queue],
            "labelled": [_review_json(r) for r in done],
            "defect_types": list(self.defect_types()),
            "model": self.model(),
            "map_at_threshold": AT_THRESHOLD,
        }

    def verdict(self, operator: str, doc: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        """Validate and journal one verdict; (status, response body)."""
        if not isinstance(doc, dict):
            raise _Refused(HTTPStatus.BAD_REQUEST, "verdict: the body must be a JSON object")
        unknown = sorted(set(doc) - {"part_id", "result_seq", "revision", "label", "defect_type"})
        if unknown:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"verdict.{unknown[0]}: unknown field")
        part_id = doc.get("part_id")
        if not isinstance(part_id, str) or not 0 < len(part_id) <= 64:
            raise _Refused(HTTPStatus.BAD_REQUEST, "verdict.part_id: must be a part id string")
        for name in ("result_seq", "revision"):
            value = doc.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _Refused(
                    HTTPStatus.BAD_REQUEST, f"verdict.{name}: must be a non-negative integer"
                )
        label = doc.get("label")
        if label not in LABELS:
            raise _Refused(
                HTTPStatus.BAD_REQUEST, f"verdict.label: {label!r} is not one of good, defect"
            )
        defect_type = doc.get("defect_type")
        types = self.defect_types()
        if defect_type is not None:
            if label != "defect":
                raise _Refused(
                    HTTPStatus.BAD_REQUEST, "verdict.defect_type: only with label 'defect'"
                )
            if defect_type not in types:
                raise _Refused(
                    HTTPStatus.BAD_REQUEST,
                    f"verdict.defect_type: {defect_type!r} is not one of the model package's "
                    f"defect types ({', '.join(types) or 'none listed'})",
                )
        now = self.wall_clock()

        def message(review: Review, seq: int) -> dict[str, Any]:
            return build_label(
                self.identity,
                camera=review.camera,
                part_id=review.part_id,
                seq=seq,
                ts=now,
                label=str(label),
                operator=operator,
                revision=review.revision,
                result_seq=review.result_seq,
                decision=review.decision,
                model=review.model,
                defect_type=defect_type,
            )

        try:
            outcome = self.journal.record_label(
                part_id,
                result_seq=int(doc["result_seq"]),
                revision=int(doc["revision"]),
                label=str(label),
                defect_type=defect_type,
                operator=operator,
                at=rfc3339_ms(now),
                message=message,
            )
        except MessageError as exc:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"verdict: {exc}") from None
        except JournalError as exc:
            LOG.error("review station: verdict not journaled: %s", exc)
            raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, "the journal is not writable") from None
        body: dict[str, Any] = {"status": outcome.status}
        if outcome.review is not None:
            body["part"] = _review_json(outcome.review)
        if outcome.seq is not None:
            body["seq"] = outcome.seq
        if outcome.status == "recorded" and outcome.review and self.on_verdict is not None:
            try:  # the verdict is journaled: counting it must not fail the request
                self.on_verdict(outcome.review, outcome.previous)
            except Exception:
                LOG.exception("review station: verdict not counted for health")
        if outcome.status == "recorded":
            LOG.info(
                "review station: %s labelled %s %s%s (revision %d)",
                operator,
                part_id,
                label,
                f"/{defect_type}" if defect_type else "",
                outcome.review.revision if outcome.review else 0,
            )
        status = {
            "recorded": HTTPStatus.OK,
            "unchanged": HTTPStatus.OK,
            "conflict": HTTPStatus.CONFLICT,
            "unknown": HTTPStatus.NOT_FOUND,
        }[outcome.status]
        if outcome.status == "unknown":
            body["error"] = f"verdict.part_id: {part_id!r} is not in the review queue"
        elif outcome.status == "conflict":
            body["error"] = (
                f"verdict: {part_id!r} changed since it was shown (judged again or given "
                "another verdict); look again"
            )
        return status, body


def _with_port(config: StationConfig, port: int) -> StationConfig:
    return replace(config, port=port)


def _review_json(review: Review) -> dict[str, Any]:
    doc = asdict(review)
    doc["image"] = None if review.sample_id is None else f"/api/image/{review.sample_id}"
    doc["map"] = f"/api/map/{review.sample_id}" if review.has_map else None
    del doc["sample_id"], doc["has_map"]
    return doc


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most :data:`MAX_CONNECTIONS` at once (others get 503).

    With TLS the listening socket stays plain: each accepted connection is wrapped and its
    handshake run in the connection's own thread, bounded by :data:`REQUEST_TIMEOUT_S`.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4 * MAX_CONNECTIONS  # the listen backlog (socketserver's default: 5)
    station: ReviewStation
    tls: ssl.SSLContext | None = None

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def close_connections(self) -> None:
        """Shut every open connection down (their threads then end on their own)."""
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            request.settimeout(REQUEST_TIMEOUT_S)
            if self.tls is not None:
                try:
                    wrapped = self.tls.wrap_socket(
                        request, server_side=True, do_handshake_on_connect=False
                    )
                except (OSError, ValueError):
                    self.shutdown_request(request)
                    return
                with self._open_lock:  # the wrapper now owns the file descriptor
                    self._open.discard(request)
                    self._open.add(wrapped)
                request = wrapped
                try:
                    wrapped.do_handshake()
                except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSError
                    LOG.debug("review station: TLS handshake with %s failed: %s",
                              client_address[0], exc)  # fmt: skip
                    self.shutdown_request(wrapped)
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        LOG.warning("review station: connection from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """One request: checks, then the route."""

    server: _Server
    server_version = "LineGuard-ReviewStation"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S  # a client that sends nothing does not hold a thread
    protocol_version = "HTTP/1.0"

    # -- plumbing --------------------------------------------------------------------------

    @property
    def station(self) -> ReviewStation:
        return self.server.station

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        LOG.debug("review station %s: " + format, self.client_address[0], *args)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: Iterable[tuple[str, str]] = (),
        csp: str = CSP,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("Content-Security-Policy", csp)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, doc: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self._send(status, body, "application/json", headers)

    def _refuse(self, refused: _Refused) -> None:
        self.close_connection = True
        wants_json = self.path.startswith("/api/") or self.command == "POST"
        if wants_json:
            self._json(refused.status, {"error": refused.message}, refused.headers)
        else:
            body = f"{refused.status.value} {refused.status.phrase}: {refused.message}\n"
            self._send(refused.status, body.encode(), "text/plain; charset=utf-8", refused.headers)

    def _cookie(self, name: str) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(raw)
        except http.cookies.CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel is not None else None

    def _set_cookie(self, name: str, value: str, max_age: int) -> tuple[str, str]:
        secure = "; Secure" if self.station.config.tls_cert else ""
        return (
            "Set-Cookie",
            f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        )

    def _check_request(self) -> None:
        """Before any route: path length, Host header, request rate."""
        if len(self.path) > MAX_PATH_CHARS:
            raise _Refused(HTTPStatus.REQUEST_URI_TOO_LONG, f"path over {MAX_PATH_CHARS} chars")
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.station.hosts:
            raise _Refused(
                HTTPStatus.MISDIRECTED_REQUEST,
                f"Host {host!r} is not this station (expected one of "
                f"{', '.join(sorted(self.station.hosts))})",
            )
        if not self.station.requests.allow(client_key(self.client_address[0])):
            raise _Refused(
                HTTPStatus.TOO_MANY_REQUESTS, "too many requests", [("Retry-After", "1")]
            )

    def _check_origin(self) -> None:
        """A write must come from the station's own page (Origin, else Referer)."""
        origin = self.headers.get("Origin")
        if origin is None:
            referer = self.headers.get("Referer")
            if referer is None:
                raise _Refused(HTTPStatus.FORBIDDEN, "a write needs an Origin or Referer header")
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin.lower() not in self.station.origins:
            raise _Refused(HTTPStatus.FORBIDDEN, f"Origin {origin!r} is not this station")

    def _body(self, content_type: str) -> bytes:
        """The request body: typed, with a Content-Length, at most MAX_BODY_BYTES."""
        if self.headers.get("Transfer-Encoding"):
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "a write needs a Content-Length")
        try:
            length = int(length_text)
        except ValueError:
            raise _Refused(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise _Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes; at most {MAX_BODY_BYTES}",
            )
        given = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if given != content_type:
            raise _Refused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {given!r}; expected {content_type}",
            )
        return self.rfile.read(length)

    def _session(self, *, active: bool) -> Any:
        return self.station.sessions.get(self._cookie(SESSION_COOKIE), active=active)

    # -- methods ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._dispatch(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _other(self) -> None:
        self._dispatch(self._not_allowed)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = _other  # noqa: N815

    def _not_allowed(self, path: str) -> None:
        raise _Refused(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not served")

    def _dispatch(self, route: Callable[[str], None]) -> None:
        try:
            self._check_request()
            route(urlsplit(self.path).path)
        except _Refused as refused:
            self._refuse(refused)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            LOG.exception("review station: %s %s failed", self.command, self.path[:200])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    # -- routes ----------------------------------------------------------------------------

    def _get(self, path: str) -> None:
        if path == "/login":
            self._login_form(HTTPStatus.OK, "")
            return
        # polls, images and assets are the page's own doing: only loading the page counts as
        # the operator's activity (and every write, below)
        session = self._session(active=path == "/")
        if session is None:
            if path.startswith("/api/") or path.startswith("/static/"):
                raise _Refused(HTTPStatus.UNAUTHORIZED, "log in first")
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", [("Location", "/login")])
            return
        if path == "/":
            page = (
                self.station.page.replace("{{csrf}}", session.csrf)
                .replace("{{operator}}", _html(session.operator))
                .replace("{{station}}", _html(self.station.identity.station))
                .replace("{{device}}", _html(self.station.identity.device))
            )
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif path in STATIC:
            self._send(HTTPStatus.OK, self.station.assets[path], STATIC[path][1])
        elif path == "/api/state":
            query = parse_qs(urlsplit(self.path).query)
            rejects = query.get("rejects", ["0"])[0] == "1"
            state = self.station.state(rejects=rejects)
            state["operator"] = session.operator
            self._json(HTTPStatus.OK, state)
        elif match := IMAGE.match(path):
            self._image(int(match.group(1)))
        elif match := ANOMALY_MAP.match(path):
            self._map(int(match.group(1)))
        elif path == "/favicon.ico":  # asked by every browser: no icon, and no error either
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            raise _Refused(HTTPStatus.NOT_FOUND, f"{path[:100]!r} is not served")

    def _image(self, sample_id: int) -> None:
        sample = self.station.journal.sample(sample_id)
        if sample is None:
            raise _Refused(HTTPStatus.NOT_FOUND, f"image {sample_id}: not stored (or evicted)")
        for magic, kind in _IMAGE_TYPES:
            if sample.data.startswith(magic):
                self._send(HTTPStatus.OK, sample.data, kind)
                return
        raise _Refused(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"image {sample_id}: not PNG, JPEG or BMP"
        )

    def _map(self, sample_id: int) -> None:
        data = self.station.journal.sample_map(sample_id)
        if data is None or not data.startswith(_IMAGE_TYPES[0][0]):
            raise _Refused(HTTPStatus.NOT_FOUND, f"anomaly map {sample_id}: not stored")
        self._send(HTTPStatus.OK, data, "image/png")

    def _post(self, path: str) -> None:
        if path == "/login":
            self._login()
            return
        session = self._session(active=False)
        if session is None:
            raise _Refused(HTTPStatus.UNAUTHORIZED, "log in first")
        self._check_origin()
        sent = self.headers.get("X-CSRF-Token") or ""
        if path == "/logout":
            form = parse_qs(self._body("application/x-www-form-urlencoded").decode("latin-1"))
            sent = sent or form.get("csrf", [""])[0]
        if not secrets.compare_digest(sent.encode(), session.csrf.encode()):
            raise _Refused(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token")
        self.station.sessions.get(self._cookie(SESSION_COOKIE), active=True)  # a checked write
        if path == "/logout":
            self.station.sessions.drop(self._cookie(SESSION_COOKIE))
            self._send(
                HTTPStatus.SEE_OTHER,
                b"",
                "text/plain",
                [("Location", "/login"), self._set_cookie(SESSION_COOKIE, "", 0)],
            )
        elif path == "/api/verdict":
            raw = self._body("application/json")
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                raise _Refused(HTTPStatus.BAD_REQUEST, f"verdict: not JSON ({exc})") from None
            status, body = self.station.verdict(session.operator, doc)
            self._json(status, body)
        else:
            raise _Refused(HTTPStatus.NOT_FOUND, f"{path[:100]!r} is not served")

    def _login_form(self, status: HTTPStatus, message: str) -> None:
        # The form's token stays the one the browser already holds: a browser fetches more
        # than the form (its /favicon.ico is redirected here too), and a new token per fetch
        # would replace the cookie under the form on screen, failing the first login.
        held = self._cookie(LOGIN_COOKIE) or ""
        token = held if LOGIN_TOKEN.match(held) else secrets.token_urlsafe(24)
        nonce = secrets.token_urlsafe(16)
        page = (
            self.station.login_page.replace("{{csrf}}", token)
            .replace("{{nonce}}", nonce)
            .replace("{{message}}", _html(message))
            .replace("{{station}}", _html(self.station.identity.station))
        )
        self._send(
            status,
            page.encode(),
            "text/html; charset=utf-8",
            [self._set_cookie(LOGIN_COOKIE, token, 900)],
            csp=CSP.replace("style-src 'self'", f"style-src 'nonce-{nonce}'"),
        )

    def _login(self) -> None:
        self._check_origin()
        form = parse_qs(
            self._body("application/x-www-form-urlencoded").decode("utf-8", "replace"),
            max_num_fields=8,
        )
        expected = self._cookie(LOGIN_COOKIE) or ""
        sent = form.get("csrf", [""])[0]
        if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
            raise _Refused(HTTPStatus.FORBIDDEN, "missing or wrong login form token")
        name = form.get("operator", [""])[0][:64]
        password = form.get("password", [""])[0][:256]
        client = client_key(self.client_address[0])
        keys = (f"addr:{client}", f"name:{name.lower()}")
        wait = self.station.logins.reserve(*keys)  # counted now, before the slow check
        if wait > 0:
            LOG.warning("review station: login for %r refused (too many failures)", name)
            raise _Refused(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"too many failed logins; try again in {int(wait) + 1} s",
                [("Retry-After", str(int(wait) + 1))],
            )
        with self.station.password_check:
            ok = check_login(dict(self.station.config.operators), name, password)
        if not ok:
            LOG.warning("review station: failed login for %r from %s", name, keys[0][5:])
            self._login_form(HTTPStatus.UNAUTHORIZED, "Wrong operator name or password.")
            return
        self.station.logins.succeeded(*keys)
        token, _ = self.station.sessions.create(name)
        LOG.info("review station: %s logged in from %s", name, self.client_address[0])
        self._send(
            HTTPStatus.SEE_OTHER,
            b"",
            "text/plain",
            [
                ("Location", "/"),
                self._set_cookie(SESSION_COOKIE, token, int(self.station.config.session_s)),
                self._set_cookie(LOGIN_COOKIE, "", 0),
            ],
        )


def _html(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )

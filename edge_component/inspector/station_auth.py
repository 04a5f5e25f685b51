"""The review station's credentials, sessions and rate limits (stdlib only: hashlib.scrypt,
hmac, secrets).

- **Operators** are read from a per-device file written at provisioning (never from the
  deployment, which a ring shares and which the Greengrass console shows): a JSON object
  ``{"operators": {"<name>": "scrypt$<n>$<r>$<p>$<salt>$<hash>"}, "bind": "<address>",
  "hosts": ["<name>", ...]}`` made by ``python -m inspector station-password``. The same file
  carries the device's own facts for the station — the address it binds and the host names
  the tablets use — because they differ per device and a ring's deployment is shared (DESIGN
  §8). There is no default operator and no default password; a file that is missing, empty, or
  writable by others is refused.
- **Sessions** live in memory (a restart logs everyone out): a 256-bit random token in an
  ``HttpOnly; SameSite=Strict`` cookie, looked up by its SHA-256, with an absolute and an idle
  expiry; each session carries its own CSRF token.
- **Rate limits**: login attempts that did not succeed, per client (an IPv4 address or an IPv6
  /64) and per operator name — counted before the password is checked, so parallel attempts
  cannot outrun the limit (a sliding window; once over, even the right password is refused
  until the window passes) — and requests per client (a token bucket).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inspector.messages import OPERATOR_NAME

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
_MAX_N = 2**20  # a hash asking for more would let a bad file make every login take seconds
SCRYPT_MAXMEM = 1 << 28  # what a password check may allocate (256 MiB)
MIN_PASSWORD_CHARS = 10


MAX_HOSTS = 16
# a DNS host name (RFC 1123 labels), lower or upper case, at most 253 characters
HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class CredentialError(ValueError):
    """An operators file or password hash that cannot be used (names the file and why)."""


def check_bind(value: str) -> str:
    """A station bind address: one IP address, never all interfaces; raise ValueError."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address (the plant network's interface, or 127.0.0.1)"
        ) from None
    if address.is_unspecified:
        raise ValueError(f"{value!r} would serve every interface; give one address")
    return str(address)


def check_host(value: str) -> str:
    """A host name the tablets use for the station (or an IP literal); raise ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a host name")
    if HOST_NAME.match(value):
        return value.lower()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a host name") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, salt: bytes | None = None) -> str:
    """An scrypt hash of ``password`` in the operators file's format."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise CredentialError(f"password: at least {MIN_PASSWORD_CHARS} characters")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=_DKLEN, maxmem=1 << 27
    )
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


@dataclass(frozen=True)
class PasswordHash:
    """A parsed scrypt hash."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Parse ``scrypt$n$r$p$salt$key``; raise CredentialError."""
        parts = text.split("$") if isinstance(text, str) else []
        if len(parts) != 6 or parts[0] != "scrypt":
            raise CredentialError("not an scrypt$n$r$p$salt$hash password hash")
        try:
            n, r, p = (int(v) for v in parts[1:4])
            salt, key = _unb64(parts[4]), _unb64(parts[5])
        except ValueError:
            raise CredentialError("malformed scrypt password hash") from None
        if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 4):
            raise CredentialError(f"scrypt parameters n={n} r={r} p={p} out of range")
        if len(salt) < 16 or len(key) != _DKLEN:
            raise CredentialError("scrypt salt shorter than 16 bytes or hash not 32 bytes")
        if scrypt_memory(n, r, p) > SCRYPT_MAXMEM:
            raise CredentialError(
                f"scrypt parameters n={n} r={r} p={p} need {scrypt_memory(n, r, p) >> 20} MiB; "
                f"a password check may use {SCRYPT_MAXMEM >> 20} MiB"
            )
        return cls(n, r, p, salt, key)

    def verify(self, password: str) -> bool:
        """Whether ``password`` matches (constant-time comparison)."""
        key = hashlib.scrypt(
            password.encode(), salt=self.salt, n=self.n, r=self.r, p=self.p, dklen=_DKLEN,
            maxmem=SCRYPT_MAXMEM,
        )  # fmt: skip
        return hmac.compare_digest(key, self.key)


def scrypt_memory(n: int, r: int, p: int) -> int:
    """Bytes a scrypt check allocates, as OpenSSL counts them against ``maxmem``: 128·r·p for
    B plus 128·r·(n + 2) for V (crypto/evp/pbe_scrypt.c); over SCRYPT_MAXMEM, it fails."""
    return 128 * r * p + 128 * r * (n + 2)


def dummy_hash(operators: dict[str, PasswordHash]) -> PasswordHash:
    """What an unknown name is checked against: the operators' own costliest parameters, so a
    wrong name takes as long as a wrong password whatever cost the file's hashes chose."""
    n, r, p = max(((h.n, h.r, h.p) for h in operators.values()), key=lambda c: c[0] * c[1] * c[2],
                  default=(SCRYPT_N, SCRYPT_R, SCRYPT_P))  # fmt: skip
    return PasswordHash(n, r, p, b"\0" * 16, b"\0" * _DKLEN)


@dataclass(frozen=True)
class StationFile:
    """The review station's per-device file: its operators, the address it binds (None: not
    given) and the host names the tablets use."""

    operators: dict[str, PasswordHash]
    bind: str | None = None
    hosts: tuple[str, ...] = ()


def read_operators(path: Path) -> dict[str, PasswordHash]:
    """The operators of a per-device file; raise CredentialError naming the file and field."""
    return read_station_file(path).operators


def read_station_file(path: Path) -> StationFile:
    """The per-device station file; raise CredentialError naming the file and field."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read operators file ({exc.strerror})") from None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CredentialError(
            f"{path}: writable by group or others (anyone who can write it can add an "
            "operator); chmod 600 it"
        )
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CredentialError(f"{path}: not JSON ({exc})") from None
    operators = doc.get("operators") if isinstance(doc, dict) else None
    if not isinstance(operators, dict) or not operators:
        raise CredentialError(f'{path}: needs a non-empty "operators" object of name → hash')
    out: dict[str, PasswordHash] = {}
    for name, encoded in operators.items():
        if not OPERATOR_NAME.match(name):
            raise CredentialError(
                f"{path}: operators.{name}: not an operator name (letters, digits, '.', '_', "
                "'-', at most 32)"
            )
        try:
            out[name] = PasswordHash.parse(encoded)
        except CredentialError as exc:
            raise CredentialError(f"{path}: operators.{name}: {exc}") from None
    unknown = sorted(set(doc) - {"operators", "bind", "hosts"})
    if unknown:
        raise CredentialError(f"{path}: {unknown[0]}: unknown field (operators, bind, hosts)")
    bind = doc.get("bind")
    if bind is not None:
        try:
            if not isinstance(bind, str):
                raise ValueError(f"{bind!r} is not an IP address")
            bind = check_bind(bind)
        except ValueError as exc:
            raise CredentialError(f"{path}: bind: {exc}") from None
    hosts = doc.get("hosts", [])
    if not isinstance(hosts, list) or len(hosts) > MAX_HOSTS:
        raise CredentialError(f"{path}: hosts: a list of at most {MAX_HOSTS} host names")
    names: list[str] = []
    for i, host in enumerate(hosts):
        try:
            names.append(check_host(host))
        except ValueError as exc:
            raise CredentialError(f"{path}: hosts[{i}]: {exc}") from None
    return StationFile(out, bind, tuple(dict.fromkeys(names)))


def check_login(operators: dict[str, PasswordHash], name: str, password: str) -> bool:
    """Whether ``name`` / ``password`` is an operator's (as slow for unknown names)."""
    known = operators.get(name)
    ok = (known or dummy_hash(operators)).verify(password)
    return known is not None and ok


def token_digest(token: str) -> str:
    """How a session token is looked up (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    """One operator's login: who, the CSRF token of its forms, and when it expires."""

    operator: str
    csrf: str
    created: float
    last_seen: float


class Sessions:
    """In-memory sessions with an absolute and an idle expiry; at most ``max_sessions``."""

    def __init__(
        self,
        *,
        lifetime_s: float,
        idle_s: float,
        max_sessions: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime_s = lifetime_s
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._by_digest: dict[str, Session] = {}

    def create(self, operator: str) -> tuple[str, Session]:
        """A new session for ``operator``: (cookie token, session)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(operator, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._expire(now)
            while len(self._by_digest) >= self.max_sessions:  # the oldest login goes
                oldest = min(self._by_digest, key=lambda d: self._by_digest[d].created)
                del self._by_digest[oldest]
            self._by_digest[token_digest(token)] = session
        return token, session

    def get(self, token: str | None, *, active: bool = False) -> Session | None:
        """The live session of a cookie token, or None; ``active``: an operator's own action
        (a verdict, a page load), which restarts the idle expiry — the page's polling does not,
        so a tablet left open still logs out."""
        if not token:
            return None
        now = self._clock()
        with self._lock:
            self._expire(now)
            session = self._by_digest.get(token_digest(token))
            if session is not None and active:
                session.last_seen = now
            return session

    def drop(self, token: str | None) -> None:
        """End a session (logout)."""
        if token:
            with self._lock:
                self._by_digest.pop(token_digest(token), None)

    def _expire(self, now: float) -> None:
        dead = [
            digest
            for digest, s in self._by_digest.items()
            if now - s.created >= self.lifetime_s or now - s.last_seen >= self.idle_s
        ]
        for digest in dead:
            del self._by_digest[digest]


def client_key(address: str) -> str:
    """The rate limits' key for a client address: an IPv4 address, or an IPv6 client's /64
    (one host of a LAN holds a whole /64, so a per-address key would be one per guess)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class LoginLimiter:
    """At most ``max_failures`` login attempts per key within ``window_s`` that did not
    succeed; then refused until the window passes.

    An attempt is counted when it starts (:meth:`reserve`, atomic under the lock, before the
    password is checked), not when it has failed, so parallel attempts cannot all pass the
    check before any is counted; a successful login releases it and forgets the key's failures
    (:meth:`succeeded`). At most ``max_keys`` keys are remembered: past that, only keys whose
    attempts have all left the window are forgotten, and while none can be, a new key is
    refused (a lockout is never wiped to make room).
    """

    max_failures: int = 5
    window_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 10_000
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _wait(self, key: str, now: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if len(times) >= self.max_failures:
            return self.window_s - (now - times[0])
        return 0.0

    def retry_after(self, *keys: str) -> float:
        """Seconds until these keys may try again (0: now); reserves nothing."""
        now = self.clock()
        with self._lock:
            return max((self._wait(key, now) for key in keys), default=0.0)

    def reserve(self, *keys: str) -> float:
        """Count one attempt for every key and return 0, or return the seconds to wait (and
        count nothing) when a key is over its limit or no room is left for a new key."""
        now = self.clock()
        with self._lock:
            wait = max((self._wait(key, now) for key in keys), default=0.0)
            if wait > 0:
                return wait
            new = [key for key in keys if key not in self._failures]
            if new and len(self._failures) + len(new) > self.max_keys:
                self._evict(now)
                if len(self._failures) + len(new) > self.max_keys:
                    return self.window_s  # fail closed: every remembered key is still live
            for key in keys:
                self._failures.setdefault(key, deque(maxlen=self.max_failures)).append(now)
            return 0.0

    def failed(self, *keys: str) -> None:
        """Count one failed login for every key (an attempt that was not reserved)."""
        now = self.clock()
        with self._lock:
            for key in keys:
                if key not in self._failures and len(self._failures) >= self.max_keys:
                    self._evict(now)
                self._failures.setdefault(key, deque(maxlen=self.max_failures)).append(now)

    def succeeded(self, *keys: str) -> None:
        """Release this attempt and forget the failures of these keys."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _evict(self, now: float) -> None:
        expired = [
            key
            for key, times in self._failures.items()
            if not times or now - times[-1] >= self.window_s
        ]
        for key in expired:
            del self._failures[key]


@dataclass
class RequestLimiter:
    """A token bucket per client address: ``rate_per_s`` requests on average, ``burst`` at once."""

    rate_per_s: float = 20.0
    burst: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, key: str) -> bool:
        """Take one token for ``key``; False when its bucket is empty."""
        now = self.clock()
        with self._lock:
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True

"""A local mosquitto broker: mutual TLS, MQTT 5, an ACL per client identity.

Starts Debian's ``/usr/sbin/mosquitto`` (not as a service) on a free 127.0.0.1 port, with a CA,
a server certificate and one client certificate per identity generated for this run
(``cryptography``; files mode 644 so the ``mosquitto`` user can read them when started as
root). ``require_certificate`` + ``use_identity_as_username``: the certificate's CN is the user
name the ACL refers to. The demo's local line and the inspector and line-bridge tests use it::

    with MosquittoBroker(acl={"dev-1": ["readwrite lineguard/p1/l1/s1/dev-1/#"]}) as broker:
        creds = broker.credentials("dev-1")   # ca / cert / key paths for that identity
        broker.kill(); broker.start()          # outage on the same port
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MOSQUITTO = Path("/usr/sbin/mosquitto")


class BrokerError(RuntimeError):
    """The broker could not be set up or did not start."""


@dataclass(frozen=True)
class Credentials:
    """TLS files of one client identity (its certificate's CN is ``identity``)."""

    identity: str
    ca_file: Path
    cert_file: Path
    key_file: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o644)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class _Authority:
    """A throwaway certificate authority."""

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("lineguard-test-ca"))
            .issuer_name(_name("lineguard-test-ca"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.file = _write(directory / "ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, directory: Path, stem: str, common_name: str, server: bool
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file = _write(directory / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM))
        key_file = _write(directory / f"{stem}.key", _key_pem(key))
        return cert_file, key_file


class MosquittoBroker:
    """One mosquitto process with mutual TLS and per-identity ACLs; restartable on its port.

    Args:
        acl: identity (certificate CN) → ACL lines for it, e.g. ``"write lineguard/a/#"``.
        workdir: where certificates, config and log go (a fresh world-readable temp dir if None).
        persistent: keep sessions and queued QoS 1 messages across restarts (saved every
            second), so a subscriber with a persistent session survives :meth:`kill`.
    """

    host = "127.0.0.1"

    def __init__(
        self, acl: dict[str, list[str]], workdir: Path | None = None, *, persistent: bool = False
    ) -> None:
        if not MOSQUITTO.exists():
            raise BrokerError(f"{MOSQUITTO} not found (install the Debian package mosquitto)")
        self._own_dir = workdir is None
        self.dir = (
            Path(tempfile.mkdtemp(prefix="lineguard-broker-")) if workdir is None else workdir
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.port = free_port()
        self._ca = _Authority(self.dir)
        server_cert, server_key = self._ca.issue(self.dir, "server", "localhost", server=True)
        self._creds: dict[str, Credentials] = {}
        for identity in acl:
            self._add(identity)
        lines = []
        for identity, rules in acl.items():
            lines.append(f"user {identity}")
            lines.extend(f"topic {rule}" for rule in rules)
            lines.append("")
        self.acl_file = _write(self.dir / "acl", "\n".join(lines).encode())
        self.log_file = self.dir / "mosquitto.log"
        config = [
            "per_listener_settings false",
            "allow_anonymous false",
            "persistence false" if not persistent else "persistence true",
            f"acl_file {self.acl_file}",
            f"listener {self.port} {self.host}",
            "protocol mqtt",
            f"cafile {self._ca.file}",
            f"certfile {server_cert}",
            f"keyfile {server_key}",
            "require_certificate true",
            "use_identity_as_username true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type subscribe",
            "",
        ]
        if persistent:
            data = self.dir / "data"
            data.mkdir(exist_ok=True)
            data.chmod(0o777)  # mosquitto drops root to its own user
            config += [f"persistence_location {data}/", "autosave_interval 1", ""]
        self.config_file = _write(self.dir / "mosquitto.conf", "\n".join(config).encode())
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def _add(self, identity: str) -> Credentials:
        cert, key = self._ca.issue(self.dir, f"client-{identity}", identity, server=False)
        creds = Credentials(identity, self._ca.file, cert, key)
        self._creds[identity] = creds
        return creds

    def credentials(self, identity: str) -> Credentials:
        """TLS files for ``identity`` (issued by this broker's CA; ACL only if configured)."""
        return self._creds.get(identity) or self._add(identity)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts TCP connections."""
        if self.running:
            return
        self._log = self.log_file.open("ab")
        self._proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.config_file)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self._proc.returncode}: "
                    + self.log_file.read_text(errors="replace")[-2000:]
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout_s}s")

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the broker (an abrupt outage); a later :meth:`start` reuses the port."""
        if self._proc is not None:
            if self._proc.poll() is None:
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop the broker and remove its temp directory if this object made it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

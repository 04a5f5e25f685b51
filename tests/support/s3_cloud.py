"""A local S3 for the uploader's tests: a moto server (S3, IAM, STS) that checks credentials and
policies, the token exchange role of each device, and a TCP relay in front of it that can be
stopped (the device is offline), slowed (a transfer in flight for a while) and counted.

With :meth:`S3Cloud.enforce` moto evaluates IAM policies for every request (its
``INITIAL_NO_AUTH_ACTION_COUNT``); the device's credentials then come from STS AssumeRole of a
role whose policy is the plant's token exchange role statement for that device
(``stacks/constructs/core_device_access.py``, ``${credentials-iot:ThingName}`` written out: moto
knows no IoT credentials provider).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
from moto import settings as moto_settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
ACCOUNT = "123456789012"


class Relay:
    """A TCP relay to ``upstream``: ``stop()`` refuses connections (offline), ``rate`` caps the
    client → server bytes per second, and every connection's forwarded bytes are counted."""

    def __init__(self, upstream: tuple[str, int], *, rate: float | None = None) -> None:
        self.upstream = upstream
        self.rate = rate
        self.port = 0
        self.sent: list[int] = []  # client → server bytes, per connection, in accept order
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The endpoint URL through the relay."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        """Listen (again, on the same port once it has one)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listener and every open connection: the endpoint is unreachable."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the accepting thread and stops listening
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                index = len(self.sent)
                self.sent.append(0)
                self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, index), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, index: int | None) -> None:
        chunk = 4096 if index is not None and self.rate else 65536
        try:
            while True:
                data = src.recv(chunk)
                if not data:
                    break
                dst.sendall(data)
                if index is not None:
                    with self._lock:
                        self.sent[index] += len(data)
                    if self.rate:
                        time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


class S3Cloud:
    """moto's server with an admin, the credentials provider's user, and device roles."""

    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.upstream = (host, port)
        iam = self._client("iam", None)
        # created while moto still takes every request
        self.admin = self._user(iam, "admin", {"Effect": "Allow", "Action": "*", "Resource": "*"})
        self.provider = self._user(
            iam, "iot-credentials-provider",
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"},
        )  # fmt: skip
        self.provider_arn = f"arn:aws:iam::{ACCOUNT}:user/iot-credentials-provider"
        self._iam = iam
        self._roles = 0

    def _client(self, service: str, keys: tuple[str, str] | None) -> Any:
        kw: dict[str, Any] = {}
        if keys is None:
            kw = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        else:
            kw = {"aws_access_key_id": keys[0], "aws_secret_access_key": keys[1]}
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint, **kw)

    @staticmethod
    def _user(iam: Any, name: str, statement: dict[str, Any]) -> tuple[str, str]:
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name,
            PolicyName="p",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, service: str) -> Any:
        """A client of the admin (sees and creates everything)."""
        return self._client(service, self.admin)

    def provider_sts(self) -> Any:
        """STS as the IoT credentials provider calls it (it may assume the devices' roles)."""
        return self._client("sts", self.provider)

    def device_role(self, plant: str, thing: str, bucket: str) -> str:
        """The token exchange role as it applies to ``thing``: PutObject on its own prefix."""
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    # credentials.iot.amazonaws.com in the plant's role; moto checks trust
                    # against the caller, here the credentials provider's stand-in user
                    "Principal": {"AWS": self.provider_arn},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        self._roles += 1
        name = f"tes-{plant}-{thing}-{self._roles}"
        role = self.client("iam").create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(trust)
        )["Role"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "WriteOwnSamples",
                    "Effect": "Allow",
                    "Action": "s3:PutObject",
                    "Resource": f"arn:aws:s3:::{bucket}/samples/{plant}/{thing}/*",
                }
            ],
        }
        self.client("iam").put_role_policy(
            RoleName=name, PolicyName="token-exchange", PolicyDocument=json.dumps(policy)
        )
        return str(role["Arn"])

    @contextlib.contextmanager
    def enforced(self) -> Iterator[S3Cloud]:
        """moto checks credentials and IAM policies on every request inside the block."""
        previous = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0
        try:
            yield self
        finally:
            moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = previous

    def stop(self) -> None:
        """Stop the server."""
        self.server.stop()

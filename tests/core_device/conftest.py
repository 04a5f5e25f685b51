"""Fixtures: a running IpcServer on a short tmp socket and a factory of real SDK clients."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from core_device.host import InMemoryHost
from core_device.ipc_server import IpcServer

ClientFactory = Callable[[str], GreengrassCoreIPCClientV2]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A tmp directory with a short path: Unix socket paths are limited to ~107 bytes."""
    with tempfile.TemporaryDirectory(prefix="cd", dir="/tmp") as path:
        yield Path(path)


@pytest.fixture
def host() -> InMemoryHost:
    """An in-memory host with no components yet."""
    return InMemoryHost()


@pytest.fixture
def ipc_server(short_tmp: Path, host: InMemoryHost) -> Iterator[IpcServer]:
    """A started IpcServer backed by ``host``."""
    server = IpcServer(str(short_tmp / "ipc.sock"), host)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ipc_client(
    ipc_server: IpcServer, host: InMemoryHost, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClientFactory]:
    """connect(component) -> a GreengrassCoreIPCClientV2 connected as that (registered) component.

    The client is built the way a component builds it: from the environment variables the
    nucleus sets (AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT, SVCUID).
    """
    clients: list[GreengrassCoreIPCClientV2] = []

    def connect(component: str) -> GreengrassCoreIPCClientV2:
        token = next(t for t, c in host.tokens.items() if c == component)
        monkeypatch.setenv(
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", ipc_server.socket_path
        )
        monkeypatch.setenv("SVCUID", token)
        client = GreengrassCoreIPCClientV2()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()

"""Fixtures: a running IpcServer and real SDK clients; the repository's components, really built."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from core_device.host import InMemoryHost
from core_device.ipc_server import IpcServer
from stacks.components import DEVICE_REQUIREMENTS, PLACEHOLDER_BUCKET, component_build_module

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


@pytest.fixture(scope="session")
def built_components(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/components/<name>/<version>/`` for the Inspector, the LineBridge and the Model
    (the shipped initial model package), built by edge_component/build.py."""
    from tests.support.components import build_code_components

    root = tmp_path_factory.mktemp("core-device-build")
    out = build_code_components(root)
    build = component_build_module()
    for spec in build.load_specs(bucket=PLACEHOLDER_BUCKET):
        if spec.name == build.MODEL_COMPONENT:
            build.build_component(
                spec,
                out,
                requirements=DEVICE_REQUIREMENTS,
                wheel_cache=root / "wheel-cache",
                offline=True,
                model_package=spec.initial_package,
                log=lambda _line: None,
            )
    return out

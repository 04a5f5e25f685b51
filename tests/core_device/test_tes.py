"""The token exchange service stand-in, over real HTTP: the nucleus' path, authentication,
answer format and caching (core_device/tes.py), botocore's container provider reading it, and
the URI reaching only components started once the service is deployed."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import ContainerProvider

from core_device.deployment import SUCCESSFUL, DeploymentEngine
from core_device.layout import Layout
from core_device.tes import URL_PATH, TokenExchangeService
from tests.core_device.test_deployment import FakeNotifier, deployment, write_component

NOW = 1_800_000_000.0


class FakeProvider:
    """The AWS IoT credentials provider's answers, in its own format (CredentialRequestHandler
    .java:58-66 reads ``credentials.accessKeyId`` ... ``expiration``)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str] | Exception] = []
        self.calls = 0

    def ok(self, expires_in_s: float, key: str = "ASIAKEY") -> None:
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + expires_in_s))
        body = {"credentials": {"accessKeyId": key, "secretAccessKey": "secret",
                                "sessionToken": "token", "expiration": expiration}}  # fmt: skip
        self.answers.append((200, json.dumps(body)))

    def fetch(self) -> tuple[int, str]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@pytest.fixture
def tes(provider: FakeProvider, clock: list[float]) -> Iterator[TokenExchangeService]:
    tokens = {"token-of-a": "com.example.A"}
    with TokenExchangeService(
        provider, component_for_token=tokens.get, clock=lambda: clock[0]
    ) as service:
        yield service


def get(url: str, token: str | None = "token-of-a", method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_it_serves_the_sdk_container_format_on_the_nucleus_path(
    tes: TokenExchangeService, provider: FakeProvider
) -> None:
    assert tes.uri == f"http://localhost:{tes.port}/2016-11-01/credentialprovider/"
    provider.ok(3600)
    status, body = get(tes.uri)
    assert status == 200
    assert json.loads(body) == {
        "AccessKeyId": "ASIAKEY", "SecretAccessKey": "secret", "Token": "token",
        "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 3600)),
    }  # fmt: skip


def test_only_a_component_token_on_get_of_the_exact_path_is_answered(
    tes: TokenExchangeService, provider: FakeProvider
) -> None:
    assert get(tes.uri, token=None)[0] == 403  # no Authorization header
    assert get(tes.uri, token="someone-else")[0] == 403  # not a component's SVCUID
    assert get(tes.uri, method="POST")[0] == 405
    assert get(f"http://localhost:{tes.port}/2016-11-01/credentialprovider/x")[0] == 400
    assert provider.calls == 0  # none of them reached the cloud


def test_answers_are_cached_until_five_minutes_before_they_expire(
    tes: TokenExchangeService, provider: FakeProvider, clock: list[float]
) -> None:
    provider.ok(3600, key="FIRST")
    provider.ok(3600, key="SECOND")
    assert json.loads(get(tes.uri)[1])["AccessKeyId"] == "FIRST"
    clock[0] = NOW + 3600 - 301
    assert json.loads(get(tes.uri)[1])["AccessKeyId"] == "FIRST" and provider.calls == 1
    clock[0] = NOW + 3600 - 300  # within 300 s of expiry: fetched again
    assert json.loads(get(tes.uri)[1])["AccessKeyId"] == "SECOND" and provider.calls == 2


def test_cloud_errors_are_passed_on_and_cached_as_the_nucleus_does(
    tes: TokenExchangeService, provider: FakeProvider, clock: list[float]
) -> None:
    provider.answers.append((403, '{"message":"Access Denied"}'))
    status, body = get(tes.uri)
    assert status == 403 and body.startswith(b"TES responded with status code: 403")
    clock[0] = NOW + 119
    assert get(tes.uri)[0] == 403 and provider.calls == 1  # a 4xx is cached 120 s
    provider.answers.append((503, "busy"))
    clock[0] = NOW + 120
    assert get(tes.uri)[0] == 503
    provider.answers.append(ConnectionError("no route"))
    clock[0] = NOW + 180  # a 5xx is cached 60 s
    assert get(tes.uri) == (500, b"Failed to get connection")
    clock[0] = NOW + 479
    assert get(tes.uri)[0] == 500 and provider.calls == 3  # no connection: cached 300 s
    provider.ok(-10)  # credentials that already expired are never handed out
    clock[0] = NOW + 480
    status, body = get(tes.uri)
    assert status == 500 and b"expired" in body


def test_botocores_container_provider_reads_it(
    tes: TokenExchangeService, provider: FakeProvider
) -> None:
    provider.ok(3600)
    environ = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": tes.uri,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "token-of-a",
    }
    credentials = ContainerProvider(environ=environ).load()
    frozen = credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("ASIAKEY", "secret", "token")


def test_components_started_once_the_service_is_deployed_get_its_uri(tmp_path: Path) -> None:
    components = tmp_path / "components"
    write_component(components, "A", "1.0.0", {"run": "env > env.txt; sleep 30"})
    write_component(components, "B", "1.0.0", {"run": "env > env.txt; sleep 30"},
                    dependencies={"aws.greengrass.TokenExchangeService": ("^2.0.0", "HARD")})  # fmt: skip
    engine = DeploymentEngine(
        layout=Layout(tmp_path / "gg"), components_dir=components, notifier=FakeNotifier(),
        thing_name="thing-1", region="eu-west-1", socket_path=tmp_path / "gg" / "ipc.socket",
        device={"os": "linux", "architecture": "amd64"}, graceful_shutdown_s=0.3,
        wait_timeout_s=20, poll_s=0.02,
    )  # fmt: skip
    engine.credentials_uri = f"http://localhost:1234{URL_PATH}"
    try:
        assert engine.apply(deployment({"A": {"componentVersion": "1.0.0"}})).status == SUCCESSFUL
        # B depends on the service: the cloud brings it into the deployment, which names only B
        document = {"A": {"componentVersion": "1.0.0"}, "B": {"componentVersion": "1.0.0"}}
        assert engine.apply(deployment(document)).status == SUCCESSFUL

        def env(name: str) -> dict[str, Any]:
            path = engine.layout.work_path(name) / "env.txt"
            deadline = time.monotonic() + 10
            while not path.exists() or not path.read_text():
                assert time.monotonic() < deadline
                time.sleep(0.02)
            return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

        assert engine.versions["aws.greengrass.TokenExchangeService"] == "2.0.3"
        a, b = env("A"), env("B")
        assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in a  # started before the service ran
        assert b["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == f"http://localhost:1234{URL_PATH}"
        assert b["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == b["SVCUID"] == engine.token_for("B")
    finally:
        engine.close()

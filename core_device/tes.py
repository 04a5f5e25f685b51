"""The token exchange service as the nucleus runs it: a local HTTP credentials endpoint.

Sources (nucleus HEAD a28341c, ``src/main/java/com/aws/greengrass/``): ``tes/TokenExchangeService.java``
(TES), ``tes/HttpServerImpl.java`` (HSI), ``tes/CredentialRequestHandler.java`` (CRH),
``authorization/AuthorizationHandler.java`` (AH), ``lifecyclemanager/ShellRunner.java`` (SR); the
developer guide pages token-exchange-service-component and interact-with-aws-services.

Modelled:

- the server listens on ``localhost``, port 0 by default (a free one) (HSI:28, TES:40), serves
  only ``/2016-11-01/credentialprovider/`` (HSI:15), one request at a time (HSI:35-37: the
  default executor);
- once it runs, every component started afterwards gets
  ``AWS_CONTAINER_CREDENTIALS_FULL_URI=http://localhost:<port>/2016-11-01/credentialprovider/``
  (TES:192-196, a root-level ``setenv``) beside ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` = its
  SVCUID (SR:64-68);
- a request: not GET → 405 (CRH:170-173); another path → 400 (CRH:175-179); the
  ``Authorization`` header must be a component's SVCUID, else 403 (CRH:487-494, 188-190); the
  component must be authorized for ``aws.greengrass.TokenExchangeService`` ``getCredentials``
  — the nucleus loads a default policy for it with principal ``*`` over whatever the components
  declare (AH:141, 470-483), so every authenticated component is (else 403, CRH:185-187);
- the cloud's answer (the AWS IoT credentials provider's ``{"credentials": {accessKeyId,
  secretAccessKey, sessionToken, expiration}}``) is translated to the AWS SDKs' container
  format ``{AccessKeyId, SecretAccessKey, Token, Expiration}`` (CRH:58-66, 472-485) and cached
  until 300 s before it expires (CRH:72, 303); already expired credentials are a 500 (CRH:296-301);
  a cloud error is passed on with its status code and cached for 120 s (4xx), 60 s (5xx) or
  300 s (anything else) (CRH:72-75, 322-331, 506-517); no connection to the cloud is a 500
  cached for 300 s (CRH:335-343).

Not modelled: the role alias and device certificate (the credentials come from
:class:`StsCredentialSource`, an STS role assumed on moto's server for local runs, standing in
for the IoT credentials provider), the credential-retry configuration keys, the immediate retry
after a connection reset, and the 30 s wait for a fetch already under way (requests are served
one at a time here, as the nucleus' server does).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Protocol

from core_device.authorization import (
    ANY,
    TOKEN_EXCHANGE_SERVICE,
    AuthorizationError,
    AuthorizationPolicy,
    handler_for,
)

LOG = logging.getLogger(__name__)

URL_PATH = "/2016-11-01/credentialprovider/"  # HSI:15
ENV_VARIABLE = "AWS_CONTAINER_CREDENTIALS_FULL_URI"  # TES:36
GET_CREDENTIALS = "getCredentials"  # TES:37
# CRH:72-75
TIME_BEFORE_CACHE_EXPIRE_S = 300
CLOUD_4XX_ERROR_CACHE_S = 120
CLOUD_5XX_ERROR_CACHE_S = 60
UNKNOWN_ERROR_CACHE_S = 300


class CredentialSource(Protocol):
    """The cloud half: what the AWS IoT credentials provider answers for the role alias."""

    def fetch(self) -> tuple[int, str]:
        """One request: (HTTP status, body). Raises ConnectionError when the cloud is out of
        reach (the nucleus' ``AWSIotException`` / ``TLSAuthException``)."""


@dataclass
class _Cache:
    """CRH:103-109 — the cached answer, its status and until when it holds."""

    body: bytes | None = None
    status: int = 0
    expiry: float = 0.0


def _translate(body: str) -> tuple[bytes, float]:
    """CRH:472-485, 496-504 — the SDK's container format and the expiry (epoch seconds)."""
    credentials = json.loads(body)["credentials"]
    expiration = str(credentials["expiration"])
    out = {
        "AccessKeyId": str(credentials["accessKeyId"]),
        "SecretAccessKey": str(credentials["secretAccessKey"]),
        "Token": str(credentials["sessionToken"]),
        "Expiration": expiration,
    }
    expiry = datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp()
    return json.dumps(out).encode("utf-8"), expiry


class TokenExchangeService:
    """The nucleus' TES: a localhost credentials endpoint for the device's components.

    Args:
        source: the cloud (the IoT credentials provider for the device's role alias).
        component_for_token: the component a SVCUID belongs to, or None (the nucleus'
            AuthenticationHandler).
        access_control: a component's ``accessControl`` (the default TES policy is loaded over
            it, as the nucleus does).
        port: 0 picks a free port (the nucleus' default).
        clock: epoch seconds (expiry and error caching).
    """

    def __init__(
        self,
        source: CredentialSource,
        *,
        component_for_token: Callable[[str], str | None],
        access_control: Callable[[str], Mapping[str, Any]] = lambda _c: {},
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self._component_for_token = component_for_token
        self._access_control = access_control
        self._port = port
        self._clock = clock
        self._cache = _Cache()
        self._lock = threading.Lock()
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.cloud_requests = 0  # how often the cloud was asked (the cache saves the rest)

    # -- the server ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (once started)."""
        if self._server is None:
            raise RuntimeError("the token exchange service is not started")
        return int(self._server.server_address[1])

    @property
    def uri(self) -> str:
        """``AWS_CONTAINER_CREDENTIALS_FULL_URI`` as the nucleus sets it (TES:194)."""
        return f"http://localhost:{self.port}{URL_PATH}"

    def start(self) -> TokenExchangeService:
        """Listen on localhost and serve in a background thread."""
        if self._server is None:
            service = self

            class Handler(BaseHTTPRequestHandler):
                def do_GET(self) -> None:  # noqa: N802 - http.server's name
                    service._handle(self)

                def _other(self) -> None:
                    service._respond(self, 405, b"")  # CRH:170-173

                do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _other  # noqa: N815

                def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                    LOG.debug("tes: " + format, *args)

            self._server = HTTPServer(("localhost", self._port), Handler)
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="tes", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TokenExchangeService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- a request -------------------------------------------------------------------------

    def _respond(self, request: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        request.send_response(status)
        request.send_header("Content-Length", str(len(body)))
        if body:
            request.send_header("Content-Type", "application/json")
        request.end_headers()
        if body:
            request.wfile.write(body)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path != URL_PATH:  # CRH:175-179: the path must be exactly the URL
            self._respond(request, 400, b"")
            return
        try:
            self.authorize(request.headers.get("Authorization"))
        except AuthorizationError as exc:
            LOG.info("tes: request refused: %s", exc)
            self._respond(request, 403, b"")
            return
        status, body = self.credentials()
        self._respond(request, status, body)

    def authorize(self, token: str | None) -> str:
        """The component a request's token names, if it may get credentials (CRH:487-494)."""
        component = self._component_for_token(token) if token else None
        if component is None:  # AuthenticationHandler: "Invalid token"
            raise AuthorizationError("request denied due to invalid token")
        handler = handler_for({component: self._access_control(component)})
        # AH:141 — the default policy (principal "*") replaces whatever was parsed for TES
        handler.load_policies(
            TOKEN_EXCHANGE_SERVICE,
            [
                AuthorizationPolicy(
                    policy_id="default-tes",
                    principals=frozenset({ANY}),
                    operations=frozenset({GET_CREDENTIALS}),
                    description=f"Default policy for {GET_CREDENTIALS}",
                )
            ],
        )
        handler.is_authorized(TOKEN_EXCHANGE_SERVICE, component, GET_CREDENTIALS, None)
        return component

    def credentials(self) -> tuple[int, bytes]:
        """The cached answer, or a fresh one from the cloud (CRH:210-246, 257-362)."""
        with self._lock:
            now = self._clock()
            cache = self._cache
            if cache.body is not None and now < cache.expiry:
                return cache.status, cache.body
            self.cloud_requests += 1
            try:
                status, body = self.source.fetch()
            except ConnectionError:
                cache.body, cache.status = b"Failed to get connection", 500
                cache.expiry = now + UNKNOWN_ERROR_CACHE_S
                return cache.status, cache.body
            if status == 200:
                try:
                    translated, expires = _translate(body)
                except (ValueError, KeyError, TypeError):
                    cache.body, cache.status = f"Bad TES response: {body}".encode(), 500
                    return cache.status, cache.body
                if expires < now:
                    cache.body = (
                        f"TES responded with credentials that expired at {expires}".encode()
                    )
                    cache.status = 500
                    return cache.status, cache.body
                cache.body, cache.status = translated, 200
                cache.expiry = expires - TIME_BEFORE_CACHE_EXPIRE_S
                return cache.status, cache.body
            if 400 <= status < 500:
                ttl = CLOUD_4XX_ERROR_CACHE_S
            elif 500 <= status < 600:
                ttl = CLOUD_5XX_ERROR_CACHE_S
            else:
                ttl = UNKNOWN_ERROR_CACHE_S
            cache.body = (
                f"TES responded with status code: {status}. Caching response. {body}".encode()
            )
            cache.status = status
            cache.expiry = now + ttl
            return cache.status, cache.body

    def clear_cache(self) -> None:
        """CRH:533-547 — forget the cached answer (the nucleus does on a role alias change)."""
        with self._lock:
            self._cache = _Cache()


class StsCredentialSource:
    """The IoT credentials provider stand-in: assumes the token exchange role with STS (for local
    runs, on a moto server) and answers in the credentials provider's format.

    Args:
        sts: a boto3 STS client.
        role_arn: the token exchange role.
        thing_name: the session name (the credentials provider names sessions after the thing).
        duration_s: the role alias' credential duration (3600 s by default, as the plant's).
    """

    def __init__(self, sts: Any, role_arn: str, thing_name: str, duration_s: int = 3600) -> None:
        self.sts = sts
        self.role_arn = role_arn
        self.thing_name = thing_name
        self.duration_s = duration_s

    def fetch(self) -> tuple[int, str]:
        """AssumeRole → ``{"credentials": {...}}`` (200), or the error's status and message."""
        from botocore.exceptions import ClientError, EndpointConnectionError

        try:
            answer = self.sts.assume_role(
                RoleArn=self.role_arn,
                RoleSessionName=self.thing_name,
                DurationSeconds=self.duration_s,
            )
        except EndpointConnectionError as exc:
            raise ConnectionError(str(exc)) from None
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
            return status, json.dumps({"message": str(exc)})
        creds = answer["Credentials"]
        expiration = creds["Expiration"]
        if isinstance(expiration, datetime):
            expiration = expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, json.dumps(
            {
                "credentials": {
                    "accessKeyId": creds["AccessKeyId"],
                    "secretAccessKey": creds["SecretAccessKey"],
                    "sessionToken": creds["SessionToken"],
                    "expiration": expiration,
                }
            }
        )

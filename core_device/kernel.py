"""One core device on this machine: the IPC server, the deployment engine and the MQTT link wired.

:class:`CoreDevice` is what the nucleus is to its components: it lays the built components out
under a root (``packages/``, ``work/``, ``logs/``), applies deployment documents, runs the
lifecycles, serves Greengrass IPC on a Unix socket (the unmodified device SDK connects to it)
and forwards PublishToIoTCore through its spooler to a broker over mutual TLS. It is the
:class:`~core_device.host.Host` the IPC server asks about tokens, accessControl, states and
deferrals, and the :class:`~core_device.deployment.Notifier` the deployment engine asks about
component updates and configuration validity.

ShadowManager is a built-in here: its local shadow store is :attr:`CoreDevice.shadows`, and
:meth:`CoreDevice.sync_shadow` is what its ``cloudToDevice`` sync does when the cloud shadow
changes (ShadowManager ``sync/SyncHandler.java``: the local copy is overwritten).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core_device.config_store import ConfigStore
from core_device.deployment import DeploymentEngine, DeploymentResult
from core_device.host import IotLink
from core_device.ipc_server import IpcServer
from core_device.layout import Layout
from core_device.lifecycle import State
from core_device.shadows import ShadowStore
from core_device.tes import CredentialSource, TokenExchangeService

LOG = logging.getLogger(__name__)
SOCKET_NAME = "ipc.socket"  # the nucleus' socket is <root>/ipc.socket (IPCEventStreamService.java)


class CoreDevice:
    """A local core device: deploy built components and run them as the nucleus does.

    Args:
        root: the nucleus root (``~root``); keep it short, a Unix socket path is ≤ 107 bytes.
        thing_name: the device's thing name (``{iot:thingName}``, ``AWS_IOT_THING_NAME``).
        components_dir: the built components, ``<name>/<version>/{recipe.yaml,*.zip}``.
        iot: the nucleus' MQTT side (spooler + link to a broker); None: no cloud.
        region: ``AWS_REGION`` for the components.
        root_ca_path: ``GG_ROOT_CA_PATH``.
        credentials: the cloud half of the token exchange service (the IoT credentials
            provider, e.g. :class:`core_device.tes.StsCredentialSource`); with it the device
            runs a token exchange service, and components started once
            ``aws.greengrass.TokenExchangeService`` is deployed get its URI.
    """

    def __init__(
        self,
        root: Path,
        thing_name: str,
        *,
        components_dir: Path,
        iot: IotLink | None = None,
        region: str = "eu-west-1",
        root_ca_path: Path | None = None,
        wait_timeout_s: float = 300.0,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.root = Path(root)
        self.thing_name = thing_name
        self.config = ConfigStore()
        self.shadows = ShadowStore()
        self.iot = iot
        self.layout = Layout(self.root).create()
        socket_path = self.root / SOCKET_NAME
        if len(str(socket_path)) > 107:
            raise ValueError(f"{socket_path}: a Unix socket path must be at most 107 bytes")
        self.ipc = IpcServer(str(socket_path), self)
        self.engine = DeploymentEngine(
            layout=self.layout,
            components_dir=Path(components_dir),
            notifier=self.ipc,
            thing_name=thing_name,
            region=region,
            socket_path=socket_path,
            on_configuration=self._on_configuration,
            root_ca_path=root_ca_path,
            wait_timeout_s=wait_timeout_s,
        )
        self.tes: TokenExchangeService | None = None
        if credentials is not None:
            self.tes = TokenExchangeService(
                credentials,
                component_for_token=self.component_for_token,
                access_control=self.access_control,
            )
        self.deployments: list[DeploymentResult] = []
        self._lock = threading.Lock()
        self._started = False

    # -- Host (what the IPC server asks) ----------------------------------------------------

    def component_for_token(self, token: str) -> str | None:
        """The component an SVCUID belongs to (the deployment engine makes them)."""
        return self.engine.tokens.get(token)

    def access_control(self, component: str) -> Mapping[str, Any]:
        """The component's ``accessControl`` as resolved by its deployment (interpolated only
        with the nucleus' ``interpolateComponentConfiguration``: KernelConfigResolver.java)."""
        try:
            value = self.config.get(component, ["accessControl"])
        except KeyError:
            return {}
        return value if isinstance(value, Mapping) else {}

    def report_state(self, component: str, state: str) -> None:
        """UpdateState from a component."""
        running = self.engine.component(component)
        if running is None:
            LOG.warning("UpdateState %s from %s, which is not running", state, component)
            return
        running.report_state(state)

    def defer_update(
        self, component: str, deployment_id: str, recheck_after_ms: int, message: str | None
    ) -> None:
        """DeferComponentUpdate from a component."""
        LOG.info("%s: update %s deferred %d ms (%s)", component, deployment_id,
                 recheck_after_ms, message)  # fmt: skip
        self.engine.on_defer(component, deployment_id, recheck_after_ms)

    def _on_configuration(self, component: str, configuration: dict[str, Any]) -> None:
        self.config.replace(component, configuration)

    # -- the device --------------------------------------------------------------------------

    def start(self) -> CoreDevice:
        """Serve IPC (and start the MQTT link if it has one)."""
        if not self._started:
            self.ipc.start()
            if self.tes is not None:
                self.engine.credentials_uri = self.tes.start().uri
            start = getattr(self.iot, "start", None)
            if callable(start):
                start()
            self._started = True
        return self

    def deploy(self, document: Mapping[str, Any]) -> DeploymentResult:
        """Apply a deployment document (CreateDeployment's ``components`` map and policies)."""
        with self._lock:
            result = self.engine.apply(document)
            self.deployments.append(result)
        LOG.info("deployment %s: %s %s", result.deployment_id, result.status, result.message)
        return result

    def sync_shadow(self, shadow: str, document: Mapping[str, Any]) -> None:
        """ShadowManager's cloudToDevice sync: the local copy takes the cloud's state, and the
        update is announced on local pub/sub ``$aws/things/<thing>/shadow/name/<shadow>/update/
        accepted`` (ShadowManager ``ipc/UpdateThingShadowRequestHandler.java`` publishes through
        ``ipc/PubSubClientWrapper.java``; the sync writes through that handler,
        ``sync/model/BaseSyncRequest.java``)."""
        import json

        state = document.get("state", {})
        updated = self.shadows.update(
            self.thing_name, shadow, state if isinstance(state, Mapping) else {}
        )
        topic = f"$aws/things/{self.thing_name}/shadow/name/{shadow}/update/accepted"
        self.ipc.publish_local("aws.greengrass.ShadowManager", topic, json.dumps(updated).encode())

    def state(self, component: str) -> State | None:
        """A component's lifecycle state."""
        return self.engine.state(component)

    def wait_for(
        self, component: str, states: set[State], timeout_s: float, *, poll_s: float = 0.05
    ) -> State | None:
        """Wait until ``component`` is in one of ``states``; the state it is in then."""
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            now = self.state(component)
            if now in states or time.monotonic() >= deadline:
                return now
            time.sleep(poll_s)

    def log(self, component: str) -> str:
        """The component's log (``logs/<component>.log``), or '' if none yet."""
        path = self.layout.log_path(component)
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop every component (shutdown, SIGTERM, SIGKILL after the grace), then IPC, MQTT."""
        try:
            self.engine.close()
        finally:
            if self._started:
                self.ipc.stop()
                if self.tes is not None:
                    self.tes.stop()
                stop = getattr(self.iot, "stop", None)
                if callable(stop):
                    stop()
                self._started = False

    def __enter__(self) -> CoreDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

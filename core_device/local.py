"""A plant's cloud and its core devices on this machine: what ``make device`` and the demo run.

:class:`LocalCloud` is mosquitto with client certificates standing for IoT Core (each device's
ACL follows its IoT policy), the plant's AckRule (:mod:`core_device.cloud`) and an observer of
what reaches the cloud. :func:`start_device` makes a :class:`~core_device.kernel.CoreDevice`
with its own certificate and spooler, gives it its identity shadow the way ShadowManager would
after its first sync, and deploys a ring's release with :func:`stacks.deployment_spec.deployment_spec`
— the same request the plant stack and the rollout send to Greengrass.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core_device.cloud import BrokerLogin, ResultsAcknowledger, identity_shadow_document
from core_device.iot import MqttLink, Spooler
from core_device.kernel import CoreDevice
from core_device.tes import CredentialSource

CLOUD_RULES = "lineguard-cloud-rules"
OBSERVER = "lineguard-cloud-observer"
IDENTITY_SHADOW = "lineguard-identity"


def device_acl(plant: str, thing: str) -> list[str]:
    """The broker ACL of a core device: its IoT policy's topics (``stacks/policies.py``).

    Publish ``lineguard/<plant>/*/*/<thing>/*`` (results, health); subscribe/receive
    ``lineguard/<plant>/<thing>/ack``. IoT policy ``*`` in a topic spans levels; ``+`` here is
    one level, which is what the inspector uses.
    """
    return [
        f"write lineguard/{plant}/+/+/{thing}/results",
        f"write lineguard/{plant}/+/+/{thing}/health",
        f"read lineguard/{plant}/{thing}/ack",
    ]


@dataclass
class Upstream:
    """What reached the cloud: result, label and health messages, bytes by kind."""

    results: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)  # operators' verdicts
    publishes: int = 0
    bytes_by_kind: dict[str, int] = field(default_factory=dict)

    def seqs(self, device: str) -> set[int]:
        """Distinct ``seq`` values of ``device``'s results (the cloud drops resent copies)."""
        return {int(r["seq"]) for r in self.results if r.get("device") == device}


class LocalCloud:
    """mosquitto for IoT Core, the plant's AckRule and an observer of the plant's topics."""

    def __init__(self, plant: str, things: list[str], workdir: Path) -> None:
        from demo.broker import MosquittoBroker

        self.plant = plant
        acl = {thing: device_acl(plant, thing) for thing in things}
        # the rules engine reads every device's results and publishes acknowledgements
        acl[CLOUD_RULES] = [f"read lineguard/{plant}/#", f"write lineguard/{plant}/+/ack"]
        acl[OBSERVER] = [f"read lineguard/{plant}/#"]
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)  # mosquitto drops root and must read the certificates
        self.broker = MosquittoBroker(acl, workdir / "broker")
        self.acknowledger: ResultsAcknowledger | None = None
        self.upstream = Upstream()
        self._lock = threading.Lock()
        self._observer: Any = None

    def login(self, identity: str) -> BrokerLogin:
        """Where the broker is and ``identity``'s TLS files."""
        creds = self.broker.credentials(identity)
        return BrokerLogin(
            self.broker.host,
            self.broker.port,
            identity,
            creds.ca_file,
            creds.cert_file,
            creds.key_file,
        )

    def start(self) -> LocalCloud:
        """Start the broker, the AckRule and the observer."""
        self.broker.start()
        self.acknowledger = ResultsAcknowledger(self.plant, self.login(CLOUD_RULES)).start()
        self._observer = _subscribe(self.login(OBSERVER), f"lineguard/{self.plant}/#", self._seen)
        return self

    def _seen(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        with self._lock:
            up = self.upstream
            up.publishes += 1
            up.bytes_by_kind[kind] = up.bytes_by_kind.get(kind, 0) + len(payload)
            if kind == "results" and isinstance(doc, dict):
                up.results.extend(doc.get("results", []))
                up.labels.extend(doc.get("labels", []))
            elif kind == "health" and isinstance(doc, dict):
                up.health.append(doc)

    def link(self, thing: str, spooler: Spooler | None = None) -> MqttLink:
        """The nucleus' MQTT link of ``thing``: its certificate, client id = thing name."""
        login = self.login(thing)
        return MqttLink(
            host=login.host,
            port=login.port,
            client_id=thing,
            ca_file=login.ca_file,
            cert_file=login.cert_file,
            key_file=login.key_file,
            spooler=spooler or Spooler(),
        )

    def stop(self) -> None:
        """Stop the observer, the AckRule and the broker."""
        if self._observer is not None:
            self._observer.disconnect()
            self._observer.loop_stop()
            self._observer = None
        if self.acknowledger is not None:
            self.acknowledger.stop()
        self.broker.stop()

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _subscribe(login: BrokerLogin, topic: str, on_message: Any) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=login.client_id,
        protocol=paho.MQTTv5,
    )
    client.tls_set(
        ca_certs=str(login.ca_file), certfile=str(login.cert_file), keyfile=str(login.key_file)
    )
    ready = threading.Event()
    client.on_connect = lambda c, *a: c.subscribe(topic, 1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, m: on_message(m.topic, bytes(m.payload))
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.connect(login.host, login.port)
    client.loop_start()
    if not ready.wait(10):
        client.loop_stop()
        raise TimeoutError(f"{login.client_id}: could not subscribe to {topic}")
    return client


@dataclass(frozen=True)
class Identity:
    """A device's identity as provisioning sets it (docs/identity.md)."""

    plant: str
    line: str
    station: str
    cameras: int = 1


def start_device(
    root: Path,
    thing: str,
    identity: Identity,
    *,
    components_dir: Path,
    cloud: LocalCloud | None,
    spooler: Spooler | None = None,
    credentials: CredentialSource | None = None,
) -> CoreDevice:
    """A started core device with its identity shadow synced (nothing deployed yet);
    ``credentials``: the cloud half of its token exchange service (``core_device.tes``)."""
    device = CoreDevice(
        root,
        thing,
        components_dir=components_dir,
        iot=None if cloud is None else cloud.link(thing, spooler),
        credentials=credentials,
    ).start()
    device.sync_shadow(
        IDENTITY_SHADOW,
        identity_shadow_document(
            thing,
            plant=identity.plant,
            line=identity.line,
            station=identity.station,
            cameras=identity.cameras,
        ),
    )
    return device


def ring_deployment(
    plant_file: Path,
    release_file: Path,
    ring: str,
    *,
    configuration: Mapping[str, Mapping[str, Any]] | None = None,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The CreateDeployment request of ``ring`` (``stacks.deployment_spec``), with local
    configuration merged in (where frames come from, the PLC's address) and versions replaced.

    A ring's release never carries a station or a PLC per device; the local settings here are
    the ones a developer gives one device (``make device``), merged as a deployment would.
    """
    from stacks.config import load_plant, load_release
    from stacks.deployment_spec import deployment_spec

    plant = load_plant(plant_file)
    request = deployment_spec(plant, ring, load_release(release_file, plant))
    components = request["components"]
    for name, version in (versions or {}).items():
        components.setdefault(name, {})["componentVersion"] = version
    for name, extra in (configuration or {}).items():
        entry = components.setdefault(name, {})
        update = dict(entry.get("configurationUpdate") or {})
        merged = json.loads(update.get("merge") or "{}")
        merged.update(extra)
        update["merge"] = json.dumps(merged)
        entry["configurationUpdate"] = update
    return request

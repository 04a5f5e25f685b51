"""The cloud side a local core device talks to: the plant's IoT rules that answer a device.

A local core device (``core_device``) forwards PublishToIoTCore to mosquitto, which stands for
IoT Core's message broker. What the plant stack deploys behind IoT Core is modelled here, each
from the construct that deploys it:

- :class:`ResultsAcknowledger` — the ``AckRule`` of ``stacks/constructs/results_pipeline.py``:
  ``SELECT v, device, first_seq, last_seq, 1 AS labels FROM 'lineguard/<plant>/+/+/+/results'
  WHERE v = 1 AND device = topic(5)``, republished (QoS 1) to
  ``lineguard/<plant>/${topic(5)}/ack``. IoT SQL semantics used: a field absent from the
  message is absent from the output (AWS IoT SQL reference, iot-sql-select: "If a field doesn't
  exist, it isn't included"), while a literal with an alias is in every output; a ``WHERE``
  comparing a missing field is false; a payload that is not JSON gives no row for a SQL that
  reads fields (iot-sql-from / binary payloads).
- :func:`identity_shadow_document` — what the identity-sync function writes and ShadowManager
  syncs to the device (``stacks/constructs/identity/runtime/identity_sync.py``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


def identity_shadow_document(
    thing: str, *, plant: str, line: str, station: str, cameras: int, version: int = 1
) -> dict[str, Any]:
    """The ``lineguard-identity`` shadow document a device's ShadowManager holds after a sync."""
    desired = {
        "v": 1,
        "thing": thing,
        "plant": plant,
        "line": line,
        "station": station,
        "cameras": cameras,
    }
    return {"state": {"desired": desired}, "version": version, "timestamp": int(time.time())}


def ack_for(plant: str, topic: str, payload: bytes) -> tuple[str, bytes] | None:
    """The AckRule's output for one message: (topic, payload) to republish, or None."""
    levels = topic.split("/")
    # FROM 'lineguard/<plant>/+/+/+/results': six levels, MQTT topic-filter matching
    if len(levels) != 6 or levels[0] != "lineguard" or levels[1] != plant:
        return None
    if levels[5] != "results":
        return None
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    # WHERE v = 1 AND device = topic(5)  (topic(n) counts levels from 1)
    if doc.get("v") != 1 or doc.get("device") != levels[4]:
        return None
    selected = {k: doc[k] for k in ("v", "device", "first_seq", "last_seq") if k in doc}
    selected["labels"] = 1  # 1 AS labels: a literal, present in every acknowledgement
    return f"lineguard/{plant}/{levels[4]}/ack", json.dumps(selected).encode()


@dataclass(frozen=True)
class BrokerLogin:
    """Where the broker is and the TLS files of the identity that logs in."""

    host: str
    port: int
    client_id: str
    ca_file: Path
    cert_file: Path
    key_file: Path


class ResultsAcknowledger:
    """Runs the plant's AckRule against a broker: every stored batch is acknowledged."""

    def __init__(self, plant: str, login: BrokerLogin) -> None:
        self.plant = plant
        self.login = login
        self.acknowledged = 0
        self.ignored = 0
        self._client: Any = None
        self._ready = threading.Event()

    def start(self, timeout_s: float = 10.0) -> ResultsAcknowledger:
        """Connect, subscribe to the plant's results, and acknowledge from then on."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.login.client_id,
            protocol=paho.MQTTv5,
        )
        client.tls_set(
            ca_certs=str(self.login.ca_file),
            certfile=str(self.login.cert_file),
            keyfile=str(self.login.key_file),
        )
        client.on_connect = lambda c, *a: c.subscribe(f"lineguard/{self.plant}/+/+/+/results", 1)
        client.on_subscribe = lambda *a: self._ready.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.connect(self.login.host, self.login.port)
        client.loop_start()
        self._client = client
        if not self._ready.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"results acknowledger: no subscription on {self.login.host}")
        return self

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            out = ack_for(self.plant, message.topic, bytes(message.payload))
            if out is None:
                self.ignored += 1
                return
            client.publish(out[0], out[1], qos=1)
            self.acknowledged += 1
        except Exception:  # a callback must never take the network thread down
            LOG.exception("results acknowledger: message on %s", message.topic)

    def stop(self) -> None:
        """Disconnect."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

"""The ``mqtt`` transport: paho-mqtt 2.x, MQTT 5, mutual TLS, automatic reconnects.

For running outside Greengrass (any MQTT broker that authenticates devices by client
certificate, e.g. mosquitto with ``use_identity_as_username``) and for tests. Every publish is
QoS 1 and waits for the broker's PUBACK; a PUBACK with a failure reason code (MQTT 5, e.g.
135 "Not authorized" for a topic outside the device's ACL) raises :class:`TransportError` and is
counted in :attr:`MqttTransport.refused` — never swallowed.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from inspector.transports.base import (
    ConfigCallback,
    MessageCallback,
    Transport,
    TransportError,
    call_safely,
)

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttSettings:
    """Where and as whom to connect (client id = the device / thing name)."""

    host: str
    port: int
    client_id: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    keepalive_s: int = 30
    ack_timeout_s: float = 10.0
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 5.0
    config_topic: str | None = None


class MqttTransport(Transport):
    """Publishes over one MQTT 5 connection with mutual TLS; reconnects in the background."""

    name = "mqtt"

    def __init__(self, settings: MqttSettings) -> None:
        for label, path in (
            ("--ca", settings.ca_file),
            ("--cert", settings.cert_file),
            ("--key", settings.key_file),
        ):
            if not Path(path).is_file():
                raise TransportError(f"mqtt transport: {label} file not found: {path}")
        self.settings = settings
        self.refused = 0
        self.last_error: str | None = None
        self._connected = threading.Event()
        self._acks: dict[int, Any] = {}
        self._abandoned: set[int] = set()
        self._cond = threading.Condition()
        self._config_callbacks: list[ConfigCallback] = []
        self._upstream: dict[str, MessageCallback] = {}
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        try:
            client.tls_set(
                ca_certs=str(settings.ca_file),
                certfile=str(settings.cert_file),
                keyfile=str(settings.key_file),
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError) as exc:
            raise TransportError(f"mqtt transport: bad TLS files: {exc}") from None
        client.reconnect_delay_set(
            min_delay=max(1, int(settings.reconnect_min_s)), max_delay=int(settings.reconnect_max_s)
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        client.loop_start()

    # -- paho callbacks (loop thread; never raise) -----------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        try:
            if reason.is_failure:
                self.last_error = f"connect refused: {reason}"
                LOG.warning("mqtt: %s", self.last_error)
                return
            self._connected.set()
            if self.settings.config_topic:
                client.subscribe(self.settings.config_topic, qos=1)
            for topic in list(self._upstream):  # a new session has no subscriptions
                client.subscribe(topic, qos=1)
            LOG.info("mqtt: connected to %s:%s", self.settings.host, self.settings.port)
        except Exception:
            LOG.exception("mqtt: on_connect failed")

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()
        with self._cond:
            self._cond.notify_all()
        LOG.info("mqtt: disconnected (%s)", reason)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            if mid in self._abandoned:
                self._abandoned.discard(mid)
                return
            self._acks[mid] = reason
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        upstream = self._upstream.get(message.topic)
        if upstream is not None:
            call_safely(upstream, bytes(message.payload), what=f"mqtt {message.topic}")
            return
        try:
            doc = json.loads(message.payload)
            if not isinstance(doc, dict):
                raise ValueError("configuration must be a JSON object")
        except ValueError as exc:
            doc = {"__error__": f"{message.topic}: {exc}"}
        for callback in list(self._config_callbacks):
            call_safely(callback, doc, what="mqtt config")

    # -- interface ---------------------------------------------------------------------------

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected (or the timeout); True if connected."""
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        """Whether the connection is up now."""
        return self._connected.is_set()

    def _publish(self, topic: str, payload: bytes) -> None:
        if not self._connected.is_set():
            raise TransportError(f"mqtt transport: {topic}: not connected")
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(
                f"mqtt transport: {topic}: publish failed ({paho.error_string(info.rc)})"
            )
        deadline = self.settings.ack_timeout_s
        with self._cond:
            got = self._cond.wait_for(
                lambda: info.mid in self._acks or not self._connected.is_set(), deadline
            )
            reason = self._acks.pop(info.mid, None)
            if reason is None:
                self._abandoned.add(info.mid)
        if reason is None:
            why = "timed out waiting for PUBACK" if not got else "connection lost before PUBACK"
            raise TransportError(f"mqtt transport: {topic}: {why}")
        if getattr(reason, "is_failure", False):
            self.refused += 1
            self.last_error = (
                f"broker refused publish to {topic}: {reason} (MQTT 5 reason code {reason.value})"
            )
            LOG.error("mqtt: %s", self.last_error)
            raise TransportError(f"mqtt transport: {self.last_error}")

    def publish_upstream(self, topic: str, payload: bytes) -> None:
        """QoS 1 publish; returns after a successful PUBACK."""
        self._publish(topic, payload)

    def publish_local(self, topic: str, payload: bytes) -> None:
        """QoS 1 publish on the same broker (the line bridge subscribes there)."""
        self._publish(topic, payload)

    def subscribe_upstream(self, topic: str, callback: MessageCallback) -> None:
        """Subscribe (QoS 1) to an exact topic, again after every reconnect."""
        self._upstream[topic] = callback
        if self._connected.is_set():
            self._client.subscribe(topic, qos=1)

    def on_config(self, callback: ConfigCallback) -> None:
        """Deliver JSON objects published on ``settings.config_topic``."""
        self._config_callbacks.append(callback)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

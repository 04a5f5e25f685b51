"""Where the inspector's local messages come from: Greengrass local pub/sub (IPC) or MQTT.

Both hand every message to one handler ``(topic, payload)`` and publish the bridge's health.
Their callbacks never raise: an exception in a stream callback would close the subscription.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from line_bridge.config import TransportConfig
from line_bridge.errors import BridgeError
from line_bridge.messages import heartbeat_topic, reject_topic, verdict_topic

log = logging.getLogger(__name__)

Handler = Callable[[str, Any], None]


def topics_for(stations: Sequence[str], verdicts: str = "negative") -> list[str]:
    """Every local topic the bridge subscribes to: reject (or verdict) and heartbeat per station."""
    first = verdict_topic if verdicts == "positive" else reject_topic
    return [t for s in stations for t in (first(s), heartbeat_topic(s))]


class Subscriber(Protocol):
    """What the service needs from a message source."""

    def start(self) -> None:
        """Subscribe; messages flow to the handler from then on."""

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish a local message (the bridge's health)."""

    def stop(self) -> None:
        """Unsubscribe and close; never raises."""


class IpcSubscriber:
    """Greengrass local pub/sub through an IPC client it receives (``GreengrassCoreIPCClientV2``).

    Only the entry point constructs the real client, so tests pass a fake one.
    """

    def __init__(
        self, client: Any, stations: Sequence[str], handler: Handler, verdicts: str = "negative"
    ) -> None:
        self.client = client
        self.topics = topics_for(stations, verdicts)
        self.handler = handler
        self._operations: list[Any] = []

    def start(self) -> None:
        """Subscribe to every station's reject and heartbeat topics."""
        for topic in self.topics:
            try:
                _, operation = self.client.subscribe_to_topic(
                    topic=topic,
                    on_stream_event=self._on_event(topic),
                    on_stream_error=self._on_error(topic),
                    on_stream_closed=self._on_closed(topic),
                )
            except Exception as exc:
                raise BridgeError(f"IPC subscribe to {topic} failed: {exc}") from exc
            self._operations.append(operation)
        log.info("subscribed over Greengrass IPC to %s", ", ".join(self.topics))

    def _on_event(self, topic: str) -> Callable[[Any], None]:
        def on_event(event: Any) -> None:
            try:
                if getattr(event, "binary_message", None) is not None:
                    payload: Any = event.binary_message.message
                elif getattr(event, "json_message", None) is not None:
                    payload = event.json_message.message
                else:
                    log.warning("IPC event on %s carries no message; ignored", topic)
                    return
                self.handler(topic, payload)
            except Exception:  # noqa: BLE001 - raising here would close the IPC stream
                log.exception("error handling an IPC message on %s", topic)

        return on_event

    def _on_error(self, topic: str) -> Callable[[Exception], bool]:
        def on_error(error: Exception) -> bool:
            log.error("IPC stream error on %s: %s", topic, error)
            return False  # keep the stream open

        return on_error

    def _on_closed(self, topic: str) -> Callable[[], None]:
        def on_closed() -> None:
            log.warning("IPC stream on %s closed", topic)

        return on_closed

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish a binary local message without waiting for the nucleus."""
        from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage

        message = PublishMessage(binary_message=BinaryMessage(message=payload))
        self.client.publish_to_topic_async(topic=topic, publish_message=message)

    def stop(self) -> None:
        """Close the subscription streams."""
        for operation in self._operations:
            try:
                operation.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing an IPC stream: %s", exc)
        self._operations.clear()


def read_ipc_configuration(client: Any) -> Any:
    """The component's whole configuration, read through IPC ``GetConfiguration``."""
    try:
        response = client.get_configuration(key_path=[])
    except Exception as exc:
        raise BridgeError(f"IPC GetConfiguration failed: {exc}") from exc
    return response.value


class ConfigWatcher:
    """Calls ``on_change`` whenever Greengrass reports a change of this component's configuration."""

    def __init__(self, client: Any, on_change: Callable[[], object]) -> None:
        self.client = client
        self.on_change = on_change
        self._operation: Any = None

    def start(self) -> None:
        """Subscribe to configuration updates (IPC ``SubscribeToConfigurationUpdate``)."""

        def on_event(event: Any) -> None:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001 - raising here would close the IPC stream
                log.exception("error handling a configuration update")

        def on_error(error: Exception) -> bool:
            log.error("IPC configuration update stream error: %s", error)
            return False

        try:
            _, self._operation = self.client.subscribe_to_configuration_update(
                key_path=[],
                on_stream_event=on_event,
                on_stream_error=on_error,
                on_stream_closed=lambda: log.warning("configuration update stream closed"),
            )
        except Exception as exc:
            raise BridgeError(f"IPC SubscribeToConfigurationUpdate failed: {exc}") from exc

    def stop(self) -> None:
        """Close the stream; never raises."""
        operation, self._operation = self._operation, None
        if operation is not None:
            try:
                operation.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing the configuration stream: %s", exc)


class MqttSubscriber:
    """MQTT 5 client (paho 2.x), optional mutual TLS; re-subscribes after every reconnect."""

    def __init__(
        self,
        config: TransportConfig,
        stations: Sequence[str],
        handler: Handler,
        connect_timeout_s: float = 10.0,
        verdicts: str = "negative",
    ) -> None:
        self.config = config
        self.topics = topics_for(stations, verdicts)
        self.handler = handler
        self.connect_timeout_s = connect_timeout_s
        self.subscribed = threading.Event()
        self._client: Any = None

    def start(self) -> None:
        """Connect in the background and wait (bounded) for the first subscription ack.

        A broker that is not up yet is not an error: paho keeps retrying, and meanwhile the
        bridge sees no heartbeat and keeps the line unhealthy.
        """
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=mqtt.MQTTv5,
        )
        if self.config.ca_file or self.config.cert_file:
            try:
                client.tls_set(
                    ca_certs=self.config.ca_file,
                    certfile=self.config.cert_file,
                    keyfile=self.config.key_file,
                )
            except (OSError, ValueError) as exc:
                raise BridgeError(f"MQTT TLS setup failed: {exc}") from exc
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client = client
        client.connect_async(self.config.host, self.config.port, keepalive=15)
        client.loop_start()
        if not self.subscribed.wait(self.connect_timeout_s):
            log.warning(
                "MQTT broker %s:%d not reachable yet; still trying",
                self.config.host,
                self.config.port,
            )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        try:
            if getattr(reason, "is_failure", False):
                log.error("MQTT connect refused: %s", reason)
                return
            from paho.mqtt.subscribeoptions import SubscribeOptions

            client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])
        except Exception:  # noqa: BLE001 - paho callbacks must not raise
            log.exception("MQTT subscribe failed")

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
        failed = [str(c) for c in codes if getattr(c, "is_failure", False)]
        if failed:
            log.error("MQTT subscription refused: %s", ", ".join(failed))
            return
        log.info("subscribed over MQTT to %s", ", ".join(self.topics))
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self.handler(message.topic, message.payload)
        except Exception:  # noqa: BLE001
            log.exception("error handling an MQTT message on %s", message.topic)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.subscribed.clear()
        log.warning("MQTT disconnected (%s); reconnecting", reason)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 0 (health is periodic; a lost one is replaced by the next)."""
        if self._client is not None:
            self._client.publish(topic, payload, qos=0)

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
                client.loop_stop()
            except Exception as exc:  # noqa: BLE001
                log.debug("stopping MQTT client: %s", exc)


class ConfigValidator:
    """Answers Greengrass' validation of a deployment's proposed configuration.

    The nucleus sends the whole proposed configuration to components that subscribed with
    ``SubscribeToValidateConfigurationUpdates`` and waits for a ``SendConfigurationValidityReport``
    carrying the deployment id; a REJECTED report fails the deployment before the configuration
    is applied (nucleus ``deployment/DynamicComponentConfigurationValidator.java``,
    ``builtin/services/configstore/ConfigStoreIPCEventStreamAgent.java``).
    """

    def __init__(self, client: Any, check: Callable[[Any], object]) -> None:
        self.client = client
        self.check = check
        self._operation: Any = None

    def start(self) -> None:
        """Subscribe to configuration validation requests."""
        try:
            _, self._operation = self.client.subscribe_to_validate_configuration_updates(
                on_stream_event=self._on_event,
                on_stream_error=self._on_error,
                on_stream_closed=lambda: log.warning("configuration validation stream closed"),
            )
        except Exception as exc:
            raise BridgeError(f"IPC SubscribeToValidateConfigurationUpdates failed: {exc}") from exc

    def _on_event(self, event: Any) -> None:
        try:
            update = event.validate_configuration_update_event
            message: str | None = None
            try:
                self.check(update.configuration)
            except BridgeError as exc:
                status, message = "REJECTED", str(exc)
                log.error("deployment %s: configuration rejected: %s", update.deployment_id, exc)
            else:
                status = "ACCEPTED"
            from awsiot.greengrasscoreipc.model import ConfigurationValidityReport

            report = ConfigurationValidityReport(
                status=status, deployment_id=update.deployment_id, message=message
            )
            self.client.send_configuration_validity_report_async(
                configuration_validity_report=report
            )
        except Exception:  # noqa: BLE001 - raising here would close the IPC stream
            log.exception("error validating a configuration update")

    def _on_error(self, error: Exception) -> bool:
        log.error("IPC configuration validation stream error: %s", error)
        return False

    def stop(self) -> None:
        """Close the stream; never raises."""
        operation, self._operation = self._operation, None
        if operation is not None:
            try:
                operation.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing the validation stream: %s", exc)


class TopicWatcher:
    """Calls ``on_change`` on any local message on the given topics (the identity shadow's)."""

    def __init__(self, client: Any, topics: Sequence[str], on_change: Callable[[], object]) -> None:
        self.client = client
        self.topics = list(topics)
        self.on_change = on_change
        self._operations: list[Any] = []

    def start(self) -> bool:
        """Subscribe; False (logged) if refused: the caller then relies on polling."""
        for topic in self.topics:

            def on_event(event: Any) -> None:
                try:
                    self.on_change()
                except Exception:  # noqa: BLE001 - raising here would close the IPC stream
                    log.exception("error handling a shadow change")

            try:
                _, operation = self.client.subscribe_to_topic(
                    topic=topic,
                    on_stream_event=on_event,
                    on_stream_error=lambda error: False,
                    on_stream_closed=lambda: None,
                )
            except Exception as exc:  # noqa: BLE001 - polling still finds the change
                log.warning("cannot watch %s (%s); polling the identity instead", topic, exc)
                return False
            self._operations.append(operation)
        return True

    def stop(self) -> None:
        """Close the streams; never raises."""
        for operation in self._operations:
            try:
                operation.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing a shadow topic stream: %s", exc)
        self._operations.clear()

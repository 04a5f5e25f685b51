"""The ``greengrass`` transport: Greengrass IPC (awsiotsdk ``GreengrassCoreIPCClientV2``).

A thin class that RECEIVES the IPC client; only the entry point constructs
``GreengrassCoreIPCClientV2()``, so tests pass a fake client. Stream callbacks (configuration
updates, component updates) never raise: whatever the service's callback does, the handler logs
and keeps the stream open.

Component updates are deferred while frames are in flight: on a pre-update event the ``ready``
gate is asked; if it says no, ``DeferComponentUpdate`` asks the nucleus to check again later,
otherwise the update is acknowledged (``recheck_after_ms=0``).
"""

from __future__ import annotations

import logging
from typing import Any

from awsiot.greengrasscoreipc.model import QOS, BinaryMessage, PublishMessage

from inspector.transports.base import (
    ConfigCallback,
    MessageCallback,
    Transport,
    TransportError,
    UpdateGate,
    call_safely,
)

LOG = logging.getLogger(__name__)
DEFER_RECHECK_MS = 5000


class GreengrassTransport(Transport):
    """Publishes through the nucleus: IoT Core (QoS 1) and local pub/sub."""

    name = "greengrass"
    # A PublishToIoTCore response means "in the nucleus' spooler", not "at IoT Core" (nucleus
    # mqttclient/MqttClient.java publish → spool.addMessage; the spool is in memory by default
    # and lost on a nucleus restart), so results wait for the cloud's acknowledgement.
    publish_is_delivery = False

    def __init__(self, ipc_client: Any, *, defer_recheck_ms: int = DEFER_RECHECK_MS) -> None:
        self._ipc = ipc_client
        self._defer_ms = defer_recheck_ms
        self._operations: list[Any] = []
        self.deferrals = 0
        self.last_error: str | None = None

    def publish_upstream(self, topic: str, payload: bytes) -> None:
        """PublishToIoTCore with QoS 1; raise TransportError if the nucleus refuses."""
        try:
            self._ipc.publish_to_iot_core(topic_name=topic, qos=QOS.AT_LEAST_ONCE, payload=payload)
        except Exception as exc:
            self.last_error = f"{topic}: {type(exc).__name__}: {exc}"
            raise TransportError(
                f"greengrass transport: publish to IoT Core {self.last_error}"
            ) from exc

    def publish_local(self, topic: str, payload: bytes) -> None:
        """PublishToTopic on the local pub/sub bus (binary message)."""
        try:
            self._ipc.publish_to_topic(
                topic=topic,
                publish_message=PublishMessage(binary_message=BinaryMessage(message=payload)),
            )
        except Exception as exc:
            self.last_error = f"{topic}: {type(exc).__name__}: {exc}"
            raise TransportError(f"greengrass transport: local publish {self.last_error}") from exc

    def subscribe_upstream(self, topic: str, callback: MessageCallback) -> None:
        """SubscribeToIoTCore (QoS 1) on an exact topic; deliver each message's payload."""

        def on_event(event: Any) -> None:
            message = getattr(event, "message", None)
            if message is not None and message.payload is not None:
                call_safely(callback, bytes(message.payload), what=f"greengrass {topic}")

        try:
            _, operation = self._ipc.subscribe_to_iot_core(
                topic_name=topic,
                qos=QOS.AT_LEAST_ONCE,
                on_stream_event=self._guard(on_event, f"IoT Core message on {topic}"),
                on_stream_error=self._on_stream_error,
                on_stream_closed=self._on_stream_closed,
            )
        except Exception as exc:
            self.last_error = f"{topic}: {type(exc).__name__}: {exc}"
            raise TransportError(
                f"greengrass transport: subscribe to IoT Core {self.last_error}"
            ) from exc
        self._operations.append(operation)

    def report_running(self) -> None:
        """UpdateState RUNNING: the nucleus holds a ``startup`` step in STARTING until this."""
        from awsiot.greengrasscoreipc.model import ReportedLifecycleState

        try:
            self._ipc.update_state(state=ReportedLifecycleState.RUNNING)
        except Exception as exc:
            self.last_error = f"UpdateState: {type(exc).__name__}: {exc}"
            raise TransportError(f"greengrass transport: {self.last_error}") from exc

    def get_thing_shadow(self, thing: str, shadow: str) -> bytes | None:
        """GetThingShadow from ShadowManager's local copy; None when the shadow does not exist."""
        from awsiot.greengrasscoreipc.model import ResourceNotFoundError

        try:
            response = self._ipc.get_thing_shadow(thing_name=thing, shadow_name=shadow)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            self.last_error = f"GetThingShadow {thing}/{shadow}: {type(exc).__name__}: {exc}"
            raise TransportError(f"greengrass transport: {self.last_error}") from exc
        return bytes(response.payload or b"")

    def on_config(self, callback: ConfigCallback) -> None:
        """Subscribe to this component's configuration updates; deliver the full configuration."""

        def on_event(event: Any) -> None:
            try:
                response = self._ipc.get_configuration(key_path=[])
                value = response.value if isinstance(response.value, dict) else {}
            except Exception as exc:
                LOG.error("greengrass: get_configuration failed: %s", exc)
                self.last_error = f"get_configuration: {exc}"
                return
            call_safely(callback, value, what="greengrass config")

        _, operation = self._ipc.subscribe_to_configuration_update(
            key_path=[],
            on_stream_event=self._guard(on_event, "configuration update"),
            on_stream_error=self._on_stream_error,
            on_stream_closed=self._on_stream_closed,
        )
        self._operations.append(operation)

    def on_component_update(self, ready: UpdateGate) -> None:
        """Subscribe to component updates; defer them until ``ready()`` is True."""

        def on_event(event: Any) -> None:
            pre = getattr(event, "pre_update_event", None)
            if pre is None:
                return
            try:
                can_update = bool(ready())
            except Exception:
                LOG.exception("greengrass: update gate raised; deferring")
                can_update = False
            if can_update:
                self._ipc.defer_component_update(
                    deployment_id=pre.deployment_id, message="ready", recheck_after_ms=0
                )
                LOG.info("greengrass: component update %s acknowledged", pre.deployment_id)
            else:
                self.deferrals += 1
                self._ipc.defer_component_update(
                    deployment_id=pre.deployment_id,
                    message="frames in flight",
                    recheck_after_ms=self._defer_ms,
                )
                LOG.info("greengrass: component update %s deferred", pre.deployment_id)

        _, operation = self._ipc.subscribe_to_component_updates(
            on_stream_event=self._guard(on_event, "component update"),
            on_stream_error=self._on_stream_error,
            on_stream_closed=self._on_stream_closed,
        )
        self._operations.append(operation)

    def _guard(self, handler: Any, what: str) -> Any:
        def guarded(event: Any) -> None:
            try:
                handler(event)
            except Exception as exc:
                self.last_error = f"{what}: {type(exc).__name__}: {exc}"
                LOG.exception("greengrass: %s handler failed; stream kept open", what)

        return guarded

    def _on_stream_error(self, error: Exception) -> bool:
        try:
            self.last_error = f"stream error: {error}"
            LOG.error("greengrass: stream error: %s", error)
        except Exception:  # pragma: no cover - logging itself failed
            pass
        return False  # keep the stream open

    def _on_stream_closed(self) -> None:
        LOG.info("greengrass: stream closed")

    def close(self) -> None:
        """Close the subscriptions and the IPC client."""
        for operation in self._operations:
            try:
                operation.close()
            except Exception as exc:
                LOG.warning("greengrass: closing a stream failed: %s", exc)
        try:
            self._ipc.close()
        except Exception as exc:
            LOG.warning("greengrass: closing the IPC client failed: %s", exc)

"""The ``greengrass`` transport: Greengrass IPC (awsiotsdk ``GreengrassCoreIPCClientV2``).

A thin class that RECEIVES the IPC client; only the entry point constructs
``GreengrassCoreIPCClientV2()``, so tests pass a fake client. Stream callbacks (configuration
updates, component updates) never raise: whatever the service's callback does, the handler logs
and keeps the stream open.

Component updates are deferred while frames are in flight: on a pre-update event the ``ready``
gate is asked; if it says no, ``DeferComponentUpdate`` asks the nucleus to check again later,
otherwise the update is acknowledged (``recheck_after_ms=0``).

Every IPC call is bounded: it runs through the client's ``*_async`` form and waits at most
``call_timeout_s`` for the future (the blocking forms of ``clientv2.py`` wait without limit).
The V2 client connects once and never reconnects (``GreengrassCoreIPCClientV2.__init__``), and
on a closed connection the SDK raises ``ConnectionClosedError`` when an operation starts
(``awsiot/eventstreamrpc.py``, ``Connection._new_stream``) or fails a pending one with
``StreamClosedError`` (``Operation._on_continuation_closed``). So a closed connection, a
subscription stream the nucleus closed, or ``max_timeouts`` calls in a row without an answer
mark the nucleus *lost* (:meth:`GreengrassTransport.lost`): the service then exits non-zero and
the nucleus restarts the component (results are in the journal, nothing is lost).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from typing import Any

from awsiot.eventstreamrpc import ConnectionClosedError, StreamClosedError
from awsiot.greengrasscoreipc.model import (
    QOS,
    BinaryMessage,
    ConfigurationValidityReport,
    ConfigurationValidityStatus,
    PublishMessage,
)

from inspector.transports.base import (
    ConfigCallback,
    ConfigValidator,
    MessageCallback,
    Transport,
    TransportError,
    UpdateGate,
    call_safely,
)

LOG = logging.getLogger(__name__)
DEFER_RECHECK_MS = 1000  # ask again soon: the next quiet moment is usually within a cycle
CALL_TIMEOUT_S = 10.0
MAX_TIMEOUTS = 3
MAX_REPORT_CHARS = 500


class NucleusLostError(TransportError):
    """The IPC connection to the nucleus is gone (closed, or calls keep timing out)."""


class GreengrassTransport(Transport):
    """Publishes through the nucleus: IoT Core (QoS 1) and local pub/sub."""

    name = "greengrass"
    # A PublishToIoTCore response means "in the nucleus' spooler", not "at IoT Core" (nucleus
    # mqttclient/MqttClient.java publish → spool.addMessage; the spool is in memory by default
    # and lost on a nucleus restart), so results wait for the cloud's acknowledgement.
    publish_is_delivery = False

    def __init__(
        self,
        ipc_client: Any,
        *,
        defer_recheck_ms: int = DEFER_RECHECK_MS,
        call_timeout_s: float = CALL_TIMEOUT_S,
        max_timeouts: int = MAX_TIMEOUTS,
    ) -> None:
        if not call_timeout_s > 0 or max_timeouts < 1:
            raise ValueError("greengrass transport: call_timeout_s > 0 and max_timeouts >= 1")
        self._ipc = ipc_client
        self._defer_ms = defer_recheck_ms
        self._timeout_s = call_timeout_s
        self._max_timeouts = max_timeouts
        self._operations: list[Any] = []
        self._lock = threading.Lock()
        self._timeouts = 0
        self._lost: str | None = None
        self._closing = False
        self.deferrals = 0
        self.last_error: str | None = None

    # -- bounded calls and the state of the connection -------------------------------------

    def lost(self) -> str | None:
        """Why the nucleus is unreachable for good (None while it answers)."""
        return self._lost

    def _lose(self, why: str) -> None:
        with self._lock:
            if self._lost is None and not self._closing:
                self._lost = why
                LOG.error("greengrass: nucleus lost: %s", why)

    def _wait(self, operation: str, future: Any) -> Any:
        try:
            response = future.result(timeout=self._timeout_s)
        except concurrent.futures.TimeoutError:
            with self._lock:
                self._timeouts += 1
                count = self._timeouts
            if count >= self._max_timeouts:
                self._lose(f"{count} IPC calls in a row timed out (last: {operation})")
            raise TransportError(
                f"greengrass transport: {operation} timed out after {self._timeout_s:g} s"
            ) from None
        except StreamClosedError:
            self._lose(f"IPC connection closed during {operation}")
            raise NucleusLostError(f"greengrass transport: {operation}: {self._lost}") from None
        except Exception:
            self._answered()  # an error reply (e.g. UnauthorizedError) is still an answer
            raise
        self._answered()
        return response

    def _answered(self) -> None:
        with self._lock:
            self._timeouts = 0

    def _start(self, operation: str, **kwargs: Any) -> Any:
        if self._lost is not None:
            raise NucleusLostError(f"greengrass transport: nucleus lost: {self._lost}")
        try:
            return getattr(self._ipc, f"{operation}_async")(**kwargs)
        except ConnectionClosedError:
            self._lose(f"IPC connection closed ({operation})")
            raise NucleusLostError(f"greengrass transport: {operation}: {self._lost}") from None

    def call(self, operation: str, **kwargs: Any) -> Any:
        """Run one request/response IPC operation, waiting at most ``call_timeout_s``."""
        return self._wait(operation, self._start(operation, **kwargs))

    def _subscribe(self, operation: str, what: str, **kwargs: Any) -> None:
        # The SDK closes a stream whose first answer is an error, too (awsiot/eventstreamrpc.py,
        # the continuation closes after an error response): that is a refused subscription,
        # not a lost nucleus. Only a stream that was established and then closed by the other
        # side means no more events would ever arrive.
        established = threading.Event()

        def closed() -> None:
            if established.is_set():
                self._on_stream_closed(what)
            else:
                LOG.info("greengrass: %s subscription refused; stream closed", what)

        future, stream = self._start(
            operation,
            on_stream_error=self._on_stream_error,
            on_stream_closed=closed,
            **kwargs,
        )
        try:
            self._wait(operation, future)
        except BaseException:
            with contextlib.suppress(Exception):
                stream.close()
            raise
        established.set()
        self._operations.append(stream)

    # -- publishing ------------------------------------------------------------------------

    def publish_upstream(self, topic: str, payload: bytes) -> None:
        """PublishToIoTCore with QoS 1; raise TransportError if the nucleus refuses."""
        try:
            self.call(
                "publish_to_iot_core", topic_name=topic, qos=QOS.AT_LEAST_ONCE, payload=payload
            )
        except TransportError as exc:
            self.last_error = f"{topic}: {exc}"
            raise
        except Exception as exc:
            self.last_error = f"{topic}: {_why(exc)}"
            raise TransportError(
                f"greengrass transport: publish to IoT Core {self.last_error}"
            ) from exc

    def publish_local(self, topic: str, payload: bytes) -> None:
        """PublishToTopic on the local pub/sub bus (binary message)."""
        try:
            self.call(
                "publish_to_topic",
                topic=topic,
                publish_message=PublishMessage(binary_message=BinaryMessage(message=payload)),
            )
        except TransportError as exc:
            self.last_error = f"{topic}: {exc}"
            raise
        except Exception as exc:
            self.last_error = f"{topic}: {_why(exc)}"
            raise TransportError(f"greengrass transport: local publish {self.last_error}") from exc

    def subscribe_upstream(self, topic: str, callback: MessageCallback) -> None:
        """SubscribeToIoTCore (QoS 1) on an exact topic; deliver each message's payload."""

        def on_event(event: Any) -> None:
            message = getattr(event, "message", None)
            if message is not None and message.payload is not None:
                call_safely(callback, bytes(message.payload), what=f"greengrass {topic}")

        try:
            self._subscribe(
                "subscribe_to_iot_core",
                f"IoT Core {topic}",
                topic_name=topic,
                qos=QOS.AT_LEAST_ONCE,
                on_stream_event=self._guard(on_event, f"IoT Core message on {topic}"),
            )
        except TransportError:
            raise
        except Exception as exc:
            self.last_error = f"{topic}: {_why(exc)}"
            raise TransportError(
                f"greengrass transport: subscribe to IoT Core {self.last_error}"
            ) from exc

    def report_running(self) -> None:
        """UpdateState RUNNING: the nucleus holds a ``startup`` step in STARTING until this."""
        from awsiot.greengrasscoreipc.model import ReportedLifecycleState

        try:
            self.call("update_state", state=ReportedLifecycleState.RUNNING)
        except TransportError:
            raise
        except Exception as exc:
            self.last_error = f"UpdateState: {_why(exc)}"
            raise TransportError(f"greengrass transport: {self.last_error}") from exc

    def get_thing_shadow(self, thing: str, shadow: str) -> bytes | None:
        """GetThingShadow from ShadowManager's local copy; None when the shadow does not exist."""
        from awsiot.greengrasscoreipc.model import ResourceNotFoundError

        try:
            response = self.call("get_thing_shadow", thing_name=thing, shadow_name=shadow)
        except ResourceNotFoundError:
            return None
        except TransportError:
            raise
        except Exception as exc:
            self.last_error = f"GetThingShadow {thing}/{shadow}: {_why(exc)}"
            raise TransportError(f"greengrass transport: {self.last_error}") from exc
        return bytes(response.payload or b"")

    def on_config(self, callback: ConfigCallback) -> None:
        """Deliver this component's whole configuration now and after each update.

        Subscribed before the first read, so an update landing in between is not missed; the
        nucleus sends only the changed key path in its events, so the whole configuration is
        read again each time (GetConfiguration with an empty key path).
        """

        def deliver() -> None:
            response = self.call("get_configuration", key_path=[])
            value = response.value if isinstance(response.value, dict) else {}
            call_safely(callback, value, what="greengrass config")

        def on_event(event: Any) -> None:
            try:
                deliver()
            except Exception as exc:
                LOG.error("greengrass: get_configuration failed: %s", exc)
                self.last_error = f"get_configuration: {exc}"

        self._subscribe(
            "subscribe_to_configuration_update",
            "configuration update",
            key_path=[],
            on_stream_event=self._guard(on_event, "configuration update"),
        )
        deliver()  # the configuration in force at start (a TransportError here ends the start)

    def on_validate(self, validator: ConfigValidator) -> None:
        """Validate each proposed configuration before the nucleus stores it.

        The nucleus sends the component's whole proposed configuration with the deployment id
        and waits (20 s by default) for SendConfigurationValidityReport with that id; a
        REJECTED report fails the deployment with our message, and nothing is stored
        (nucleus DynamicComponentConfigurationValidator.validateOverIpc,
        ConfigStoreIPCEventStreamAgent). It asks only when the deployment keeps the
        component's version: a new version restarts the component, which reads it at start.
        """

        def on_event(event: Any) -> None:
            proposed = getattr(event, "validate_configuration_update_event", None)
            deployment_id = getattr(proposed, "deployment_id", None)
            if proposed is None or not deployment_id:
                LOG.warning("greengrass: validation event without a deployment id: ignored")
                return
            doc = proposed.configuration if isinstance(proposed.configuration, dict) else {}
            try:
                refusal = validator(doc)
            except Exception as exc:
                LOG.exception("greengrass: configuration validator raised")
                refusal = f"validator failed: {_why(exc)}"
            status = (
                ConfigurationValidityStatus.ACCEPTED
                if refusal is None
                else ConfigurationValidityStatus.REJECTED
            )
            report = ConfigurationValidityReport(
                status=status,
                deployment_id=deployment_id,
                message=None if refusal is None else refusal[:MAX_REPORT_CHARS],
            )
            self.call("send_configuration_validity_report", configuration_validity_report=report)
            LOG.info("greengrass: configuration of deployment %s %s", deployment_id, status)

        self._subscribe(
            "subscribe_to_validate_configuration_updates",
            "configuration validation",
            on_stream_event=self._guard(on_event, "configuration validation"),
        )

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
                self.call(
                    "defer_component_update",
                    deployment_id=pre.deployment_id,
                    message="ready",
                    recheck_after_ms=0,
                )
                LOG.info("greengrass: component update %s acknowledged", pre.deployment_id)
            else:
                self.deferrals += 1
                self.call(
                    "defer_component_update",
                    deployment_id=pre.deployment_id,
                    message="frames in flight",
                    recheck_after_ms=self._defer_ms,
                )
                LOG.info("greengrass: component update %s deferred", pre.deployment_id)

        self._subscribe(
            "subscribe_to_component_updates",
            "component update",
            on_stream_event=self._guard(on_event, "component update"),
        )

    def _guard(self, handler: Any, what: str) -> Any:
        def guarded(event: Any) -> None:
            try:
                handler(event)
            except Exception as exc:
                self.last_error = f"{what}: {_why(exc)}"
                LOG.exception("greengrass: %s handler failed; stream kept open", what)

        return guarded

    def _on_stream_error(self, error: Exception) -> bool:
        try:
            self.last_error = f"stream error: {error}"
            LOG.error("greengrass: stream error: %s", error)
        except Exception:  # pragma: no cover - logging itself failed
            pass
        return False  # keep the stream open

    def _on_stream_closed(self, what: str) -> None:
        try:
            if self._closing:
                LOG.info("greengrass: %s stream closed", what)
            else:  # the nucleus (or the connection) ended it: no more updates would arrive
                self._lose(f"the {what} stream closed")
        except Exception:  # pragma: no cover - a stream callback never raises
            pass

    def close(self) -> None:
        """Close the subscriptions and the IPC client."""
        self._closing = True
        for operation in self._operations:
            try:
                operation.close()
            except Exception as exc:
                LOG.warning("greengrass: closing a stream failed: %s", exc)
        try:
            self._ipc.close()
        except Exception as exc:
            LOG.warning("greengrass: closing the IPC client failed: %s", exc)


def _why(exc: BaseException) -> str:
    """An IPC error as one phrase: the SDK's error shapes carry their text in ``message``."""
    text = str(exc) or str(getattr(exc, "message", "") or "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

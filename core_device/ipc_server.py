"""A Greengrass IPC server on a Unix socket that the unmodified device SDK client talks to.

Protocol rules follow the event-stream RPC server the nucleus runs (aws-iot-device-sdk-java-v2
``sdk/greengrass/event-stream-rpc-server``, ServiceOperationMappingContinuationHandler.java and
OperationContinuationHandler.java) and the nucleus' IPC agents (aws-greengrass-nucleus at
a28341c41509bb52b0596212992cf5e6e5c57327, ``src/main/java/com/aws/greengrass/``):

- CONNECT: ``:version`` must equal the server's; the payload's ``authToken`` names the component
  (ipc/IPCEventStreamService.java ipcAuthenticationHandler, ipc/AuthenticationHandler.java
  doAuthentication). Anything wrong gets a CONNECT_ACK without CONNECTION_ACCEPTED, then the
  connection is closed (onConnectRequest ``finally`` block).
- PING gets a PING_RESPONSE echoing the headers not starting with ``:`` (onProtocolMessage).
- A request is answered with the response shape (``:content-type`` application/json,
  ``service-model-type``); a non-streaming one with TERMINATE_STREAM on it. A modelled error is an
  APPLICATION_ERROR with TERMINATE_STREAM; any other failure is APPLICATION_ERROR
  "InternalServerError" as text/plain (OperationContinuationHandler.onContinuationMessage).
- A model operation without a handler gets ServiceError "Operation <op> is not supported by
  Greengrass" (ipc/common/DefaultOperationHandler.java); an operation outside the model gets the
  "Unsupported Operation" APPLICATION_ERROR (onIncomingStream).
- Stream events go out only after the initial response (the agents' ``afterHandleRequest``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from awsiot.eventstreamrpc import Shape
from awsiot.greengrasscoreipc import model

from core_device import eventstream as es
from core_device.authorization import (
    MQTT_PROXY_SERVICE,
    PUBSUB_SERVICE,
    SHADOW_MANAGER_SERVICE,
    AuthorizationError,
    ResourceLookupPolicy,
    handler_for,
)
from core_device.config_store import ConfigError, StaleUpdateError
from core_device.host import Host, IotPublishError, IotSubscribeError
from core_device.shadows import ShadowNotFoundError

log = logging.getLogger(__name__)

_OP = "aws.greengrass#"


def _model_operations() -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for name in dir(model):
        cls: Any = getattr(model, name)
        if name.startswith("_") and name.endswith("Operation") and hasattr(cls, "_request_type"):
            ops[cls._model_name()] = cls
    return ops


class _StreamState:
    """One open operation stream on a connection."""

    def __init__(self, conn: _Connection, stream_id: int, operation: str) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.operation = operation
        self.closed = False
        self.active = False
        self.ready = threading.Event()  # set once the operation's response is on the wire
        self.on_close: list[Callable[[], None]] = []

    def send_event(self, shape: Shape) -> bool:
        """Push a stream event; False when the stream is gone.

        The subscription is registered before its response is sent (the nucleus' agents add
        the listener in handleRequest, then the response goes out), so an event raised in
        between waits here for the response instead of being lost: events follow it.
        """
        if self.closed or (not self.active and not self.ready.wait(5.0)):
            return False
        if self.closed:
            return False
        return self.conn.send_shape(self.stream_id, shape, terminate=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for callback in self.on_close:
            try:
                callback()
            except Exception:  # a cleanup failure must not stop the others
                log.exception("stream %s cleanup failed", self.operation)


@dataclass
class _Reply:
    response: Shape
    activate: Callable[[_StreamState], None] | None = None


class _Connection:
    """One component's connection: reads messages, dispatches them, writes replies."""

    def __init__(self, server: IpcServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.component: str | None = None
        self.streams: dict[int, _StreamState] = {}
        self.last_stream_id = 0
        self._send_lock = threading.Lock()
        self._closed = False

    # -- writing ---------------------------------------------------------------------------
    def send(self, message: es.RpcMessage) -> bool:
        data = es.encode_rpc(message)
        with self._send_lock:
            if self._closed:
                return False
            try:
                self.sock.sendall(data)
            except OSError:
                return False
        return True

    def send_shape(
        self, stream_id: int, shape: Shape, *, terminate: bool, error: bool = False
    ) -> bool:
        headers = (
            es.Header.string(es.CONTENT_TYPE_HEADER, es.CONTENT_TYPE_JSON),
            es.Header.string(es.SERVICE_MODEL_TYPE_HEADER, shape._model_name()),
        )
        return self.send(
            es.RpcMessage(
                es.MessageType.APPLICATION_ERROR if error else es.MessageType.APPLICATION_MESSAGE,
                es.MessageFlag.TERMINATE_STREAM if terminate else es.MessageFlag.NONE,
                stream_id,
                headers,
                json.dumps(shape._to_payload()).encode(),
            )
        )

    # -- reading ---------------------------------------------------------------------------
    def run(self) -> None:
        decoder = es.Decoder()
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                for message in decoder.feed(data):
                    if not self._handle(es.to_rpc(message)):
                        return
        except es.EventStreamError as exc:
            log.warning("closing IPC connection of %s: %s", self.component, exc)
        finally:
            self.close()

    def close(self) -> None:
        with self._send_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        # a vanished client closes every stream it had (OperationContinuationHandler.onContinuationClosed)
        for stream in list(self.streams.values()):
            stream.close()
        self.streams.clear()
        self.server._forget(self)

    def _handle(self, message: es.RpcMessage) -> bool:
        if self.component is None:
            if message.message_type is not es.MessageType.CONNECT:
                return False
            return self._connect(message)
        if message.message_type is es.MessageType.PING:
            echoed = tuple(h for h in message.headers if not h.name.startswith(":"))
            self.send(
                es.RpcMessage(es.MessageType.PING_RESPONSE, headers=echoed, payload=message.payload)
            )
            return True
        if message.message_type is es.MessageType.PING_RESPONSE:
            return True
        if message.stream_id <= 0 or message.message_type not in (
            es.MessageType.APPLICATION_MESSAGE,
            es.MessageType.APPLICATION_ERROR,
        ):
            return True
        stream = self.streams.get(message.stream_id)
        if stream is not None:
            if message.flags & es.MessageFlag.TERMINATE_STREAM:
                self.streams.pop(message.stream_id, None)
                stream.close()
            return True
        if message.stream_id <= self.last_stream_id:
            return True  # a message for a stream already closed
        self.last_stream_id = message.stream_id
        if message.flags & es.MessageFlag.TERMINATE_STREAM:
            return True  # "Not invoking ... client request received with a terminate flag"
        if message.operation in _BLOCKING_OPERATIONS:
            # the nucleus answers these from its MQTT client's futures, not on the connection's
            # event loop: a subscription waiting for a connection or a SUBACK does not hold up
            # the component's other requests (heartbeats, publishes)
            threading.Thread(target=self._request, args=(message,), daemon=True).start()
        else:
            self._request(message)
        return True

    def _connect(self, message: es.RpcMessage) -> bool:
        component: str | None = None
        if message.header(es.VERSION_HEADER) == es.RPC_VERSION:
            try:
                token = json.loads(message.payload or b"{}").get("authToken")
            except (ValueError, AttributeError):
                token = None
            if isinstance(token, str) and token:
                component = self.server.host.component_for_token(token)
        if component is None:
            log.info("IPC connection refused: unrecognised client")
            self.send(es.RpcMessage(es.MessageType.CONNECT_ACK, es.MessageFlag.NONE))
            # the server then closes; give the client a moment to read the refusal and hang up
            # first, so it reports AccessDeniedError rather than a closed socket
            self.sock.settimeout(1.0)
            with contextlib.suppress(OSError):
                while self.sock.recv(4096):
                    pass
            return False
        self.component = component
        self.send(es.RpcMessage(es.MessageType.CONNECT_ACK, es.MessageFlag.CONNECTION_ACCEPTED))
        return True

    def _request(self, message: es.RpcMessage) -> None:
        operation = message.operation or ""
        stream_id = message.stream_id
        op_type = self.server.operations.get(operation)
        if op_type is None:
            payload = json.dumps(
                {
                    "error": "Unsupported Operation",
                    "message": f"{operation} is an unsupported operation.",
                }
            )
            self.send(
                es.RpcMessage(
                    es.MessageType.APPLICATION_ERROR,
                    es.MessageFlag.TERMINATE_STREAM,
                    stream_id,
                    (es.Header.string(es.CONTENT_TYPE_HEADER, es.CONTENT_TYPE_JSON),),
                    payload.encode(),
                )
            )
            return
        streaming = op_type._response_stream_type() is not None
        stream = _StreamState(self, stream_id, operation)
        try:
            request = op_type._request_type()._from_payload(json.loads(message.payload or b"{}"))
            handler = self.server.handlers.get(operation)
            if handler is None:
                raise model.ServiceError(
                    message=f"Operation {operation} is not supported by Greengrass"
                )
            assert self.component is not None
            reply = handler(self.component, request)
        except model.GreengrassCoreIPCError as exc:
            self.send_shape(stream_id, exc, terminate=True, error=True)
            return
        except Exception:
            log.exception("IPC %s from %s failed", operation, self.component)
            self.send(
                es.RpcMessage(
                    es.MessageType.APPLICATION_ERROR,
                    es.MessageFlag.TERMINATE_STREAM,
                    stream_id,
                    (es.Header.string(es.CONTENT_TYPE_HEADER, es.CONTENT_TYPE_TEXT),),
                    b"InternalServerError",
                )
            )
            return
        if streaming:
            self.streams[stream_id] = stream
            if reply.activate is not None:
                reply.activate(stream)  # registered before the client hears it succeeded
        self.send_shape(stream_id, reply.response, terminate=not streaming)
        stream.active = True
        stream.ready.set()


_BLOCKING_OPERATIONS = frozenset({"aws.greengrass#SubscribeToIoTCore"})


def _unauthorized(exc: AuthorizationError) -> model.UnauthorizedError:
    return model.UnauthorizedError(message=str(exc))


@dataclass
class _PendingValidation:
    future: Future[tuple[str, str | None]] = field(default_factory=Future)


class IpcServer:
    """The nucleus' IPC service for components, backed by a Host."""

    def __init__(self, socket_path: str, host: Host) -> None:
        if len(os.fsencode(socket_path)) > 107:
            raise ValueError(f"IPC socket path is longer than 107 bytes: {socket_path}")
        self._socket_path = socket_path
        self.host = host
        self.operations = _model_operations()
        self.handlers: dict[str, Callable[[str, Any], _Reply]] = {
            _OP + "PublishToTopic": self._publish_to_topic,
            _OP + "SubscribeToTopic": self._subscribe_to_topic,
            _OP + "PublishToIoTCore": self._publish_to_iot_core,
            _OP + "SubscribeToIoTCore": self._subscribe_to_iot_core,
            _OP + "GetConfiguration": self._get_configuration,
            _OP + "UpdateConfiguration": self._update_configuration,
            _OP + "SubscribeToConfigurationUpdate": self._subscribe_to_configuration_update,
            _OP + "SubscribeToValidateConfigurationUpdates": self._subscribe_to_validate,
            _OP + "SendConfigurationValidityReport": self._send_validity_report,
            _OP + "UpdateState": self._update_state,
            _OP + "SubscribeToComponentUpdates": self._subscribe_to_component_updates,
            _OP + "DeferComponentUpdate": self._defer_component_update,
            _OP + "GetThingShadow": self._get_thing_shadow,
            _OP + "UpdateThingShadow": self._update_thing_shadow,
        }
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        # local pub/sub: (topic filter, component, receive mode, stream)
        self._topic_subscriptions: list[tuple[str, str, str, _StreamState]] = []
        self._taps: list[Callable[[str, str, bytes], None]] = []
        self._component_update_streams: dict[str, list[_StreamState]] = {}
        self._pending_deferrals: set[tuple[str, str]] = set()
        self._validate_streams: dict[str, _StreamState] = {}
        self._pending_validations: dict[tuple[str, str], _PendingValidation] = {}

    @property
    def socket_path(self) -> str:
        """The Unix socket components connect to."""
        return self._socket_path

    def start(self) -> None:
        """Listen on the socket and accept component connections in the background."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._socket_path)
        listener.listen(16)
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept, name="ipc-accept", daemon=True)
        self._accept_thread.start()

    def stop(self) -> None:
        """Close every connection and the socket."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in list(self._connections):
            conn.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._socket_path)

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = _Connection(self, sock)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=conn.run, name="ipc-connection", daemon=True).start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def connected_components(self) -> list[str]:
        """Components with an open, accepted connection."""
        with self._lock:
            return sorted({c.component for c in self._connections if c.component})

    # -- authorization ---------------------------------------------------------------------
    def _authorize(
        self,
        component: str,
        destination: str,
        operation: str,
        resource: str | None,
        lookup: ResourceLookupPolicy = ResourceLookupPolicy.STANDARD,
    ) -> None:
        # only the caller's own policies can name it as principal (AuthorizationPolicyParser)
        handler = handler_for({component: self.host.access_control(component)})
        handler.is_authorized(destination, component, operation, resource, lookup)

    # -- local pub/sub (builtin/services/pubsub/PubSubIPCEventStreamAgent.java) ---------------
    def _publish_to_topic(self, component: str, request: model.PublishToTopicRequest) -> _Reply:
        topic = request.topic
        try:
            self._authorize(component, PUBSUB_SERVICE, _OP + "PublishToTopic", topic)
        except AuthorizationError as exc:
            raise _unauthorized(exc) from exc
        if topic is None:
            raise model.InvalidArgumentsError(message="Publish topic must not be null")
        if any(w in topic for w in ("+", "#", "*")):
            raise model.InvalidArgumentsError(message="Publish topic must not contain a wildcard.")
        publish = request.publish_message
        if publish is None or (publish.json_message is None and publish.binary_message is None):
            raise model.InvalidArgumentsError(message="Publish message must not be null")
        context = model.MessageContext(topic=topic)
        if publish.json_message is not None:
            event = model.SubscriptionResponseMessage(
                json_message=model.JsonMessage(
                    message=publish.json_message.message, context=context
                )
            )
        else:
            assert publish.binary_message is not None
            event = model.SubscriptionResponseMessage(
                binary_message=model.BinaryMessage(
                    message=publish.binary_message.message, context=context
                )
            )
        self._deliver(component, topic, event)
        if self._taps:
            raw: bytes = (
                bytes(publish.binary_message.message or b"")
                if publish.binary_message is not None
                else json.dumps(
                    publish.json_message.message if publish.json_message else None
                ).encode()
            )
            for tap in list(self._taps):
                try:
                    tap(component, topic, raw)
                except Exception:  # an observer must never break the bus
                    log.exception("local pub/sub observer failed")
        return _Reply(model.PublishToTopicResponse())

    def _deliver(
        self, publisher: str, topic: str, event: model.SubscriptionResponseMessage
    ) -> None:
        with self._lock:
            targets = [
                stream
                for (pattern, owner, mode, stream) in self._topic_subscriptions
                if _subscription_matches(pattern, topic)
                and not (
                    owner == publisher and mode == model.ReceiveMode.RECEIVE_MESSAGES_FROM_OTHERS
                )
            ]
        for stream in dict.fromkeys(targets):
            stream.send_event(event)

    def publish_local(self, publisher: str, topic: str, payload: bytes) -> None:
        """A message a built-in service (e.g. ShadowManager) puts on local pub/sub."""
        event = model.SubscriptionResponseMessage(
            binary_message=model.BinaryMessage(
                message=payload, context=model.MessageContext(topic=topic)
            )
        )
        self._deliver(publisher, topic, event)

    def observe_local(self, tap: Callable[[str, str, bytes], None]) -> None:
        """Call ``tap(publisher, topic, payload)`` for every local PublishToTopic (tooling)."""
        self._taps.append(tap)

    def _subscribe_to_topic(self, component: str, request: model.SubscribeToTopicRequest) -> _Reply:
        topic = request.topic
        try:
            self._authorize(component, PUBSUB_SERVICE, _OP + "SubscribeToTopic", topic)
        except AuthorizationError as exc:
            raise _unauthorized(exc) from exc
        if not topic:
            raise model.InvalidArgumentsError(message="Subscribe topic must not be empty")
        mode = request.receive_mode
        if mode is None:
            # a wildcard subscription defaults to not receiving one's own messages (validateReceiveMode)
            mode = (
                model.ReceiveMode.RECEIVE_MESSAGES_FROM_OTHERS
                if _is_wildcard(topic)
                else model.ReceiveMode.RECEIVE_ALL_MESSAGES
            )

        def activate(stream: _StreamState) -> None:
            entry = (topic, component, mode, stream)
            with self._lock:
                self._topic_subscriptions.append(entry)

            def drop() -> None:
                with self._lock:
                    if entry in self._topic_subscriptions:
                        self._topic_subscriptions.remove(entry)

            stream.on_close.append(drop)

        return _Reply(model.SubscribeToTopicResponse(), activate)

    # -- IoT Core (builtin/services/mqttproxy/MqttProxyIPCAgent.java) ------------------------
    def _authorize_mqtt(self, component: str, operation: str, topic: str) -> None:
        """mqttproxy resources match as MQTT filters; a refusal says only "Not Authorized"."""
        try:
            self._authorize(
                component, MQTT_PROXY_SERVICE, _OP + operation, topic,
                ResourceLookupPolicy.MQTT_STYLE,
            )  # fmt: skip
        except AuthorizationError as exc:
            raise model.UnauthorizedError(message="Not Authorized") from exc

    def _publish_to_iot_core(
        self, component: str, request: model.PublishToIoTCoreRequest
    ) -> _Reply:
        topic = request.topic_name
        if topic is None:
            raise model.InvalidArgumentsError(message="Topic is required")
        self._authorize_mqtt(component, "PublishToIoTCore", topic)
        if request.payload is None:
            raise model.InvalidArgumentsError(message="Payload is required")
        qos = _qos(request.qos)
        iot = self.host.iot
        if iot is None:
            # MqttClient.publish: isDeviceConfiguredToTalkToCloud() is false
            raise model.ServiceError(
                message=f"Publish to topic {topic} failed: Cannot publish because device is configured to run offline"
            )
        try:
            iot.publish(topic, bytes(request.payload), qos, bool(request.retain))
        except IotPublishError as exc:
            raise model.ServiceError(message=f"Publish to topic {topic} failed: {exc}") from exc
        return _Reply(model.PublishToIoTCoreResponse())

    def _subscribe_to_iot_core(
        self, component: str, request: model.SubscribeToIoTCoreRequest
    ) -> _Reply:
        topic = request.topic_name
        if topic is None:
            raise model.InvalidArgumentsError(message="Topic is required")
        self._authorize_mqtt(component, "SubscribeToIoTCore", topic)
        qos = _qos(request.qos)
        iot = self.host.iot
        if iot is None:
            raise model.ServiceError(
                message=f"Subscribe to topic {topic} failed with error Cannot subscribe because device is configured to run offline"
            )
        holder: dict[str, _StreamState] = {}

        def forward(message_topic: str, payload: bytes) -> None:
            stream = holder.get("stream")
            if stream is not None:
                stream.send_event(
                    model.IoTCoreMessage(
                        message=model.MQTTMessage(topic_name=message_topic, payload=payload)
                    )
                )

        try:
            handle = iot.subscribe(topic, qos, forward)
        except IotSubscribeError as exc:
            raise model.ServiceError(
                message=f"Subscribe to topic {topic} failed with error {exc}"
            ) from exc

        def activate(stream: _StreamState) -> None:
            holder["stream"] = stream
            stream.on_close.append(lambda: iot.unsubscribe(handle))

        return _Reply(model.SubscribeToIoTCoreResponse(), activate)

    # -- configuration (builtin/services/configstore/ConfigStoreIPCEventStreamAgent.java) ----
    def _get_configuration(self, component: str, request: model.GetConfigurationRequest) -> _Reply:
        # reading another component's configuration needs no authorization in the nucleus
        name = request.component_name or component
        config = self.host.config
        if not config.has_component(name):
            raise model.ResourceNotFoundError(message="Key not found")
        path = list(request.key_path or [])
        try:
            value = config.get(name, path)
            leaf = bool(path) and config.is_leaf(name, path)
        except KeyError as exc:
            raise model.ResourceNotFoundError(message="Key not found") from exc
        if leaf:
            # a leaf comes back as {its name: its value}
            value = {config.name_at(name, path): value}
        return _Reply(model.GetConfigurationResponse(component_name=name, value=value))

    def _update_configuration(
        self, component: str, request: model.UpdateConfigurationRequest
    ) -> _Reply:
        if request.timestamp is None:
            raise model.InvalidArgumentsError(message="Timestamp is required")
        if request.value_to_merge is None:
            raise model.InvalidArgumentsError(message="ValueToMerge is required")
        path = list(request.key_path or [])
        restricted = ["accessControl"]
        if (not path and any(k in restricted for k in request.value_to_merge)) or (
            path and path[0] in restricted
        ):
            raise model.InvalidArgumentsError(
                message=f"Config update is not allowed for following fields {restricted}"
            )
        stamp = request.timestamp
        stamp_ms = (
            int(stamp.timestamp() * 1000)
            if isinstance(stamp, datetime)
            else int(float(stamp) * 1000)
        )
        try:
            self.host.config.update(component, path, request.value_to_merge, stamp_ms)
        except StaleUpdateError as exc:
            raise model.FailedUpdateConditionCheckError(message=str(exc)) from exc
        except ConfigError as exc:
            raise model.InvalidArgumentsError(message=str(exc)) from exc
        return _Reply(model.UpdateConfigurationResponse())

    def _subscribe_to_configuration_update(
        self, component: str, request: model.SubscribeToConfigurationUpdateRequest
    ) -> _Reply:
        name = request.component_name or component
        config = self.host.config
        path = list(request.key_path or [])
        if not config.has_component(name) or (path and not config.exists(name, path)):
            raise model.ResourceNotFoundError(message="Key not found")

        def activate(stream: _StreamState) -> None:
            def changed(changed_component: str, key_path: list[str]) -> None:
                stream.send_event(
                    model.ConfigurationUpdateEvents(
                        configuration_update_event=model.ConfigurationUpdateEvent(
                            component_name=changed_component, key_path=key_path
                        )
                    )
                )

            handle = config.subscribe(name, path, changed)
            stream.on_close.append(lambda: config.unsubscribe(handle))

        return _Reply(model.SubscribeToConfigurationUpdateResponse(), activate)

    def _subscribe_to_validate(
        self, component: str, request: model.SubscribeToValidateConfigurationUpdatesRequest
    ) -> _Reply:
        def activate(stream: _StreamState) -> None:
            with self._lock:
                # one listener per component: the first stream keeps it (computeIfAbsent)
                self._validate_streams.setdefault(component, stream)

            def drop() -> None:
                # onStreamClosed removes the component's listener, whichever stream closes
                with self._lock:
                    self._validate_streams.pop(component, None)

            stream.on_close.append(drop)

        return _Reply(model.SubscribeToValidateConfigurationUpdatesResponse(), activate)

    def _send_validity_report(
        self, component: str, request: model.SendConfigurationValidityReportRequest
    ) -> _Reply:
        report = request.configuration_validity_report
        if report is None or report.deployment_id is None:
            raise model.InvalidArgumentsError(
                message="Cannot accept configuration validity report, the deployment ID provided was null"
            )
        with self._lock:
            pending = self._pending_validations.pop((component, report.deployment_id), None)
        if pending is None:
            raise model.InvalidArgumentsError(
                message="Validation request either timed out or was never made"
            )
        if not pending.future.done():
            pending.future.set_result((str(report.status), report.message))
        return _Reply(model.SendConfigurationValidityReportResponse())

    def validate_configuration(
        self, component: str, configuration: dict[str, Any], deployment_id: str, timeout_s: float
    ) -> tuple[str, str | None] | None:
        """Ask the component to validate a proposed configuration; (status, message), or None without a stream.

        On timeout the nucleus fails the deployment (DynamicComponentConfigurationValidator,
        default 20 s): this raises TimeoutError with the nucleus' message.
        """
        with self._lock:
            stream = self._validate_streams.get(component)
            if stream is None:
                return None
            pending = _PendingValidation()
            self._pending_validations[(component, deployment_id)] = pending
        event = model.ValidateConfigurationUpdateEvents(
            validate_configuration_update_event=model.ValidateConfigurationUpdateEvent(
                configuration=configuration, deployment_id=deployment_id
            )
        )
        try:
            if not stream.send_event(event):
                raise RuntimeError(f"Error requesting validation from component {component}")
            return pending.future.result(timeout=timeout_s)
        except FutureTimeout as exc:
            raise TimeoutError(
                "Error while waiting for validation report for one or more components:"
                f" {component} did not answer within {timeout_s} s"
            ) from exc
        finally:
            with self._lock:
                self._pending_validations.pop((component, deployment_id), None)

    # -- lifecycle (builtin/services/lifecycle/LifecycleIPCEventStreamAgent.java) ------------
    def _update_state(self, component: str, request: model.UpdateStateRequest) -> _Reply:
        # no authorization: a component reports its own state
        if request.state not in (
            model.ReportedLifecycleState.RUNNING,
            model.ReportedLifecycleState.ERRORED,
        ):
            raise model.InvalidArgumentsError(message=f"Invalid state {request.state}")
        self.host.report_state(component, str(request.state))
        return _Reply(model.UpdateStateResponse())

    def _subscribe_to_component_updates(
        self, component: str, request: model.SubscribeToComponentUpdatesRequest
    ) -> _Reply:
        def activate(stream: _StreamState) -> None:
            with self._lock:
                self._component_update_streams.setdefault(component, []).append(stream)

            def drop() -> None:
                with self._lock:
                    streams = self._component_update_streams.get(component, [])
                    if stream in streams:
                        streams.remove(stream)
                    if not streams:
                        self._component_update_streams.pop(component, None)

            stream.on_close.append(drop)

        return _Reply(model.SubscribeToComponentUpdatesResponse(), activate)

    def _defer_component_update(
        self, component: str, request: model.DeferComponentUpdateRequest
    ) -> _Reply:
        with self._lock:
            subscribed = component in self._component_update_streams
        if not subscribed:
            raise model.InvalidArgumentsError(
                message="Component is not subscribed to component update events"
            )
        if request.deployment_id is None:
            raise model.InvalidArgumentsError(
                message="Cannot defer the update, the deployment ID provided was null"
            )
        key = (component, request.deployment_id)
        with self._lock:
            pending = key in self._pending_deferrals
            self._pending_deferrals.discard(key)
        if not pending:
            raise model.ServiceError(
                message="Time limit to respond to PreComponentUpdateEvent exceeded"
            )
        self.host.defer_update(
            component, request.deployment_id, int(request.recheck_after_ms or 0), request.message
        )
        return _Reply(model.DeferComponentUpdateResponse())

    def notify_pre_component_update(self, deployment_id: str) -> int:
        """Send PreComponentUpdateEvent to every SubscribeToComponentUpdates stream; how many."""
        with self._lock:
            # earlier deferral windows close when a new event goes out (discardDeferComponentUpdateFutures)
            self._pending_deferrals.clear()
            targets = [
                (c, s) for c, streams in self._component_update_streams.items() for s in streams
            ]
            for component, _ in targets:
                self._pending_deferrals.add((component, deployment_id))
        event = model.ComponentUpdatePolicyEvents(
            pre_update_event=model.PreComponentUpdateEvent(
                deployment_id=deployment_id, is_ggc_restarting=False
            )
        )
        for _, stream in targets:
            stream.send_event(event)
        return len(targets)

    def notify_post_component_update(self, deployment_id: str) -> None:
        """Send PostComponentUpdateEvent to every SubscribeToComponentUpdates stream."""
        with self._lock:
            self._pending_deferrals.clear()
            targets = [s for streams in self._component_update_streams.values() for s in streams]
        event = model.ComponentUpdatePolicyEvents(
            post_update_event=model.PostComponentUpdateEvent(deployment_id=deployment_id)
        )
        for stream in targets:
            stream.send_event(event)

    # -- shadows (aws-greengrass-shadow-manager ipc/*RequestHandler.java) --------------------
    def _shadow_resource(self, thing: str, shadow: str) -> str:
        # ShadowRequest.getShadowTopicPrefix; Constants NAMED_/CLASSIC_SHADOW_TOPIC_PREFIX
        return (
            f"$aws/things/{thing}/shadow/name/{shadow}" if shadow else f"$aws/things/{thing}/shadow"
        )

    def _get_thing_shadow(self, component: str, request: model.GetThingShadowRequest) -> _Reply:
        thing, shadow = request.thing_name, request.shadow_name or ""
        if not thing:
            raise model.InvalidArgumentsError(message="ThingName absent in request")
        try:
            self._authorize(
                component,
                SHADOW_MANAGER_SERVICE,
                _OP + "GetThingShadow",
                self._shadow_resource(thing, shadow),
            )
        except AuthorizationError as exc:
            raise _unauthorized(exc) from exc
        try:
            payload = self.host.shadows.get_json(thing, shadow)
        except ShadowNotFoundError as exc:
            raise model.ResourceNotFoundError(
                message="No shadow found", resource_type="shadow"
            ) from exc
        return _Reply(model.GetThingShadowResponse(payload=payload))

    def _update_thing_shadow(
        self, component: str, request: model.UpdateThingShadowRequest
    ) -> _Reply:
        thing, shadow = request.thing_name, request.shadow_name or ""
        if not thing:
            raise model.InvalidArgumentsError(message="ThingName absent in request")
        try:
            self._authorize(
                component,
                SHADOW_MANAGER_SERVICE,
                _OP + "UpdateThingShadow",
                self._shadow_resource(thing, shadow),
            )
        except AuthorizationError as exc:
            raise _unauthorized(exc) from exc
        try:
            document = json.loads(request.payload or b"")
            accepted = self.host.shadows.update(thing, shadow, document["state"])
        except (ValueError, KeyError, TypeError) as exc:
            raise model.InvalidArgumentsError(message=f"Invalid JSON\n{exc}") from exc
        return _Reply(model.UpdateThingShadowResponse(payload=json.dumps(accepted).encode()))


def _qos(value: str | None) -> int:
    # MqttProxyIPCAgent.validateQoS
    if value is None:
        raise model.InvalidArgumentsError(message="QoS is required")
    if value == model.QOS.AT_LEAST_ONCE:
        return 1
    if value == model.QOS.AT_MOST_ONCE:
        return 0
    raise model.InvalidArgumentsError(message=f"Invalid QoS value: {value}")


def _java_split(topic: str) -> list[str]:
    # String.split("/") drops trailing empty strings
    parts = topic.split("/")
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return parts


def _is_wildcard(topic: str) -> bool:
    """SubscriptionTrie.isWildcard: a '+' level anywhere or a '#' last level."""
    levels = _java_split(topic)
    return any(level == "+" for level in levels) or levels[-1] == "#"


def _subscription_matches(pattern: str, topic: str) -> bool:
    """Whether a publish on ``topic`` reaches a subscription ``pattern`` (SubscriptionTrie.get)."""
    sub = _java_split(pattern)
    levels = _java_split(topic)
    # walk the subscription as the trie does: sets of positions reached after each topic level
    reached = {0}
    matched = False
    for level in levels:
        following: set[int] = set()
        for pos in reached:
            if pos >= len(sub):
                continue
            if sub[pos] == level or sub[pos] == "+":
                following.add(pos + 1)
            elif sub[pos] == "#":
                following.add(pos + 1)
                if pos == len(sub) - 1:
                    matched = True  # a '#' node's callbacks fire when it is reached
        reached = following
        if not reached:
            break
    return matched or len(sub) in reached

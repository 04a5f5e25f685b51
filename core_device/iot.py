"""The nucleus' MQTT side of PublishToIoTCore/SubscribeToIoTCore: the spooler and a link to a broker.

Modelled on aws-greengrass-nucleus a28341c41509bb52b0596212992cf5e6e5c57327,
``src/main/java/com/aws/greengrass/mqttclient/``:

- ``spool/Spool.java``: in memory by default, ``maxSizeInBytes`` default 2.5 MiB counted in payload
  bytes; a message larger than the spool is refused; when a new message overflows the spool the
  QoS 0 messages are dropped oldest first while it is still over, and if it is still over the new
  message is refused ("Message spool is full. Message could not be added.").
- ``MqttClient.java``: a publish is accepted once spooled (PublishToIoTCore answers then); while
  offline a QoS 0 publish is refused unless ``keepQos0WhenOffline`` and spooled QoS 0 messages are
  dropped when the connection is interrupted; a failed publish is retried up to ``maxPublishRetry``
  (default 100) times, PUBACK reason codes 0, 16, 144, 153 and 135 (not authorized) are not
  retried; the default maximum message size is 128 KiB.
- Nothing survives a restart: a new Spooler starts empty (the in-memory spool).
"""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core_device.host import IotPublishError, IotSubscribeError, MessageCallback

log = logging.getLogger(__name__)

DEFAULT_SPOOL_SIZE_BYTES = int(
    2.5 * 1024 * 1024
)  # Spool.java DEFAULT_SPOOL_MAX_MESSAGE_QUEUE_SIZE_IN_BYTES
DEFAULT_MAX_PUBLISH_RETRY = 100  # MqttClient.java DEFAULT_MQTT_MAX_OF_PUBLISH_RETRY_COUNT
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024  # MqttClient.java DEFAULT_MQTT_MAX_OF_MESSAGE_SIZE_IN_BYTES
# MqttClient.java nonRetryablePubAckReasonCodes: success, no subscribers, topic invalid,
# payload format invalid, not authorized
NON_RETRYABLE_PUBACK = frozenset({0, 16, 144, 153, 135})


class SpoolerFullError(IotPublishError):
    """The spool cannot take the message (Spool.queueCapacityCheck)."""


@dataclass
class SpoolMessage:
    """One spooled publish."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    retried: int = 0


class Spooler:
    """The nucleus' in-memory spool of messages waiting for IoT Core."""

    def __init__(
        self, max_size_bytes: int = DEFAULT_SPOOL_SIZE_BYTES, keep_qos0_when_offline: bool = False
    ) -> None:
        if max_size_bytes <= 0:
            raise ValueError(f"spooler maxSizeInBytes must be positive, got {max_size_bytes}")
        self.max_size_bytes = max_size_bytes
        self.keep_qos0_when_offline = keep_qos0_when_offline
        self._messages: dict[int, SpoolMessage] = {}
        self._queue: deque[int] = deque()
        self._ids = itertools.count()
        self._size = 0
        self._cond = threading.Condition()

    @property
    def size_bytes(self) -> int:
        """Payload bytes spooled now."""
        with self._cond:
            return self._size

    def __len__(self) -> int:
        with self._cond:
            return len(self._messages)

    def messages(self) -> list[SpoolMessage]:
        """The spooled messages in send order."""
        with self._cond:
            return [self._messages[i] for i in self._queue if i in self._messages]

    def add(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> SpoolMessage:
        """Spool a message or raise SpoolerFullError (Spool.addMessage)."""
        size = len(payload)
        with self._cond:
            if size > self.max_size_bytes:
                raise SpoolerFullError("Message is larger than the size of message spool.")
            self._size += size
            if self._size > self.max_size_bytes:
                self._drop_qos0(until_fits=True)
            if self._size > self.max_size_bytes:
                self._size -= size
                raise SpoolerFullError("Message spool is full. Message could not be added.")
            message = SpoolMessage(next(self._ids), topic, bytes(payload), qos, retain)
            self._messages[message.id] = message
            self._queue.append(message.id)
            self._cond.notify_all()
            return message

    def _drop_qos0(self, *, until_fits: bool) -> None:
        for message_id in list(self._queue):
            if until_fits and self._size <= self.max_size_bytes:
                return
            message = self._messages.get(message_id)
            if message is not None and message.qos == 0:
                self._remove(message_id)

    def drop_qos0(self) -> None:
        """Drop every spooled QoS 0 message (the connection was interrupted)."""
        with self._cond:
            self._drop_qos0(until_fits=False)

    def _remove(self, message_id: int) -> None:
        message = self._messages.pop(message_id, None)
        if message is not None:
            self._size -= len(message.payload)

    def remove(self, message_id: int) -> None:
        """Forget a message (sent, or given up)."""
        with self._cond:
            self._remove(message_id)

    def pop(self, timeout_s: float | None = None) -> SpoolMessage | None:
        """Take the next message id off the queue (it stays spooled until removed)."""
        with self._cond:
            while True:
                while self._queue:
                    message = self._messages.get(self._queue.popleft())
                    if message is not None:
                        return message
                if not self._cond.wait(timeout_s):
                    return None

    def retry_first(self, message_id: int) -> None:
        """Put a message back at the head of the queue (Spool.addId)."""
        with self._cond:
            if message_id in self._messages:
                self._queue.appendleft(message_id)
                self._cond.notify_all()


@dataclass
class _Subscription:
    topic: str
    qos: int
    callback: MessageCallback
    acknowledged: bool = False  # the broker granted it (a later identical one is covered)


class MqttLink:
    """An IotLink to a real MQTT broker over mutual TLS, draining the spool while connected."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
        spooler: Spooler | None = None,
        max_publish_retry: int = DEFAULT_MAX_PUBLISH_RETRY,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        operation_timeout_s: float = 10.0,
    ) -> None:
        self.spooler = spooler or Spooler()
        self.max_publish_retry = max_publish_retry
        self.max_message_size = max_message_size
        self._timeout = operation_timeout_s
        self._host, self._port = host, port
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        context.load_cert_chain(str(cert_file), str(key_file))
        self._client.tls_set_context(context)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._lock = threading.RLock()
        self._connected = threading.Event()
        self._ever_connected = False
        self._running = False
        self._inflight: dict[int, SpoolMessage] = {}
        self._connection = 0  # counts disconnects: a publish sent on an older one is lost
        self._early: dict[int, int] = {}
        self._subscriptions: dict[int, _Subscription] = {}
        self._handles = itertools.count(1)
        self._subacks: dict[int, tuple[threading.Event, list[int]]] = {}
        self._drain: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or the timeout passes."""
        return self._connected.wait(timeout_s)

    def start(self) -> None:
        """Connect in the background (reconnecting on loss) and start draining the spool."""
        self._running = True
        self._client.connect_async(self._host, self._port, keepalive=5, clean_start=True)
        self._client.loop_start()
        self._drain = threading.Thread(target=self._drain_loop, name="mqtt-spool", daemon=True)
        self._drain.start()

    def stop(self) -> None:
        """Disconnect and stop; spooled messages are kept in the spooler object."""
        self._running = False

        def halt() -> None:
            self._client.disconnect()
            self._client.loop_stop()

        # paho's loop_stop joins its network thread without a bound; never let a stop hang
        stopper = threading.Thread(target=halt, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(timeout=5)
        if stopper.is_alive():
            log.warning("MQTT link %s: network thread did not stop within 5 s", self._host)
        if self._drain is not None:
            self._drain.join(timeout=5)

    # -- IotLink ---------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Spool a message for the broker (MqttClient.publish)."""
        if len(payload) > self.max_message_size:
            raise IotPublishError(
                f"The publishing message size {len(payload)} bytes exceeds the configured limit of "
                f"{self.max_message_size} bytes"
            )
        if not topic or any(c in topic for c in "+#"):
            raise IotPublishError(f"Invalid publish topic {topic!r}")
        if not self.connected and qos == 0 and not self.spooler.keep_qos0_when_offline:
            raise IotPublishError("Device is offline. Dropping QoS 0 message.")
        self.spooler.add(topic, payload, qos, retain)

    def subscribe(self, topic: str, qos: int, callback: MessageCallback) -> int:
        """Subscribe as the nucleus' MQTT client does (MqttClient.java ``subscribe``):

        - a filter an existing cloud subscription already covers succeeds at once
          (MqttClient.java ``subscribe``: ``subscriptionTopics`` already holds it);
        - before the first connection the request waits for it (the client's connect future,
          MqttClient.java ~:479), up to the operation timeout;
        - after a connection was lost, the MQTT 5 client fails it at once
          (``AwsIotMqtt5Client`` is built with ``FAIL_ALL_ON_DISCONNECT``, and
          MqttProxyIPCAgent.java answers ServiceError);
        - connected: the broker's SUBACK decides.
        """
        handle = next(self._handles)
        with self._lock:
            covered = any(
                s.topic == topic and s.qos >= qos and s.acknowledged
                for s in self._subscriptions.values()
            )
            sub = _Subscription(topic, qos, callback)
            self._subscriptions[handle] = sub
        if covered:
            sub.acknowledged = True
            return handle
        if not self.connected and (self._ever_connected or not self._connected.wait(self._timeout)):
            with self._lock:
                self._subscriptions.pop(handle, None)
            why = "not connected" if self._ever_connected else "timed out waiting to connect"
            raise IotSubscribeError(f"cannot subscribe to {topic}: {why}")
        if self.connected:
            done = threading.Event()
            codes: list[int] = []
            with self._lock:
                rc, mid = self._client.subscribe(topic, qos)
                if rc == paho.MQTT_ERR_SUCCESS and mid is not None:
                    self._subacks[mid] = (done, codes)
            if rc == paho.MQTT_ERR_SUCCESS and not done.wait(self._timeout):
                codes.append(0x80)
            if rc != paho.MQTT_ERR_SUCCESS or any(c >= 0x80 for c in codes):
                with self._lock:
                    self._subscriptions.pop(handle, None)
                raise IotSubscribeError(f"broker refused subscription to {topic} ({codes or rc})")
            sub.acknowledged = True
        return handle

    def unsubscribe(self, handle: int) -> None:
        """Drop a subscription; the broker unsubscribes when no other one uses the filter."""
        with self._lock:
            sub = self._subscriptions.pop(handle, None)
            still_used = sub is not None and any(
                s.topic == sub.topic for s in self._subscriptions.values()
            )
        if sub is not None and not still_used and self.connected:
            self._client.unsubscribe(sub.topic)

    # -- paho callbacks --------------------------------------------------------------------
    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connect refused: %s", reason)
            return
        with self._lock:
            topics = {(s.topic, s.qos) for s in self._subscriptions.values()}
        for topic, qos in topics:
            client.subscribe(topic, qos)
        self._ever_connected = True
        self._connected.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self._connected.clear()
        with self._lock:
            self._connection += 1
            inflight = list(self._inflight.values())
            self._inflight.clear()
            # a PUBACK that came before its publish was recorded belongs to this connection;
            # kept, it could settle an unrelated message once paho's message ids wrap
            self._early.clear()
        self._forget_in_client()
        for message in inflight:
            self._failed(message, None)
        if not self.spooler.keep_qos0_when_offline:
            self.spooler.drop_qos0()

    def _forget_in_client(self, mid: int | None = None) -> None:
        # This link connects with a clean session every time, so it models a reconnect whose
        # session is *not* resumed (a restarted broker, an expired session). The nucleus' MQTT 5
        # client then fails its unacknowledged publishes back to the spooler, which sends them
        # again (AwsIotMqtt5Client.java:334-351: session resumption with a 7-day expiry and
        # ClientOfflineQueueBehavior.FAIL_ALL_ON_DISCONNECT, whose QoS 1 publishes that were
        # sent but not acknowledged wait for a resumed session and fail only without one;
        # MqttClient.publishSingleSpoolerMessage re-adds a failed message). A resumed session,
        # where the client itself resends them, is not modelled: it delivers the same messages.
        # paho keeps each QoS 1 message it was handed, even one refused with MQTT_ERR_NO_CONN,
        # and resends it after reconnecting (paho client.py publish() and
        # _messages_reconnect_reset_out(), 2.2.0): drop those copies so only the spooler retries.
        client = self._client
        with client._out_message_mutex:
            if mid is None:
                client._out_messages.clear()
                client._inflight_messages = 0
                return
            message = client._out_messages.pop(mid, None)
            if message is not None and message.state == paho.mqtt_ms_wait_for_puback:
                # it held one of paho's in-flight slots (publish() counts it); give it back
                client._inflight_messages = max(0, client._inflight_messages - 1)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        with self._lock:
            message = self._inflight.pop(mid, None)
            if message is None:
                self._early[mid] = reason.value
                return
        self._settle(message, reason.value)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        with self._lock:
            waiter = self._subacks.pop(mid, None)
        if waiter is not None:
            waiter[1].extend(r.value for r in reasons)
            waiter[0].set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            targets = [
                s.callback
                for s in self._subscriptions.values()
                if paho.topic_matches_sub(s.topic, message.topic)
            ]
        for callback in targets:
            try:
                callback(message.topic, bytes(message.payload))
            except Exception:
                log.exception("IoT Core subscriber failed on %s", message.topic)

    # -- spool draining (MqttClient.publishSingleSpoolerMessage) ------------------------------
    def _settle(self, message: SpoolMessage, reason_code: int) -> None:
        if reason_code < 0x80 or reason_code in NON_RETRYABLE_PUBACK:
            # success, or a code retrying will not fix: the message is gone either way
            self.spooler.remove(message.id)
            return
        self._failed(message, reason_code)

    def _failed(self, message: SpoolMessage, reason_code: int | None) -> None:
        if self.max_publish_retry == -1 or message.retried < self.max_publish_retry:
            message.retried += 1
            self.spooler.retry_first(message.id)
        else:
            log.error(
                "dropping %s after %d retries (last code %s)",
                message.topic,
                message.retried,
                reason_code,
            )
            self.spooler.remove(message.id)

    def _drain_loop(self) -> None:
        while self._running:
            if not self._connected.wait(0.2):
                continue
            message = self.spooler.pop(timeout_s=0.2)
            if message is None:
                continue
            # Not under self._lock: paho calls _on_publish holding its own message lock, and
            # publish() takes that lock, so holding ours here would deadlock. A PUBACK that
            # comes back before the message is recorded as in flight waits in _early.
            with self._lock:
                connection = self._connection
            info = self._client.publish(message.topic, message.payload, message.qos, message.retain)
            early = None
            sent = info.rc == paho.MQTT_ERR_SUCCESS
            if sent:
                with self._lock:
                    early = self._early.pop(info.mid, None)
                    # one thread publishes: any other early PUBACK belongs to a publish this loop
                    # already gave up on; kept, it could settle a later message once mids wrap
                    self._early.clear()
                    if early is None and self._connection == connection:
                        self._inflight[info.mid] = message
                    elif early is None:
                        sent = False  # the connection dropped before we recorded it
            if not sent:
                if message.qos > 0:
                    self._forget_in_client(info.mid)
                self._failed(message, None)
                self._connected.wait(0.5)
            elif early is not None:
                self._settle(message, early)


def spooler_from_config(config: dict[str, object] | None) -> Spooler:
    """A Spooler from the nucleus' ``mqtt.spooler`` configuration (Spool.setSpoolerConfigFromDeviceConfig)."""
    config = config or {}
    size = config.get("maxSizeInBytes", DEFAULT_SPOOL_SIZE_BYTES)
    keep = config.get("keepQos0WhenOffline", False)
    if not isinstance(size, int | float) or isinstance(size, bool):
        raise ValueError(f"mqtt.spooler.maxSizeInBytes must be a number, got {size!r}")
    return Spooler(int(size), bool(keep) if not isinstance(keep, str) else keep.lower() == "true")

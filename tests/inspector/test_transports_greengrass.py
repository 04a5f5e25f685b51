"""The Greengrass IPC adapter against a fake client at its boundary (callbacks that raise too)."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import pytest
from awsiot.eventstreamrpc import ConnectionClosedError
from awsiot.greengrasscoreipc.model import (
    QOS,
    ComponentUpdatePolicyEvents,
    ConfigurationUpdateEvent,
    ConfigurationUpdateEvents,
    ConfigurationValidityReport,
    ConfigurationValidityStatus,
    GetConfigurationResponse,
    InvalidArgumentsError,
    PostComponentUpdateEvent,
    PreComponentUpdateEvent,
    UnauthorizedError,
    ValidateConfigurationUpdateEvent,
    ValidateConfigurationUpdateEvents,
)

from inspector.transports.base import TransportError
from inspector.transports.greengrass import GreengrassTransport, NucleusLostError


class FakeOperation:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeIpcClient:
    """Stands in for GreengrassCoreIPCClientV2: same method names and keyword arguments.

    As in the SDK (awsiot/greengrasscoreipc/clientv2.py) every operation has an ``*_async`` form
    returning a ``concurrent.futures.Future`` and a blocking form that is ``*_async(...).result()``
    with no timeout; subscriptions return ``(future, operation)``. ``mode`` models the nucleus:
    ``"ok"`` answers, ``"hang"`` never answers (a stalled nucleus: the future stays pending), and
    ``"drop"`` is a closed connection, on which the SDK raises ``ConnectionClosedError`` when the
    operation is started (awsiot/eventstreamrpc.py ``Connection._new_stream``); the V2 client
    never reconnects.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, dict[str, Any]] = {}
        self.config: dict[str, Any] = {"reject": 0.4}
        self.fail_publish: Exception | None = None
        self.fail_get_config = False
        self.operations: list[FakeOperation] = []
        self.closed = False
        self.mode = "ok"
        self.validating: set[str] = set()

    def _answer(self, name: str, kw: dict[str, Any], value: Any = None) -> Future[Any]:
        self.calls.append((name, kw))
        if self.mode == "drop":
            raise ConnectionClosedError()
        future: Future[Any] = Future()
        if self.mode == "hang":
            return future
        if isinstance(value, Exception):
            future.set_exception(value)
        else:
            future.set_result(value)
        return future

    def publish_to_iot_core_async(self, **kw: Any) -> Future[Any]:
        return self._answer("publish_to_iot_core", kw, self.fail_publish)

    def publish_to_topic_async(self, **kw: Any) -> Future[Any]:
        return self._answer("publish_to_topic", kw, self.fail_publish)

    def _subscribe(self, name: str, kw: dict[str, Any]) -> tuple[Future[Any], FakeOperation]:
        future = self._answer(name, kw)
        self.handlers[name] = kw
        op = FakeOperation()
        self.operations.append(op)
        return future, op

    def subscribe_to_configuration_update_async(
        self, **kw: Any
    ) -> tuple[Future[Any], FakeOperation]:
        return self._subscribe("config", kw)

    def subscribe_to_component_updates_async(self, **kw: Any) -> tuple[Future[Any], FakeOperation]:
        return self._subscribe("updates", kw)

    def subscribe_to_iot_core_async(self, **kw: Any) -> tuple[Future[Any], FakeOperation]:
        return self._subscribe("iot_core", kw)

    def update_state_async(self, **kw: Any) -> Future[Any]:
        return self._answer("update_state", kw)

    def get_configuration_async(self, **kw: Any) -> Future[Any]:
        if self.fail_get_config:
            return self._answer("get_configuration", kw, RuntimeError("nucleus busy"))
        response = GetConfigurationResponse(
            component_name="com.lineguard.Inspector", value=self.config
        )
        return self._answer("get_configuration", kw, response)

    def defer_component_update_async(self, **kw: Any) -> Future[Any]:
        return self._answer("defer_component_update", kw)

    def subscribe_to_validate_configuration_updates_async(
        self, **kw: Any
    ) -> tuple[Future[Any], FakeOperation]:
        return self._subscribe("validate", kw)

    def send_configuration_validity_report_async(self, **kw: Any) -> Future[Any]:
        # the nucleus refuses a report without a deployment id, or one no validation is waiting
        # for (ConfigStoreIPCEventStreamAgent.handleRequest of SendConfigurationValidityReport:
        # InvalidArgumentsError "Validation request either timed out or was never made")
        report = kw["configuration_validity_report"]
        if report.deployment_id is None or report.deployment_id not in self.validating:
            error = InvalidArgumentsError(
                message="Validation request either timed out or was never made"
            )
            return self._answer("send_configuration_validity_report", kw, error)
        self.validating.discard(report.deployment_id)
        return self._answer("send_configuration_validity_report", kw)

    def validate(self, deployment_id: str, configuration: dict[str, Any]) -> None:
        """What the nucleus does for a deployment that changes this component's configuration
        but not its version: send the whole proposed configuration and wait for a report
        (DynamicComponentConfigurationValidator.validate; ConfigStoreIPCEventStreamAgent
        .validateConfiguration)."""
        self.validating.add(deployment_id)
        event = ValidateConfigurationUpdateEvents(
            validate_configuration_update_event=ValidateConfigurationUpdateEvent(
                configuration=configuration, deployment_id=deployment_id
            )
        )
        self.handlers["validate"]["on_stream_event"](event)

    def reports(self) -> list[ConfigurationValidityReport]:
        return [
            kw["configuration_validity_report"]
            for name, kw in self.calls
            if name == "send_configuration_validity_report"
        ]

    def __getattr__(self, name: str) -> Any:
        # the blocking forms, as clientv2 defines them: the async form's result, unbounded
        if not name.endswith("_async") and hasattr(type(self), f"{name}_async"):
            async_form = getattr(self, f"{name}_async")

            def blocking(**kw: Any) -> Any:
                out = async_form(**kw)
                if isinstance(out, tuple):
                    return out[0].result(), out[1]
                return out.result()

            return blocking
        raise AttributeError(name)

    def close(self) -> None:
        self.closed = True


def config_event() -> ConfigurationUpdateEvents:
    return ConfigurationUpdateEvents(
        configuration_update_event=ConfigurationUpdateEvent(
            component_name="com.lineguard.Inspector", key_path=["reject"]
        )
    )


def pre_update(deployment: str) -> ComponentUpdatePolicyEvents:
    return ComponentUpdatePolicyEvents(
        pre_update_event=PreComponentUpdateEvent(deployment_id=deployment, is_ggc_restarting=False)
    )


def test_publish_upstream_is_qos1_to_iot_core() -> None:
    client = FakeIpcClient()
    GreengrassTransport(client).publish_upstream("lineguard/p/l/s/d/results", b'{"a":1}')
    name, kw = client.calls[0]
    assert name == "publish_to_iot_core"
    assert kw == {
        "topic_name": "lineguard/p/l/s/d/results",
        "qos": QOS.AT_LEAST_ONCE,
        "payload": b'{"a":1}',
    }


def test_publish_local_sends_a_binary_message() -> None:
    client = FakeIpcClient()
    GreengrassTransport(client).publish_local("lineguard/local/s1/reject", b'{"v":1}')
    name, kw = client.calls[0]
    assert name == "publish_to_topic" and kw["topic"] == "lineguard/local/s1/reject"
    assert kw["publish_message"].binary_message.message == b'{"v":1}'


def test_refused_publish_raises_transport_error() -> None:
    client = FakeIpcClient()
    client.fail_publish = UnauthorizedError(message="not authorized for topic")
    transport = GreengrassTransport(client)
    with pytest.raises(TransportError, match="UnauthorizedError"):
        transport.publish_upstream("lineguard/other/results", b"{}")
    with pytest.raises(TransportError, match="local publish"):
        transport.publish_local("lineguard/local/s1/reject", b"{}")
    assert "UnauthorizedError" in (transport.last_error or "")


def test_configuration_updates_deliver_the_full_configuration() -> None:
    client = FakeIpcClient()
    got: list[dict[str, Any]] = []
    GreengrassTransport(client).on_config(got.append)
    assert got == [{"reject": 0.4}]  # the current configuration, read at start
    handler = client.handlers["config"]["on_stream_event"]
    client.config = {"reject": 0.5}
    handler(config_event())
    assert got == [{"reject": 0.4}, {"reject": 0.5}]
    assert client.handlers["config"]["key_path"] == []
    # subscribed before reading, so an update between the two is not missed
    names = [name for name, _ in client.calls]
    assert names.index("config") < names.index("get_configuration")


def test_stream_callbacks_never_raise() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client)

    def explode(doc: dict[str, Any]) -> None:
        raise ValueError("bad callback")

    transport.on_config(explode)
    transport.on_component_update(lambda: 1 / 0 == 0)  # the gate itself raises
    config = client.handlers["config"]
    updates = client.handlers["updates"]
    config["on_stream_event"](config_event())  # user callback raises: swallowed and logged
    client.fail_get_config = True
    config["on_stream_event"](config_event())  # the IPC call inside raises
    config["on_stream_event"](None)  # a malformed event
    updates["on_stream_event"](object())  # an event of an unexpected shape
    updates["on_stream_event"](pre_update("d-9"))  # gate raised → defer, not crash
    assert config["on_stream_error"](RuntimeError("stream broke")) is False  # keep the stream
    config["on_stream_closed"]()
    assert "stream broke" in (transport.last_error or "")
    defers = [kw for name, kw in client.calls if name == "defer_component_update"]
    assert defers[-1]["deployment_id"] == "d-9" and defers[-1]["recheck_after_ms"] > 0


def test_component_updates_wait_for_in_flight_frames() -> None:
    client = FakeIpcClient()
    in_flight = [3]
    transport = GreengrassTransport(client, defer_recheck_ms=2000)
    transport.on_component_update(lambda: in_flight[0] == 0)
    handler = client.handlers["updates"]["on_stream_event"]
    handler(pre_update("dep-1"))
    in_flight[0] = 0
    handler(pre_update("dep-1"))
    handler(ComponentUpdatePolicyEvents(post_update_event=PostComponentUpdateEvent()))
    defers = [kw for name, kw in client.calls if name == "defer_component_update"]
    assert defers == [
        {"deployment_id": "dep-1", "message": "frames in flight", "recheck_after_ms": 2000},
        {"deployment_id": "dep-1", "message": "ready", "recheck_after_ms": 0},
    ]
    assert transport.deferrals == 1


def test_close_closes_streams_and_client() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client)
    transport.on_config(lambda doc: None)
    transport.on_component_update(lambda: True)
    transport.close()
    assert client.closed and all(op.closed for op in client.operations)


def test_every_ipc_call_is_bounded_by_a_timeout() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client, call_timeout_s=0.05, max_timeouts=3)
    client.mode = "hang"
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out after 0.05 s"):
        transport.publish_upstream("lineguard/p/l/s/d/results", b"{}")
    with pytest.raises(TransportError, match="timed out"):
        transport.publish_local("lineguard/local/s1/heartbeat", b"{}")
    assert time.monotonic() - started < 2.0
    assert transport.lost() is None  # two timeouts: maybe a busy nucleus, not yet a lost one
    client.mode = "ok"
    transport.publish_local("lineguard/local/s1/heartbeat", b"{}")  # an answer resets the count
    client.mode = "hang"
    for _ in range(2):
        with pytest.raises(TransportError):
            transport.publish_local("lineguard/local/s1/heartbeat", b"{}")
    assert transport.lost() is None
    with pytest.raises(TransportError):
        transport.publish_upstream("lineguard/p/l/s/d/results", b"{}")
    assert "3 IPC calls in a row timed out" in (transport.lost() or "")
    calls = len(client.calls)
    with pytest.raises(NucleusLostError):  # once lost, calls fail at once (no reconnect exists)
        transport.publish_local("lineguard/local/s1/heartbeat", b"{}")
    assert len(client.calls) == calls


def test_a_refusal_is_an_answer_not_a_lost_nucleus() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client, call_timeout_s=0.05, max_timeouts=2)
    client.fail_publish = UnauthorizedError(message="not authorized")
    for _ in range(5):
        with pytest.raises(TransportError, match="UnauthorizedError"):
            transport.publish_upstream("lineguard/other/results", b"{}")
    assert transport.lost() is None


def test_a_closed_connection_means_the_nucleus_is_lost() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client, call_timeout_s=0.05)
    client.mode = "drop"
    with pytest.raises(NucleusLostError, match="connection closed"):
        transport.publish_local("lineguard/local/s1/reject", b"{}")
    assert "connection closed" in (transport.lost() or "")


def test_a_subscription_closed_by_the_nucleus_means_it_is_lost() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client, call_timeout_s=0.05)
    transport.on_component_update(lambda: True)
    assert transport.lost() is None
    client.handlers["updates"]["on_stream_closed"]()
    assert "component update stream closed" in (transport.lost() or "")
    quiet = GreengrassTransport(FakeIpcClient())
    quiet.on_component_update(lambda: True)
    quiet.close()  # our own close closes the streams: not a loss
    assert quiet.lost() is None


def test_a_subscription_that_hangs_is_bounded() -> None:
    client = FakeIpcClient()
    client.mode = "hang"
    transport = GreengrassTransport(client, call_timeout_s=0.05)
    with pytest.raises(TransportError, match="timed out"):
        transport.on_component_update(lambda: True)


def test_validation_reports_accepted_or_rejected_with_the_message() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client)
    seen: list[dict[str, Any]] = []

    def validator(doc: dict[str, Any]) -> str | None:
        seen.append(doc)
        return None if doc.get("runtime", {}).get("max_batch") == 8 else "max_batch: bad"

    transport.on_validate(validator)
    client.validate("dep-ok", {"runtime": {"max_batch": 8}})
    client.validate("dep-bad", {"runtime": {"max_batch": 0}})
    good, bad = client.reports()
    assert (good.status, good.deployment_id) == (ConfigurationValidityStatus.ACCEPTED, "dep-ok")
    assert (bad.status, bad.deployment_id) == (ConfigurationValidityStatus.REJECTED, "dep-bad")
    assert bad.message == "max_batch: bad"
    assert seen == [{"runtime": {"max_batch": 8}}, {"runtime": {"max_batch": 0}}]
    assert not client.validating  # every validation the nucleus waited for got its report


def test_a_validator_that_raises_rejects_and_the_stream_stays_open() -> None:
    client = FakeIpcClient()
    transport = GreengrassTransport(client)
    transport.on_validate(lambda doc: str(1 / 0))
    client.validate("dep-1", {"runtime": {}})
    (report,) = client.reports()
    assert report.status == ConfigurationValidityStatus.REJECTED
    assert "ZeroDivisionError" in (report.message or "")
    client.handlers["validate"]["on_stream_event"](object())  # an odd event: logged, no report
    assert len(client.reports()) == 1 and transport.lost() is None

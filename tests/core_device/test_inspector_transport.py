"""The inspector's Greengrass transport against the stand-in's IPC, with the real device SDK."""

from __future__ import annotations

from core_device.host import InMemoryHost
from inspector.transports.base import TransportError
from inspector.transports.greengrass import GreengrassTransport
from tests.core_device.conftest import ClientFactory

INSPECTOR = "com.lineguard.Inspector"


def test_a_refused_subscription_is_not_a_lost_nucleus(
    host: InMemoryHost, ipc_client: ClientFactory
) -> None:
    # no IoT Core link (an outage at start, or a policy without the topic): SubscribeToIoTCore
    # is answered with an error, and the SDK then closes that stream
    acl = {
        "aws.greengrass.ipc.mqttproxy": {
            "p:1": {"operations": ["aws.greengrass#SubscribeToIoTCore"], "resources": ["*"]}
        },
        "aws.greengrass.ipc.pubsub": {
            "p:2": {"operations": ["aws.greengrass#PublishToTopic"], "resources": ["*"]}
        },
    }
    host.add_component(INSPECTOR, {"accessControl": acl})
    transport = GreengrassTransport(ipc_client(INSPECTOR), call_timeout_s=5)
    try:
        try:
            transport.subscribe_upstream("lineguard/demo/dev-1/ack", lambda payload: None)
        except TransportError as exc:
            assert "offline" in str(exc)
        else:
            raise AssertionError("the subscription should have been refused")
        assert transport.lost() is None  # the component keeps running: it retries later
        transport.publish_local("lineguard/local/s1/heartbeat", b"{}")  # the nucleus still answers
        assert transport.lost() is None
    finally:
        transport.close()

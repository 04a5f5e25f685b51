"""accessControl enforcement, with cases taken from the nucleus' own tests."""

import json
from pathlib import Path

import pytest

from core_device.authorization import (
    MQTT_PROXY_SERVICE,
    PUBSUB_SERVICE,
    AuthorizationError,
    AuthorizationHandler,
    AuthorizationPolicy,
    ResourceLookupPolicy,
    WildcardTrie,
    handler_for,
)

CASES = json.loads((Path(__file__).parent / "data" / "wildcard_trie_cases.json").read_text())


@pytest.mark.parametrize("method", sorted(CASES["cases"]))
def test_wildcard_trie_matches_like_the_nucleus_test(method: str) -> None:
    """Replays every add/assert of WildcardTrieTest.<method> (nucleus src/test/.../WildcardTrieTest.java)."""
    tries: dict[str, WildcardTrie] = {}
    checked = 0
    for step in CASES["cases"][method]:
        if step[0] == "add":
            tries.setdefault(step[1], WildcardTrie()).add(step[2])
            continue
        _, name, style, text, expected = step
        trie = tries.setdefault(name, WildcardTrie())
        got = trie.matches_standard(text) if style == "Standard" else trie.matches_mqtt(text)
        assert got is expected, f"{method}: {name}.matches{style}({text!r})"
        checked += 1
    assert checked > 10


def _handler(resources: set[str] | None, operations: set[str], destination: str = "ServiceA"):
    handler = AuthorizationHandler()
    handler.register_component("ServiceA", {"OpA", "OpB", "OpC"})
    handler.register_component("ServiceB", {"OpA", "OpB", "OpC"})
    handler.load_policies(
        destination,
        [
            AuthorizationPolicy(
                "Id1",
                frozenset({"compA", "compB"}),
                frozenset(operations),
                None if resources is None else frozenset(resources),
            )
        ],
    )
    return handler


def test_star_operation_allows_every_registered_operation() -> None:
    """AuthorizationHandlerTest.GIVEN_AuthZ_handler_WHEN_component_registered_THEN_auth_lookup_for_star_operation_works."""
    handler = _handler(None, {"*"})
    for principal in ("compA", "compB"):
        for op in ("OpA", "OpB", "OpC"):
            handler.is_authorized("ServiceA", principal, op, None)
    handler.is_authorized("ServiceA", "compB", "*", None)
    with pytest.raises(AuthorizationError):
        handler.is_authorized("ServiceA", "compC", "OpA", None)
    with pytest.raises(AuthorizationError):
        handler.is_authorized("ServiceB", "compA", "OpA", None)


def test_operations_not_granted_or_not_registered_are_refused() -> None:
    """AuthorizationHandlerTest.GIVEN_AuthZ_handler_WHEN_component_registered_THEN_auth_works (its refusals)."""
    handler = _handler(None, {"OpA"})
    handler.is_authorized("ServiceA", "compA", "OpA", None)
    with pytest.raises(AuthorizationError, match="not registered for operation Op"):
        handler.is_authorized("ServiceA", "compA", "Op", None)
    with pytest.raises(AuthorizationError):
        handler.is_authorized("ServiceA", "compA", "OpB", None)
    with pytest.raises(AuthorizationError):
        handler.is_authorized("ServiceA", "*", "OpA", None)
    with pytest.raises(AuthorizationError):
        handler.is_authorized("ServiceA", "compA", "*", None)


def test_wildcards_inside_resource_by_lookup_policy() -> None:
    """AuthorizationHandlerTest.GIVEN_AuthZ_handler_WHEN_service_registered_THEN_auth_lookup_with_wildcards_inside_resource_works."""
    handler = _handler({"abc*qw/+/qw*xyz*4/#"}, {"OpA"})
    mqtt = ResourceLookupPolicy.MQTT_STYLE
    handler.is_authorized("ServiceA", "compA", "OpA", "abc123qw/def/qwasxyzds4/2/4/ghj", mqtt)
    with pytest.raises(AuthorizationError):
        handler.is_authorized(
            "ServiceA", "compA", "OpA", "abc123qw/def/tyu/qwasxyzds4/2/4/ghj", mqtt
        )
    handler.is_authorized("ServiceA", "compA", "OpA", "abc12/3qw/def/qwasxyzds/4/2/4/ghj", mqtt)
    with pytest.raises(AuthorizationError):
        handler.is_authorized("ServiceA", "compA", "OpA", "abc123qw/def/qwasxyzds4/2/4/ghj")
    handler.is_authorized("ServiceA", "compA", "OpA", "abc123qw/+/qw4/5xyziuo/4/#")


def _recipe_handler(resources: list[str], service: str = PUBSUB_SERVICE) -> AuthorizationHandler:
    op = (
        "aws.greengrass#PublishToTopic"
        if service == PUBSUB_SERVICE
        else "aws.greengrass#PublishToIoTCore"
    )
    return handler_for(
        {"com.lineguard.Inspector": {service: {"p1": {"operations": [op], "resources": resources}}}}
    )


def test_pubsub_plus_is_literal_and_star_is_a_wildcard() -> None:
    """Local pub/sub uses matchesStandard (PubSubIPCEventStreamAgent.doAuthorization)."""
    op = "aws.greengrass#PublishToTopic"
    plus = _recipe_handler(["lineguard/local/+/reject"])
    with pytest.raises(AuthorizationError, match="not authorized"):
        plus.is_authorized(
            PUBSUB_SERVICE, "com.lineguard.Inspector", op, "lineguard/local/station-1/reject"
        )
    plus.is_authorized(PUBSUB_SERVICE, "com.lineguard.Inspector", op, "lineguard/local/+/reject")
    star = _recipe_handler(["lineguard/local/*/reject"])
    star.is_authorized(
        PUBSUB_SERVICE, "com.lineguard.Inspector", op, "lineguard/local/station-1/reject"
    )


def test_mqttproxy_accepts_mqtt_wildcards() -> None:
    """mqttproxy authorises with MQTT_STYLE (MqttProxyIPCAgent.doAuthorization)."""
    op = "aws.greengrass#PublishToIoTCore"
    handler = _recipe_handler(["lineguard/+/results", "fleet/#"], MQTT_PROXY_SERVICE)
    mqtt = ResourceLookupPolicy.MQTT_STYLE
    handler.is_authorized(
        MQTT_PROXY_SERVICE, "com.lineguard.Inspector", op, "lineguard/p1/results", mqtt
    )
    handler.is_authorized(MQTT_PROXY_SERVICE, "com.lineguard.Inspector", op, "fleet/a/b", mqtt)
    with pytest.raises(AuthorizationError):
        handler.is_authorized(
            MQTT_PROXY_SERVICE, "com.lineguard.Inspector", op, "lineguard/p1/x/results", mqtt
        )


def test_escapes_make_wildcard_characters_literal() -> None:
    """${*} is a literal '*' (WildcardTrie.getActualChar); a bare '?' resource is skipped (validateResource)."""
    op = "aws.greengrass#PublishToTopic"
    handler = _recipe_handler(["a/${*}/b", "c/?"])
    handler.is_authorized(PUBSUB_SERVICE, "com.lineguard.Inspector", op, "a/*/b")
    with pytest.raises(AuthorizationError):
        handler.is_authorized(PUBSUB_SERVICE, "com.lineguard.Inspector", op, "a/x/b")
    with pytest.raises(AuthorizationError):
        handler.is_authorized(PUBSUB_SERVICE, "com.lineguard.Inspector", op, "c/?")


def test_other_components_policies_do_not_authorise_a_component() -> None:
    """Principals of a parsed policy are the component that declared it (AuthorizationPolicyParser)."""
    op = "aws.greengrass#PublishToTopic"
    handler = handler_for(
        {
            "A": {PUBSUB_SERVICE: {"p": {"operations": [op], "resources": ["*"]}}},
            "B": {},
        }
    )
    handler.is_authorized(PUBSUB_SERVICE, "A", op, "t")
    with pytest.raises(AuthorizationError):
        handler.is_authorized(PUBSUB_SERVICE, "B", op, "t")


def test_policy_without_operations_is_ignored() -> None:
    """parseAuthorizationPolicyConfig skips a policy with missing operations."""
    handler = handler_for({"A": {PUBSUB_SERVICE: {"p": {"resources": ["*"]}}}})
    with pytest.raises(AuthorizationError):
        handler.is_authorized(PUBSUB_SERVICE, "A", "aws.greengrass#PublishToTopic", "t")

"""accessControl enforcement as the Greengrass nucleus does it.

A port of the nucleus' ``authorization/`` package (aws-greengrass-nucleus at
a28341c41509bb52b0596212992cf5e6e5c57327): ``WildcardTrie.java`` (resource matching),
``AuthorizationModule.java`` (permission store, resource validation), ``AuthorizationHandler.java``
(registered services and operations, lookup order) and ``AuthorizationPolicyParser.java``
(reading a component's ``accessControl``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

ANY = "*"

PUBSUB_SERVICE = "aws.greengrass.ipc.pubsub"  # ipc/modules/PubSubIPCService.java:23
MQTT_PROXY_SERVICE = "aws.greengrass.ipc.mqttproxy"  # ipc/modules/MqttProxyIPCService.java:24
LIFECYCLE_SERVICE = "aws.greengrass.ipc.lifecycle"  # ipc/modules/LifecycleIPCService.java:27
COMPONENT_METRIC_SERVICE = "aws.greengrass.ipc.componentmetric"  # ComponentMetricIPCService.java:23
TOKEN_EXCHANGE_SERVICE = "aws.greengrass.TokenExchangeService"  # tes/TokenExchangeService.java:35
SECRETS_MANAGER_SERVICE = "aws.greengrass.SecretManager"  # AuthorizationHandler.java
SHADOW_MANAGER_SERVICE = "aws.greengrass.ShadowManager"  # AuthorizationHandler.java
CLIENT_DEVICE_AUTH_SERVICE = "aws.greengrass.clientdevices.Auth"  # AuthorizationHandler.java
CLI_SERVICE = "aws.greengrass.Cli"  # AuthorizationHandler.java

_OP = "aws.greengrass#"

# AuthorizationHandler.java constructor: the services known before any component registers,
# each with its operations and "*"; ShadowManager.java registers the same shadow operations.
BUILTIN_OPERATIONS: Mapping[str, frozenset[str]] = {
    TOKEN_EXCHANGE_SERVICE: frozenset({"getCredentials"}),
    PUBSUB_SERVICE: frozenset({_OP + "PublishToTopic", _OP + "SubscribeToTopic", ANY}),
    MQTT_PROXY_SERVICE: frozenset({_OP + "PublishToIoTCore", _OP + "SubscribeToIoTCore", ANY}),
    SECRETS_MANAGER_SERVICE: frozenset({_OP + "GetSecretValue", ANY}),
    SHADOW_MANAGER_SERVICE: frozenset(
        {
            _OP + "GetThingShadow",
            _OP + "UpdateThingShadow",
            _OP + "DeleteThingShadow",
            _OP + "ListNamedShadowsForThing",
            ANY,
        }
    ),
    LIFECYCLE_SERVICE: frozenset({_OP + "PauseComponent", _OP + "ResumeComponent", ANY}),
    CLIENT_DEVICE_AUTH_SERVICE: frozenset(
        {
            _OP + "SubscribeToCertificateUpdates",
            _OP + "VerifyClientDeviceIdentity",
            _OP + "GetClientDeviceAuthToken",
            _OP + "AuthorizeClientDeviceAction",
            ANY,
        }
    ),
    CLI_SERVICE: frozenset(
        {
            _OP + "GetComponentDetails",
            _OP + "ListComponents",
            _OP + "RestartComponent",
            _OP + "StopComponent",
            _OP + "CreateLocalDeployment",
            _OP + "GetLocalDeploymentStatus",
            _OP + "ListLocalDeployments",
            _OP + "CreateDebugPassword",
            ANY,
        }
    ),
    COMPONENT_METRIC_SERVICE: frozenset({_OP + "PutComponentMetric", ANY}),
}


class AuthorizationError(Exception):
    """A request that the accessControl policies do not allow (nucleus AuthorizationException)."""


class ResourceLookupPolicy(Enum):
    """How resources match: ``*`` only, or ``*`` plus MQTT ``+``/``#`` (AuthorizationHandler.java)."""

    STANDARD = "STANDARD"
    MQTT_STYLE = "MQTT_STYLE"


_GLOB = "*"
_MULTI = "#"
_SINGLE = "+"
_SEP = "/"
_ESCAPE = "$"
_SINGLE_CHAR = "?"


def _escaped_char(text: str) -> str | None:
    """The character of a ``${c}`` escape at the start of ``text`` (WildcardTrie.getActualChar)."""
    if len(text) < 4:
        return None
    if text[0] == _ESCAPE and text[1] == "{" and text[3] == "}":
        return text[2]
    return None


class WildcardTrie:
    """Resource patterns of one (destination, principal, operation); a line-by-line port of WildcardTrie.java."""

    def __init__(self) -> None:
        self.is_terminal = False
        self.is_terminal_level = False
        self.is_wildcard = False
        self.is_mqtt_wildcard = False
        self.match_all = False
        self.children: dict[str, WildcardTrie] = {}

    def _child(self, key: str) -> WildcardTrie:
        # DefaultConcurrentHashMap.get creates the missing child
        node = self.children.get(key)
        if node is None:
            node = self.children[key] = WildcardTrie()
        return node

    def add(self, subject: str | None) -> None:
        """Add one resource pattern (WildcardTrie.add(String))."""
        if subject is None:
            return
        if subject == _GLOB:
            node = self._child(_GLOB)
            node.match_all = node.is_terminal = node.is_wildcard = True
            return
        if subject == _MULTI:
            node = self._child(_MULTI)
            node.match_all = node.is_terminal = node.is_mqtt_wildcard = True
            return
        if subject == _SINGLE:
            node = self._child(_SINGLE)
            node.is_terminal = node.is_mqtt_wildcard = True
            return
        if subject.startswith(_SINGLE + _SEP):
            node = self._child(_SINGLE)
            node.is_mqtt_wildcard = True
            node._add(subject[1:], True)
        self._add(subject, True)

    def _add(self, subject: str, is_terminal: bool) -> WildcardTrie:
        if not subject:
            self.is_terminal |= is_terminal
            return self
        length = len(subject)
        current = self
        built: list[str] = []
        i = 0
        while i < length:
            char = subject[i]
            if char == _GLOB:
                current = current._add("".join(built), False)._child(_GLOB)
                current.is_wildcard = True
                if i == length - 1:
                    current.is_terminal = is_terminal
                    return current
                return current._add(subject[i + 1 :], True)
            if char == _MULTI:
                terminal_level = current._add("".join(built), False)
                current = terminal_level._child(_MULTI)
                if i == length - 1:
                    current.is_terminal = True
                    # '#' is an MQTT wildcard only as a whole last level
                    if i > 0 and subject[i - 1] == _SEP:
                        current.is_mqtt_wildcard = True
                        current.match_all = True
                        terminal_level.is_terminal_level = True
                    return current
                return current._add(subject[i + 1 :], True)
            if char == _SINGLE:
                current = current._add("".join(built), False)._child(_SINGLE)
                if i == length - 1:
                    current.is_terminal = True
                    if i > 0 and subject[i - 1] == _SEP:
                        current.is_mqtt_wildcard = True
                    return current
                if i > 0 and subject[i - 1] == _SEP and subject[i + 1] == _SEP:
                    current.is_mqtt_wildcard = True
                return current._add(subject[i + 1 :], True)
            if char == _ESCAPE:
                actual = _escaped_char(subject[i:])
                if actual is not None:
                    built.append(actual)
                    i += 4
                    continue
            built.append(char)
            i += 1
        current = current._child("".join(built))
        current.is_terminal |= is_terminal
        return current

    def matches_standard(self, text: str | None) -> bool:
        """Match with ``*`` as the only wildcard; ``+`` and ``#`` are literal (matchesStandard)."""
        if text is None:
            return True
        if (self.is_wildcard and self.is_terminal) or (self.is_terminal and not text):
            return True
        pending: dict[str, WildcardTrie] = {}
        for key, value in list(self.children.items()):
            if value.is_wildcard and key == _GLOB:
                if value.matches_standard(text):
                    return True
                continue
            if text.startswith(key) and value.matches_standard(text[len(key) :]):
                return True
            if self.is_wildcard:
                # a '*' may swallow any run of characters before its next literal part
                found = text.find(key)
                while found >= 0:
                    pending[text[found + len(key) :]] = value
                    found = text.find(key, found + 1)
        if self.is_wildcard and pending:
            return any(node.matches_standard(rest) for rest, node in pending.items())
        return False

    def matches_mqtt(self, text: str | None) -> bool:
        """Match with ``*`` and MQTT ``+``/``#`` wildcards (matchesMQTT)."""
        if text is None:
            return True
        if (self.is_wildcard and self.is_terminal) or (self.is_terminal and not text):
            return True
        if self.is_mqtt_wildcard and (self.match_all or (self.is_terminal and _SEP not in text)):
            return True
        pending: dict[str, WildcardTrie] = {}
        for key, value in list(self.children.items()):
            if (value.is_wildcard and key == _GLOB) or (
                value.is_mqtt_wildcard and key in (_SINGLE, _MULTI)
            ):
                if value.matches_mqtt(text):
                    return True
                continue
            if text.startswith(key) and value.matches_mqtt(text[len(key) :]):
                return True
            # "abc/#" also matches "abc", and "abc/*xy/#" matches "abc/12xy"
            terminal_key = key[:-1]
            if value.is_terminal_level:
                if text == terminal_key:
                    return True
                if text.endswith(terminal_key):
                    key = terminal_key
            if self.is_wildcard:
                found = text.find(key)
                while 0 <= found < len(text):
                    pending[text[found + len(key) :]] = value
                    found = text.find(key, found + 1)
            if self.is_mqtt_wildcard:
                found = text.find(key)
                # what a '+' swallows must not cross a level
                while 0 <= found < len(text) and _SEP not in text[:found]:
                    pending[text[found + len(key) :]] = value
                    found = text.find(key, found + 1)
        if (self.is_wildcard or self.is_mqtt_wildcard) and pending:
            return any(node.matches_mqtt(rest) for rest, node in pending.items())
        return False

    def matches(self, text: str | None, policy: ResourceLookupPolicy) -> bool:
        """Match by the given lookup policy (WildcardTrie.matches)."""
        if policy is ResourceLookupPolicy.MQTT_STYLE:
            return self.matches_mqtt(text)
        return self.matches_standard(text)


def validate_resource(resource: str | None) -> None:
    """Refuse resources the nucleus skips when loading (AuthorizationModule.validateResource)."""
    if resource is None:
        return
    if not resource:
        raise AuthorizationError("Resource cannot be empty")
    i = 0
    while i < len(resource):
        char = resource[i]
        if char == _ESCAPE and i + 1 < len(resource) and resource[i + 1] == "{":
            actual = _escaped_char(resource[i:])
            if actual is None:
                raise AuthorizationError(
                    "Resource contains an invalid escape sequence. You can use ${*}, ${$}, or ${?}"
                )
            if actual not in (_GLOB, _ESCAPE, _SINGLE_CHAR):
                raise AuthorizationError(
                    "Resource contains an invalid escape sequence: ${" + actual + "}. "
                    "You can use ${*}, ${$}, or ${?}"
                )
            i += 3  # the escape's other three characters
        if char == _SINGLE_CHAR:
            raise AuthorizationError(
                "Resource contains invalid character: '?'. Use an escape sequence: ${?}. "
                "The '?' character isn't supported as a wildcard"
            )
        i += 1


@dataclass(frozen=True)
class AuthorizationPolicy:
    """One accessControl policy: who may call which operations on which resources."""

    policy_id: str
    principals: frozenset[str]
    operations: frozenset[str]
    resources: frozenset[str] | None = None
    description: str | None = None


def _as_strings(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        # Jackson reads a single string as a one-element set
        return frozenset({value})
    if isinstance(value, Iterable):
        return frozenset(str(v) for v in value)
    return frozenset({str(value)})


def _case_insensitive(config: Mapping[str, Any], key: str) -> Any:
    # AuthorizationPolicyParser's ObjectMapper uses ACCEPT_CASE_INSENSITIVE_PROPERTIES
    for name, value in config.items():
        if name.lower() == key.lower():
            return value
    return None


def parse_access_control(
    component: str, access_control: Mapping[str, Any] | str | None
) -> dict[str, list[AuthorizationPolicy]]:
    """A component's accessControl as policies per destination service (AuthorizationPolicyParser)."""
    if access_control is None:
        return {}
    if isinstance(access_control, str):
        # a leaf accessControl is parsed as JSON text (parseAllPoliciesForComponent)
        try:
            access_control = json.loads(access_control)
        except ValueError:
            return {}
    if not isinstance(access_control, Mapping):
        return {}
    out: dict[str, list[AuthorizationPolicy]] = {}
    for destination, policies in access_control.items():
        if not isinstance(policies, Mapping):
            # Jackson's convertValue fails for the whole map; the nucleus then loads nothing
            return {}
        parsed: list[AuthorizationPolicy] = []
        for policy_id, config in policies.items():
            if not isinstance(config, Mapping):
                return {}
            operations = _as_strings(_case_insensitive(config, "operations"))
            if not operations:
                continue  # "Policy operations are missing or invalid"
            description = _case_insensitive(config, "policyDescription")
            parsed.append(
                AuthorizationPolicy(
                    policy_id=str(policy_id),
                    principals=frozenset({component}),
                    operations=operations,
                    resources=_as_strings(_case_insensitive(config, "resources")),
                    description=None if description is None else str(description),
                )
            )
        out[str(destination)] = parsed
    return out


class AuthorizationHandler:
    """Registered services, their permissions, and the nucleus' lookup (AuthorizationHandler.java)."""

    def __init__(self) -> None:
        self._operations: dict[str, set[str]] = {
            name: set(ops) for name, ops in BUILTIN_OPERATIONS.items()
        }
        # destination -> principal -> operation -> trie (AuthorizationModule.resourceAuthZCompleteMap)
        self._permissions: dict[str, dict[str, dict[str, WildcardTrie]]] = {}

    def register_component(self, component: str, operations: Iterable[str]) -> None:
        """Register a service and its operations; ``*`` is always added (registerComponent)."""
        ops = set(operations)
        if not component or not ops:
            raise AuthorizationError("Invalid arguments for registerComponent()")
        ops.add(ANY)
        self._operations.setdefault(component, set()).update(ops)

    def load_policies(self, destination: str, policies: list[AuthorizationPolicy]) -> None:
        """Replace the destination's permissions with these policies (loadAuthorizationPolicies)."""
        if destination not in self._operations:
            return  # "Component not registered": the policies are ignored
        if any(not p.policy_id for p in policies):
            return  # "Malformed policy with empty/null policy IDs": none of them load
        store = self._permissions.setdefault(destination, {})
        store.clear()
        # invalid principals or operations are only logged by the nucleus; the permissions are added
        for policy in policies:
            for principal in policy.principals:
                for operation in policy.operations:
                    trie = store.setdefault(principal, {}).setdefault(operation, WildcardTrie())
                    if not policy.resources:
                        trie.add(None)
                        continue
                    for resource in policy.resources:
                        try:
                            validate_resource(resource)
                        except AuthorizationError:
                            continue  # that one resource is skipped
                        trie.add(resource)

    def is_authorized(
        self,
        destination: str,
        principal: str,
        operation: str,
        resource: str | None,
        lookup: ResourceLookupPolicy = ResourceLookupPolicy.STANDARD,
    ) -> None:
        """Raise AuthorizationError unless a policy allows this request (isAuthorized)."""
        if destination not in self._operations:
            raise AuthorizationError(f"Component not registered: {destination}")
        if operation not in self._operations[destination]:
            raise AuthorizationError(
                f"Component {destination} not registered for operation {operation}"
            )
        if resource is not None and not resource:
            raise AuthorizationError("Resource cannot be empty")
        # most specific first: (principal, op), (principal, *), (*, op), (*, *)
        combinations = ((principal, operation), (principal, ANY), (ANY, operation), (ANY, ANY))
        by_principal = self._permissions.get(destination, {})
        for who, what in combinations:
            trie = by_principal.get(who, {}).get(what)
            if trie is not None and trie.matches(resource, lookup):
                return
        raise AuthorizationError(
            f"Principal {principal} is not authorized to perform {destination}:{operation} "
            f"on resource {resource}"
        )


def handler_for(
    access_control: Mapping[str, Mapping[str, Any] | str | None],
) -> AuthorizationHandler:
    """An AuthorizationHandler loaded with every component's accessControl, merged per destination."""
    handler = AuthorizationHandler()
    merged: dict[str, list[AuthorizationPolicy]] = {}
    for component, config in access_control.items():
        for destination, policies in parse_access_control(component, config).items():
            merged.setdefault(destination, []).extend(policies)
    for destination, policies in merged.items():
        handler.load_policies(destination, policies)
    return handler

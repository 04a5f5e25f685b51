"""How AWS IoT Core and IAM decide a request against our policies: a documented stand-in.

``aws iot test-authorization`` and the IAM policy simulator need an account, so the tests (and
``python -m stacks.describe --check``) evaluate the synthesised policies with the rules below,
each taken from AWS's own documentation. Anything these rules do not cover (an unknown policy
variable, an unsupported condition operator, ``NotAction``/``NotResource``) raises
:class:`UnsupportedPolicy` instead of guessing, so a policy that uses it cannot pass unchecked.

Sources (AWS IoT developer guide, ``awsdocs/aws-iot-docs`` ``developerguide/``; IAM user guide):

- [iot-policies]  ``iot-policies.md``: a policy is statements of Effect, Action, Resource.
- [authz]  ``iot-authorization.md`` / IAM ``reference_policies_evaluation-logic``: default deny; an
  explicit Deny in any policy overrides any Allow.
- [wildcards]  ``pub-sub-policy.md`` l.7–21, ``iot-policy-variables.md`` l.5: in IoT policies ``*``
  is any combination of characters (it is *not* confined to one topic level), ``?`` any single
  character, and the MQTT wildcards ``+`` and ``#`` are literal characters.
- [resources]  ``iot-action-resources.md``: Connect → ``client/<client id>``, Publish and Receive →
  ``topic/<topic>``, Subscribe → ``topicfilter/<filter>``, AssumeRoleWithCertificate →
  ``rolealias/<alias>``.
- [thing-vars]  ``thing-policy-variables.md`` l.3–21: ``iot:Connection.Thing.ThingName`` is the
  thing attached to the certificate, taken from the MQTT client id, which must equal the thing
  name; ``iot:Connection.Thing.IsAttached`` is "true" only for a certificate attached to that thing.
- [basic-vars]  ``basic-policy-variables.md`` l.4: ``iot:ClientId`` is the MQTT client id.
- [iam-wildcards]  IAM ``reference_policies_elements_resource.html`` "Using wildcards in resource
  ARNs": ``*`` and ``?`` match within one colon-separated ARN segment; a ``*`` that is the last
  character of a segment may expand past the colon.
- [iam-actions]  IAM ``reference_policies_elements_action.html``: action names are
  case-insensitive, and may contain ``*``/``?``.
- [iot-creds]  ``authorizing-direct-aws.md``: a role assumed through the IoT credentials provider
  can use ``credentials-iot:ThingName`` (set from the ``x-amzn-iot-thingname`` header),
  ``credentials-iot:ThingTypeName`` and ``credentials-iot:AwsCertificateId`` in its policies.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


class UnsupportedPolicy(ValueError):
    """A policy uses something these rules do not model; the request cannot be decided here."""


class Decision(enum.Enum):
    """The outcome of evaluating a request [authz]."""

    ALLOW = "allow"
    EXPLICIT_DENY = "explicit deny"
    IMPLICIT_DENY = "implicit deny"

    @property
    def allowed(self) -> bool:
        """True only for an Allow that no Deny overrides."""
        return self is Decision.ALLOW

    def __bool__(self) -> bool:
        # Every member would be truthy, so `if evaluate_iot(...)` would read a deny as allowed.
        raise TypeError("use Decision.allowed, not the decision as a truth value")


@dataclass(frozen=True)
class Request:
    """One call to decide: an action on a resource ARN, with the caller's request context.

    ``context`` holds the policy-variable and condition-key values of the call (e.g.
    ``iot:ClientId``); a key that is absent is one AWS would not set for this caller.
    """

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


def mqtt_context(
    client_id: str, attached_thing: str | None, *, core_device: bool = False
) -> dict[str, str]:
    """The IoT request context of an MQTT client with this client id and certificate.

    ``attached_thing`` is the thing the certificate is attached to (None: no thing). The thing
    variables resolve only when the client id equals that thing's name [thing-vars], and never
    for a Greengrass core device: "Thing policy variables (iot:Connection.Thing.*) aren't
    supported for in AWS IoT policies for core devices or Greengrass data plane operations"
    (Greengrass developer guide, device-auth).
    """
    context = {"iot:ClientId": client_id}
    if core_device:
        return context
    is_thing = attached_thing is not None and client_id == attached_thing
    context["iot:Connection.Thing.IsAttached"] = "true" if is_thing else "false"
    if is_thing:
        assert attached_thing is not None
        context["iot:Connection.Thing.ThingName"] = attached_thing
    return context


def https_context() -> dict[str, str]:
    """The IoT request context of a call over HTTPS with a device certificate (no MQTT session).

    There is no client id, and the thing variables are "only available when a device connects
    over MQTT or MQTT over the WebSocket protocol" [thing-vars].
    """
    return {}


_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _substitute(text: str, context: Mapping[str, str]) -> str | None:
    """``text`` with ``${var}`` replaced from ``context``; None when a variable has no value.

    The docs do not say whether a ``*`` or ``?`` inside a substituted value is a wildcard; it is
    taken as one here, the reading that allows more, so a check that a call is denied holds
    either way.
    """
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1)
        if name in ("*", "?", "$"):
            raise UnsupportedPolicy(f"special character variable ${{{name}}} is not modelled")
        if name not in context:
            missing = True
            return ""
        return context[name]

    out = _VARIABLE.sub(value, text)
    return None if missing else out


@lru_cache(maxsize=4096)
def _iot_pattern(pattern: str) -> re.Pattern[str]:
    # [wildcards]: * is any run of characters, across "/" too; ? one character; + and # literal.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL)


@lru_cache(maxsize=4096)
def _iam_pattern(pattern: str, *, within_segments: bool) -> re.Pattern[str]:
    # [iam-wildcards]: "You can use wildcard characters (* and ?) within the individual
    # segments of an ARN"; "If the * wildcard is the last character of a resource ARN segment,
    # it can expand to match beyond the colon boundaries". Whether a * inside a segment may
    # cross a colon is not said: within_segments=True reads it as no, False as yes, and
    # evaluate_iam requires both readings to agree.
    parts: list[str] = []
    for i, ch in enumerate(pattern):
        if ch == "*":
            ends_segment = i + 1 == len(pattern) or pattern[i + 1] == ":"
            parts.append("[^:]*" if within_segments and not ends_segment else ".*")
        elif ch == "?":
            parts.append("[^:]" if within_segments else ".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


@lru_cache(maxsize=4096)
def _string_like(pattern: str) -> re.Pattern[str]:
    # IAM StringLike: * any characters (colons included), ? one character.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL)


def _as_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UnsupportedPolicy(f"{what} must be a string or a list of strings, got {value!r}")


def _action_matches(patterns: Sequence[str], action: str) -> bool:
    # [iam-actions]: case-insensitive, with * and ?.
    for pattern in patterns:
        regex = "".join(
            ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()
        )
        if re.fullmatch(regex, action.lower()):
            return True
    return False


_CONDITION_OPERATORS = {"Bool", "StringEquals", "StringLike", "ArnLike", "ArnEquals"}


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    # IAM condition semantics: every operator and every key must hold; any listed value
    # satisfies a key; a key absent from the context fails the condition (no ...IfExists here);
    # condition key names are case-insensitive (IAM reference_policies_elements_condition).
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, keys in condition.items():
        if operator not in _CONDITION_OPERATORS:
            raise UnsupportedPolicy(f"condition operator {operator!r} is not modelled")
        for key, expected in keys.items():
            if key.lower() not in lowered:
                return False
            actual = lowered[key.lower()]
            values = _as_list(expected, f"condition {operator}/{key}")
            if any("${" in v for v in values):
                raise UnsupportedPolicy(f"policy variables in condition {key} are not modelled")
            if operator in ("Bool", "StringEquals", "ArnEquals"):
                want = [v.lower() for v in values] if operator == "Bool" else values
                got = actual.lower() if operator == "Bool" else actual
                if got not in want:
                    return False
            elif not any(_string_like(v).fullmatch(actual) for v in values):
                return False
    return True


def _statement_matches(
    statement: Mapping[str, Any], request: Request, *, iam: bool, within_segments: bool = True
) -> bool | None:
    """True/False, or None when a resource variable has no value for this caller."""
    for unsupported in ("NotAction", "NotResource", "NotPrincipal"):
        if unsupported in statement:
            raise UnsupportedPolicy(f"{unsupported} is not modelled")
    if not _action_matches(_as_list(statement.get("Action"), "Action"), request.action):
        return False
    unresolved = False
    matched = False
    for resource in _as_list(statement.get("Resource"), "Resource"):
        text = _substitute(resource, request.context)
        if text is None:
            unresolved = True
            continue
        pattern = _iam_pattern(text, within_segments=within_segments) if iam else _iot_pattern(text)
        if pattern.fullmatch(request.resource):
            matched = True
            break
    if not matched:
        return None if unresolved else False
    condition = statement.get("Condition")
    return True if condition is None else _condition_holds(condition, request.context)


def _statements(policies: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for policy in policies:
        statements = policy.get("Statement")
        if isinstance(statements, Mapping):
            statements = [statements]
        if not isinstance(statements, list):
            raise UnsupportedPolicy(f"policy has no Statement list: {policy!r}")
        yield from statements


def _evaluate(
    policies: Iterable[Mapping[str, Any]],
    request: Request,
    *,
    iam: bool,
    within_segments: bool = True,
) -> Decision:
    allowed = False
    for statement in _statements(policies):
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise UnsupportedPolicy(f"Effect must be Allow or Deny, got {effect!r}")
        matches = _statement_matches(statement, request, iam=iam, within_segments=within_segments)
        if matches is None and effect == "Deny":
            # A Deny we cannot resolve might apply: refuse to decide rather than allow.
            raise UnsupportedPolicy(
                f"a Deny statement's resource variable has no value for {request}"
            )
        if matches and effect == "Deny":
            return Decision.EXPLICIT_DENY
        if matches:
            allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def evaluate_iot(policies: Iterable[Mapping[str, Any]], request: Request) -> Decision:
    """Decide an AWS IoT Core data-plane request against the IoT policies on a certificate."""
    return _evaluate(list(policies), request, iam=False)


def evaluate_iam(policies: Iterable[Mapping[str, Any]], request: Request) -> Decision:
    """Decide a request against a role's identity policies (no boundaries or SCPs).

    Both readings of a ``*`` inside an ARN segment must agree [iam-wildcards]; where they do
    not, the policy relies on what the docs leave open and :class:`UnsupportedPolicy` is raised.
    """
    documents = list(policies)
    strict = _evaluate(documents, request, iam=True, within_segments=True)
    loose = _evaluate(documents, request, iam=True, within_segments=False)
    if strict is not loose:
        raise UnsupportedPolicy(
            f"{request.action} on {request.resource}: the decision depends on whether a * "
            "inside an ARN segment may match a colon, which IAM's docs do not settle"
        )
    return strict


def render_provisioning_value(value: Any, parameters: Mapping[str, str]) -> Any:
    """Evaluate a fleet-provisioning template value for a device's parameters.

    Models the template engine's ``Ref`` and ``Fn::Join`` (IoT developer guide
    ``provision-template.md``, "Intrinsic functions": parameters are referenced by
    ``{"Ref": "name"}`` and replaced with the device's value; a parameter's ``Default`` is
    resolved by the caller). Other intrinsic functions raise :class:`UnsupportedPolicy`.
    """
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            name = value["Ref"]
            if name not in parameters:
                raise UnsupportedPolicy(f"template parameter {name!r} has no value")
            return parameters[name]
        if set(value) == {"Fn::Join"}:
            delimiter, items = value["Fn::Join"]
            return delimiter.join(str(render_provisioning_value(i, parameters)) for i in items)
        if any(k.startswith("Fn::") for k in value):
            raise UnsupportedPolicy(f"intrinsic function {sorted(value)} is not modelled")
        return {k: render_provisioning_value(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [render_provisioning_value(v, parameters) for v in value]
    return value

"""Stand-ins for the IoT rules engine (the IoT SQL the EMF rules use) and for CloudWatch's
extraction of metrics from embedded metric format documents.

Only the forms the stacks deploy are modelled; anything else raises :class:`NotModelled`, so a
rule written another way fails its test instead of being evaluated wrongly. Each rule below
names the AWS page it follows:

- IoT SQL (SQL version 2016-03-23), AWS IoT developer guide: ``iot-sql-data-types.html``
  (Undefined: a field that is absent; functions given a wrong type return Undefined; the
  conversions "To string" and "To decimal"), ``iot-sql-operators.html`` (AND, OR, ``=``,
  ``<>``, ``>``, ``>=``, ``<``, ``+``), ``iot-sql-functions.html`` (topic, substring, indexof,
  timestamp), ``iot-sql-where.html`` (the actions run only when the WHERE is true),
  ``iot-sql-select.html`` (``SELECT VALUE``), ``iot-sql-literals.html`` (object literals).
- EMF: CloudWatch user guide, ``CloudWatch_Embedded_Metric_Format_Specification.html``: the
  root's ``_aws`` holds ``Timestamp`` and ``CloudWatchMetrics``; "every DimensionSet used creates
  a new metric"; each dimension a directive names MUST be a member of the root whose value is a
  string, each metric a member whose value is a number; a document that breaks this yields no
  metrics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


class NotModelled(Exception):
    """An IoT SQL form this stand-in does not model."""


class _Undefined:
    def __repr__(self) -> str:
        return "Undefined"


UNDEFINED: Any = _Undefined()
"""IoT SQL's Undefined: "Not a value" (iot-sql-data-types.html)."""

TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'[^']*')|(?P<op><>|>=|<=|=|<|>|\+|\(|\)|,)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))"
)


def _tokens(sql: str) -> list[tuple[str, str]]:
    out, at = [], 0
    while at < len(sql):
        if sql[at:].strip() == "":
            break
        match = TOKEN.match(sql, at)
        if match is None:
            raise NotModelled(f"cannot read IoT SQL at {sql[at:]!r}")
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        at = match.end()
    return out


@dataclass
class Context:
    """What an expression sees: the message, its topic, the rule's time (ms)."""

    message: Mapping[str, Any]
    topic: str
    now_ms: int = 1_800_000_000_000


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _to_decimal(value: Any) -> Any:
    """iot-sql-data-types.html, "To decimal": Int and Decimal convert; a String converts if it
    is a number, else Undefined; Boolean, Array, Object, Null, Undefined give Undefined."""
    if _is_number(value):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return UNDEFINED
    return UNDEFINED


def _to_string(value: Any) -> Any:
    """iot-sql-data-types.html, "To string": a number to its text; Null and Undefined give
    Undefined (arrays and objects, to their JSON, are not needed here)."""
    if isinstance(value, str):
        return value
    if _is_number(value):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value is UNDEFINED:
        return UNDEFINED
    raise NotModelled(f"substring of {type(value).__name__}")


class _Parser:
    def __init__(self, sql: str, ctx: Context) -> None:
        self.tokens = _tokens(sql)
        self.at = 0
        self.ctx = ctx

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise NotModelled("unexpected end of IoT SQL")
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise NotModelled(f"expected {expected!r}, found {token[1]!r}")
        self.at += 1
        return token

    def parse(self) -> Any:
        value = self.disjunction()
        if self.at != len(self.tokens):
            raise NotModelled(f"unread IoT SQL from {self.tokens[self.at][1]!r}")
        return value

    def disjunction(self) -> Any:
        left = self.conjunction()
        while self.peek() == "OR":
            self.take()
            right = self.conjunction()
            # OR: Boolean operands give their OR; any other value gives Undefined
            # (iot-sql-operators.html, OR operator)
            if isinstance(left, bool) and isinstance(right, bool):
                left = left or right
            else:
                left = UNDEFINED
        return left

    def conjunction(self) -> Any:
        left = self.comparison()
        while self.peek() == "AND":
            self.take()
            right = self.comparison()
            # AND: Boolean operands give their AND; any other value gives Undefined
            # (iot-sql-operators.html, AND operator)
            if isinstance(left, bool) and isinstance(right, bool):
                left = left and right
            else:
                left = UNDEFINED
        return left

    def comparison(self) -> Any:
        left = self.sum()
        op = self.peek()
        if op not in ("=", "<>", ">", ">=", "<", "<="):
            return left
        self.take()
        right = self.sum()
        if left is UNDEFINED or right is UNDEFINED:
            return UNDEFINED  # a comparison with Undefined is Undefined
        if op in ("=", "<>"):
            # "=": true when both are the same type and equal; of different types, false
            # (iot-sql-operators.html, "=" / "<>"; emf.is_string relies on it)
            same = type(left) is type(right) or (_is_number(left) and _is_number(right))
            equal = same and left == right
            return equal if op == "=" else not equal
        # ">", ">=", "<", "<=": "Both operands are converted to a Decimal, and then compared"
        a, b = _to_decimal(left), _to_decimal(right)
        if a is UNDEFINED or b is UNDEFINED:
            return UNDEFINED
        return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]

    def sum(self) -> Any:
        left = self.atom()
        while self.peek() == "+":
            self.take()
            right = self.atom()
            # "+" of two numbers is their sum (Int + Int is an Int); other operand types are
            # not used by the deployed rules (iot-sql-operators.html, "+")
            if _is_number(left) and _is_number(right):
                left = left + right
            elif left is UNDEFINED or right is UNDEFINED:
                left = UNDEFINED
            else:
                raise NotModelled(f"+ of {left!r} and {right!r}")
        return left

    def atom(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return Decimal(text) if "." in text else int(text)
        if kind == "str":
            return text[1:-1]
        if text == "(":
            value = self.disjunction()
            self.take(")")
            return value
        if kind == "name" and self.peek() == "(":
            return self.call(text)
        if kind == "name":
            # a field path: each key of an object; an absent key is Undefined
            # (iot-sql-data-types.html, Undefined)
            value: Any = self.ctx.message
            for key in text.split("."):
                value = value.get(key, UNDEFINED) if isinstance(value, Mapping) else UNDEFINED
            return value
        raise NotModelled(f"IoT SQL token {text!r}")

    def call(self, name: str) -> Any:
        self.take("(")
        args: list[Any] = []
        while self.peek() != ")":
            args.append(self.disjunction())
            if self.peek() == ",":
                self.take()
        self.take(")")
        if name == "topic" and len(args) == 1:
            # topic(n): the n-th level of the topic, from 1 (iot-sql-functions.html, topic)
            levels = self.ctx.topic.split("/")
            return levels[args[0] - 1] if 0 < args[0] <= len(levels) else UNDEFINED
        if name == "timestamp" and not args:
            return self.ctx.now_ms  # ms since the epoch, as the rules engine sees it
        if name == "substring" and len(args) == 2:
            # substring(String, Int): from the index to the end; a non-String is converted
            # first; Undefined stays Undefined (iot-sql-functions.html, substring)
            text = _to_string(args[0])
            if text is UNDEFINED or not isinstance(args[1], int):
                return UNDEFINED
            return text[max(0, args[1]) :]
        if name == "indexof" and len(args) == 2:
            # indexof(String, String): the first index of the second in the first, -1 if it
            # is not there (iot-sql-functions.html, indexof)
            if not (isinstance(args[0], str) and isinstance(args[1], str)):
                return UNDEFINED
            return args[0].find(args[1])
        raise NotModelled(f"IoT SQL function {name}({len(args)} arguments)")


def evaluate(sql: str, ctx: Context) -> Any:
    """The value of one IoT SQL expression for a message."""
    return _Parser(sql, ctx).parse()


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic-filter matching, ``+`` one level (the rules' filters have no ``#``)."""
    levels, wanted = topic.split("/"), topic_filter.split("/")
    return len(levels) == len(wanted) and all(
        w in ("+", t) for w, t in zip(wanted, levels, strict=True)
    )


def rule_document(
    document: Mapping[str, Any], topic_filter: str, where: str, topic: str, message: Any
) -> dict[str, Any] | None:
    """What ``SELECT VALUE <document> FROM '<filter>' WHERE <where>`` sends its action for one
    message: None when the filter does not match or the WHERE is not true
    (iot-sql-where.html); else the literal with each expression evaluated. A member whose value
    is Undefined is left out of the object (iot-sql-data-types.html: Undefined is not
    representable in JSON)."""
    if not matches(topic_filter, topic) or not isinstance(message, Mapping):
        return None
    ctx = Context(message, topic)
    if evaluate(where, ctx) is not True:
        return None
    return _literal(document, ctx)


def _literal(value: Any, ctx: Context) -> Any:
    sql = getattr(value, "sql", None)
    if sql is not None:
        out = evaluate(sql, ctx)
        return float(out) if isinstance(out, Decimal) else out
    if isinstance(value, Mapping):
        evaluated = {k: _literal(v, ctx) for k, v in value.items()}
        return {k: v for k, v in evaluated.items() if v is not UNDEFINED}
    if isinstance(value, list | tuple):
        return [_literal(v, ctx) for v in value]
    return value


@dataclass(frozen=True)
class Datapoint:
    """One metric value CloudWatch extracts from an EMF document."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    value: float
    timestamp_ms: int
    unit: str


def emf_metrics(document: Mapping[str, Any]) -> list[Datapoint]:
    """The metrics CloudWatch extracts from one EMF log event (none if it breaks the spec)."""
    meta = document.get("_aws")
    if not isinstance(meta, Mapping) or not _is_number(meta.get("Timestamp")):
        return []
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        return []
    points = []
    for directive in directives:
        namespace = directive.get("Namespace")
        if not isinstance(namespace, str):
            return []
        for dims in directive.get("Dimensions", []):
            if not all(isinstance(document.get(d), str) for d in dims):
                return []  # a dimension must be a member with a string value
            for metric in directive.get("Metrics", []):
                value = document.get(metric["Name"])
                if not _is_number(value):
                    return []  # a metric must be a member with a number value
                points.append(
                    Datapoint(
                        namespace,
                        metric["Name"],
                        tuple((d, document[d]) for d in dims),
                        float(value),
                        int(meta["Timestamp"]),
                        metric.get("Unit", "None"),
                    )
                )
    return points

"""AWS event-stream framing and the event-stream RPC layer, as the Greengrass IPC client speaks them.

Wire rules are those of aws-c-event-stream (github awslabs/aws-c-event-stream), which the
device SDK's awscrt wraps:

- A message is a 12-byte prelude (total length u32 BE, headers length u32 BE, CRC32 of those
  8 bytes), the headers, the payload, and a CRC32 of everything before it
  (source/event_stream.c, aws_event_stream_message_init / s_message_from_buffer).
- A header is name length u8, name, value type u8, value; BYTE_BUF and STRING values carry a
  u16 BE length and at most INT16_MAX bytes (source/event_stream.c, header read/write switch;
  include/aws/event-stream/event_stream.h AWS_EVENT_STREAM_HEADER_VALUE_LEN_MAX).
- A message is at most 24 MiB (event_stream.h AWS_EVENT_STREAM_MAX_MESSAGE_SIZE).
- The RPC layer adds int32 headers ``:message-type``, ``:message-flags``, ``:stream-id`` to every
  message and a string ``operation`` header to the message that opens a stream
  (source/event_stream_rpc.c names; event_stream_rpc_client.c
  s_event_stream_connection_send_message_args_new).
- Message types and flags are awscrt/eventstream/rpc.py ``MessageType`` / ``MessageFlag``.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

PRELUDE_LENGTH = 12
TRAILER_LENGTH = 4
MAX_MESSAGE_SIZE = 24 * 1024 * 1024
MAX_HEADER_NAME_LENGTH = 255
MAX_HEADER_VALUE_LENGTH = 32767

MESSAGE_TYPE_HEADER = ":message-type"
MESSAGE_FLAGS_HEADER = ":message-flags"
STREAM_ID_HEADER = ":stream-id"
OPERATION_HEADER = "operation"
# awsiot/eventstreamrpc.py: the application-level headers the Python client sends and expects
VERSION_HEADER = ":version"
CONTENT_TYPE_HEADER = ":content-type"
SERVICE_MODEL_TYPE_HEADER = "service-model-type"
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_TEXT = "text/plain"
# awsiot/eventstreamrpc.py VERSION_TUPLE; the server compares it exactly
# (aws-iot-device-sdk-java-v2 ServiceOperationMappingContinuationHandler.onConnectRequest)
RPC_VERSION = "0.1.0"


class EventStreamError(ValueError):
    """A byte stream that is not a valid event-stream message."""


class HeaderType(IntEnum):
    """Header value types (awscrt/eventstream/__init__.py HeaderType)."""

    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTE_BUF = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


class MessageType(IntEnum):
    """RPC message types (awscrt/eventstream/rpc.py MessageType)."""

    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


class MessageFlag:
    """RPC message flags (awscrt/eventstream/rpc.py MessageFlag)."""

    NONE = 0
    CONNECTION_ACCEPTED = 0x1
    TERMINATE_STREAM = 0x2


HeaderValue = bool | int | bytes | str | uuid.UUID

_FIXED_SIZES = {
    HeaderType.BYTE: 1,
    HeaderType.INT16: 2,
    HeaderType.INT32: 4,
    HeaderType.INT64: 8,
    HeaderType.TIMESTAMP: 8,
    HeaderType.UUID: 16,
}
_INT_FORMATS = {
    HeaderType.BYTE: ">b",
    HeaderType.INT16: ">h",
    HeaderType.INT32: ">i",
    HeaderType.INT64: ">q",
    HeaderType.TIMESTAMP: ">q",
}


@dataclass(frozen=True)
class Header:
    """One typed event-stream header."""

    name: str
    value: HeaderValue
    type: HeaderType

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        """A STRING header."""
        return cls(name, value, HeaderType.STRING)

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        """An INT32 header."""
        return cls(name, value, HeaderType.INT32)


@dataclass(frozen=True)
class Message:
    """A decoded event-stream message: headers in wire order and the payload."""

    headers: tuple[Header, ...]
    payload: bytes = b""

    def header(self, name: str) -> HeaderValue | None:
        """The first header called ``name`` (case-insensitive, as aws-c-event-stream matches)."""
        wanted = name.lower()
        for header in self.headers:
            if header.name.lower() == wanted:
                return header.value
        return None


@dataclass(frozen=True)
class RpcMessage:
    """A message of the RPC layer: its type, flags, stream id, operation and the rest."""

    message_type: MessageType
    flags: int = MessageFlag.NONE
    stream_id: int = 0
    headers: tuple[Header, ...] = field(default=())
    payload: bytes = b""
    operation: str | None = None

    def header(self, name: str) -> HeaderValue | None:
        """The first application header called ``name`` (case-insensitive)."""
        return Message(self.headers).header(name)


def _encode_header(header: Header) -> bytes:
    name = header.name.encode("utf-8")
    if not 0 < len(name) <= MAX_HEADER_NAME_LENGTH:
        raise EventStreamError(
            f"header name {header.name!r}: length must be 1..{MAX_HEADER_NAME_LENGTH} bytes"
        )
    out = bytearray([len(name)]) + name + bytes([header.type])
    kind = header.type
    value = header.value
    if kind in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        return bytes(out)
    if kind in _INT_FORMATS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise EventStreamError(f"header {header.name!r}: {kind.name} needs an int")
        try:
            out += struct.pack(_INT_FORMATS[kind], value)
        except struct.error as exc:
            raise EventStreamError(f"header {header.name!r}: {value} out of range") from exc
        return bytes(out)
    if kind is HeaderType.UUID:
        if not isinstance(value, uuid.UUID):
            raise EventStreamError(f"header {header.name!r}: UUID needs a uuid.UUID")
        return bytes(out + value.bytes)
    if kind is HeaderType.STRING:
        if not isinstance(value, str):
            raise EventStreamError(f"header {header.name!r}: STRING needs a str")
        data = value.encode("utf-8")
    elif isinstance(value, bytes | bytearray):
        data = bytes(value)
    else:
        raise EventStreamError(f"header {header.name!r}: BYTE_BUF needs bytes")
    if len(data) > MAX_HEADER_VALUE_LENGTH:
        raise EventStreamError(
            f"header {header.name!r}: value is {len(data)} bytes, at most {MAX_HEADER_VALUE_LENGTH}"
        )
    return bytes(out + struct.pack(">H", len(data)) + data)


def encode(headers: Sequence[Header], payload: bytes = b"") -> bytes:
    """One event-stream message on the wire."""
    encoded_headers = b"".join(_encode_header(h) for h in headers)
    total = PRELUDE_LENGTH + len(encoded_headers) + len(payload) + TRAILER_LENGTH
    if total > MAX_MESSAGE_SIZE:
        raise EventStreamError(f"message is {total} bytes, at most {MAX_MESSAGE_SIZE}")
    prelude = struct.pack(">II", total, len(encoded_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _decode_headers(data: bytes) -> tuple[Header, ...]:
    headers: list[Header] = []
    pos = 0
    while pos < len(data):
        name_len = data[pos]
        pos += 1
        if name_len == 0 or pos + name_len + 1 > len(data):
            raise EventStreamError(f"header at byte {pos - 1}: bad name length {name_len}")
        name = data[pos : pos + name_len].decode("utf-8")
        pos += name_len
        try:
            kind = HeaderType(data[pos])
        except ValueError as exc:
            raise EventStreamError(f"header {name!r}: unknown value type {data[pos]}") from exc
        pos += 1
        value: HeaderValue
        if kind is HeaderType.BOOL_TRUE:
            value = True
        elif kind is HeaderType.BOOL_FALSE:
            value = False
        elif kind in _FIXED_SIZES:
            size = _FIXED_SIZES[kind]
            if pos + size > len(data):
                raise EventStreamError(f"header {name!r}: value runs past the headers")
            raw = data[pos : pos + size]
            pos += size
            value = (
                uuid.UUID(bytes=raw)
                if kind is HeaderType.UUID
                else struct.unpack(_INT_FORMATS[kind], raw)[0]
            )
        else:
            if pos + 2 > len(data):
                raise EventStreamError(f"header {name!r}: value length runs past the headers")
            (length,) = struct.unpack(">H", data[pos : pos + 2])
            pos += 2
            if length > MAX_HEADER_VALUE_LENGTH or pos + length > len(data):
                raise EventStreamError(f"header {name!r}: bad value length {length}")
            raw = data[pos : pos + length]
            pos += length
            value = raw.decode("utf-8") if kind is HeaderType.STRING else bytes(raw)
        headers.append(Header(name, value, kind))
    return tuple(headers)


class Decoder:
    """Incremental decoder: feed bytes as they arrive, get whole messages back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Message]:
        """Add received bytes; yield every message they complete."""
        self._buffer += data
        while len(self._buffer) >= PRELUDE_LENGTH:
            total, headers_len, prelude_crc = struct.unpack(">III", self._buffer[:PRELUDE_LENGTH])
            if zlib.crc32(bytes(self._buffer[:8])) != prelude_crc:
                raise EventStreamError("prelude checksum was incorrect")
            if total > MAX_MESSAGE_SIZE:
                raise EventStreamError(f"message length {total} exceeds {MAX_MESSAGE_SIZE}")
            if total < PRELUDE_LENGTH + TRAILER_LENGTH + headers_len:
                raise EventStreamError(f"message length {total} is shorter than its headers")
            if len(self._buffer) < total:
                return
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack(">I", frame[-TRAILER_LENGTH:])
            if zlib.crc32(frame[:-TRAILER_LENGTH]) != message_crc:
                raise EventStreamError("message checksum was incorrect")
            headers_end = PRELUDE_LENGTH + headers_len
            yield Message(
                _decode_headers(frame[PRELUDE_LENGTH:headers_end]),
                frame[headers_end:-TRAILER_LENGTH],
            )

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._buffer)


_RPC_HEADERS = {MESSAGE_TYPE_HEADER, MESSAGE_FLAGS_HEADER, STREAM_ID_HEADER, OPERATION_HEADER}


def to_rpc(message: Message) -> RpcMessage:
    """Split the RPC layer's headers from the application's (event_stream_rpc.c metadata rules)."""
    found: dict[str, HeaderValue] = {}
    rest: list[Header] = []
    for header in message.headers:
        key = header.name.lower()
        int_header = key in (MESSAGE_TYPE_HEADER, MESSAGE_FLAGS_HEADER, STREAM_ID_HEADER)
        if (int_header and header.type is HeaderType.INT32) or (
            key == OPERATION_HEADER and header.type is HeaderType.STRING
        ):
            found[key] = header.value
        else:
            rest.append(header)
    missing = {MESSAGE_TYPE_HEADER, MESSAGE_FLAGS_HEADER, STREAM_ID_HEADER} - found.keys()
    if missing:
        # aws_event_stream_rpc_extract_message_metadata fails without these three
        raise EventStreamError(f"RPC message without {sorted(missing)} headers")
    try:
        message_type = MessageType(int(found[MESSAGE_TYPE_HEADER]))  # type: ignore[arg-type]
    except ValueError as exc:
        raise EventStreamError(f"unknown RPC message type {found[MESSAGE_TYPE_HEADER]!r}") from exc
    operation = found.get(OPERATION_HEADER)
    return RpcMessage(
        message_type=message_type,
        flags=int(found[MESSAGE_FLAGS_HEADER]),  # type: ignore[arg-type]
        stream_id=int(found[STREAM_ID_HEADER]),  # type: ignore[arg-type]
        headers=tuple(rest),
        payload=message.payload,
        operation=operation if isinstance(operation, str) else None,
    )


def encode_rpc(message: RpcMessage) -> bytes:
    """One RPC message on the wire: application headers first, then the RPC layer's."""
    headers = [h for h in message.headers if h.name.lower() not in _RPC_HEADERS]
    headers += [
        Header.int32(MESSAGE_TYPE_HEADER, int(message.message_type)),
        Header.int32(MESSAGE_FLAGS_HEADER, message.flags),
        Header.int32(STREAM_ID_HEADER, message.stream_id),
    ]
    if message.operation is not None:
        headers.append(Header.string(OPERATION_HEADER, message.operation))
    return encode(headers, message.payload)

"""Event-stream framing: our encoder checked against botocore's independent decoder, and back."""

import uuid

import pytest
from botocore.eventstream import EventStreamBuffer

from core_device import eventstream as es


def _all_types() -> list[es.Header]:
    return [
        es.Header("t", True, es.HeaderType.BOOL_TRUE),
        es.Header("f", False, es.HeaderType.BOOL_FALSE),
        es.Header("b", -3, es.HeaderType.BYTE),
        es.Header("s", 1234, es.HeaderType.INT16),
        es.Header("i", -70000, es.HeaderType.INT32),
        es.Header("l", 2**40, es.HeaderType.INT64),
        es.Header("buf", b"\x00\x01", es.HeaderType.BYTE_BUF),
        es.Header.string("str", "héllo"),
        es.Header("ts", 1_700_000_000_000, es.HeaderType.TIMESTAMP),
        es.Header("u", uuid.UUID(int=5), es.HeaderType.UUID),
    ]


def test_botocore_decodes_what_we_encode() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(es.encode(_all_types(), b'{"a": 1}'))
    (message,) = list(buffer)
    assert message.payload == b'{"a": 1}'
    assert message.headers["str"] == "héllo"
    assert message.headers["i"] == -70000
    assert message.headers["l"] == 2**40
    assert message.headers["t"] is True and message.headers["f"] is False
    assert message.headers["buf"] == b"\x00\x01"


def test_decoder_round_trips_byte_by_byte() -> None:
    wire = es.encode(_all_types(), b"payload") + es.encode([es.Header.string("n", "2")])
    decoder = es.Decoder()
    messages = [m for i in range(len(wire)) for m in decoder.feed(wire[i : i + 1])]
    assert [m.payload for m in messages] == [b"payload", b""]
    assert messages[0].headers == tuple(_all_types())
    assert messages[1].header("N") == "2"
    assert decoder.pending == 0


def test_rpc_headers_are_split_from_application_headers() -> None:
    wire = es.encode_rpc(
        es.RpcMessage(
            es.MessageType.APPLICATION_MESSAGE,
            es.MessageFlag.TERMINATE_STREAM,
            stream_id=7,
            headers=(es.Header.string(es.SERVICE_MODEL_TYPE_HEADER, "x#Y"),),
            operation="x#Op",
        )
    )
    (message,) = list(es.Decoder().feed(wire))
    rpc = es.to_rpc(message)
    assert (rpc.message_type, rpc.flags, rpc.stream_id, rpc.operation) == (
        es.MessageType.APPLICATION_MESSAGE,
        es.MessageFlag.TERMINATE_STREAM,
        7,
        "x#Op",
    )
    assert rpc.header(es.SERVICE_MODEL_TYPE_HEADER) == "x#Y"


def test_corrupt_prelude_and_message_are_refused() -> None:
    wire = bytearray(es.encode([es.Header.string("a", "b")], b"xyz"))
    bad_body = bytes(wire[:-5]) + b"Q" + bytes(wire[-4:])
    with pytest.raises(es.EventStreamError, match="message checksum"):
        list(es.Decoder().feed(bad_body))
    wire[1] ^= 0xFF
    with pytest.raises(es.EventStreamError, match="prelude checksum"):
        list(es.Decoder().feed(bytes(wire)))


def test_rpc_message_without_type_header_is_refused() -> None:
    (message,) = list(es.Decoder().feed(es.encode([es.Header.string("a", "b")])))
    with pytest.raises(es.EventStreamError, match=":message-type"):
        es.to_rpc(message)


def test_oversized_header_value_is_refused_with_its_name() -> None:
    with pytest.raises(es.EventStreamError, match="'big'"):
        es.encode([es.Header.string("big", "x" * 40000)])

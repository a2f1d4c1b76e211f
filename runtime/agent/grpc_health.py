"""The gRPC health check (`grpc.health.v1.Health/Check`) over a module's admin socket, in plain HTTP/2.

The agent asks one thing of a module's gRPC side: does it answer the health service, and does it say SERVING.
A gRPC client library would cost the agent about 13 MB, a few threads and a channel per module generation for
that; this sends the one request (HTTP/2 with prior knowledge, its headers from HPACK's static table and
literals) on a fresh connection and reads the answer's message. The trailers are not decoded: a unary call
that fails ends without a message, and that is all the check needs to know.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgewise.runtime.agent.unixstream import UnixStream
from edgewise.runtime.protowire import read_varint

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM = _ACK = 0x1
_END_HEADERS, _PADDED = 0x4, 0x8
_STREAM = 1
_MAX_FRAME = 1 << 24  # the largest length a frame header can state
_MAX_MESSAGE = 1 << 16  # a health answer is a few bytes

SERVING = 1
_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK's integer representation (RFC 7541 section 5.1), its first byte's high bits set to `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: bytes) -> bytes:
    return _integer(len(value), 7, 0x00) + value  # a raw (not Huffman-coded) string literal


def _literal(name_index: int, value: bytes) -> bytes:
    """A header field literal, not indexed, whose name is the static table's entry `name_index`."""
    return _integer(name_index, 4, 0x00) + _string(value)


_REQUEST_HEADERS = b"".join(
    (
        b"\x83",  # :method POST (static table entry 3)
        b"\x86",  # :scheme http (6)
        _literal(4, b"/grpc.health.v1.Health/Check"),  # :path
        _literal(1, b"localhost"),  # :authority
        _literal(31, b"application/grpc"),  # content-type
        b"\x00" + _string(b"te") + _string(b"trailers"),  # a literal name: te is not in the static table
    )
)
_EMPTY_REQUEST = b"\x00\x00\x00\x00\x00"  # one uncompressed message of 0 bytes: HealthCheckRequest(service="")


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


_REQUEST = b"".join(
    (
        _PREFACE,
        _frame(_SETTINGS, 0, 0),
        _frame(_HEADERS, _END_HEADERS, _STREAM, _REQUEST_HEADERS),
        _frame(_DATA, _END_STREAM, _STREAM, _EMPTY_REQUEST),
    )
)


class _CallFailed(Exception):
    """The exchange ended without an answer; the message says how."""


async def check(socket_path: Path, *, timeout: float) -> tuple[bool, str]:
    """(serving, detail) of the health service behind `socket_path`; never raises for the module's trouble."""
    try:
        async with asyncio.timeout(timeout):
            body = await _call(socket_path)
    except TimeoutError:
        return False, f"gRPC health: no answer within {timeout:g}s"
    except _CallFailed as exc:
        return False, f"gRPC health: {exc}"
    except (OSError, asyncio.IncompleteReadError) as exc:
        return False, f"gRPC health: {socket_path}: {exc}"
    try:
        status = _serving_status(body)
    except ValueError as exc:
        return False, f"gRPC health: unreadable answer ({exc})"
    if status == SERVING:
        return True, "gRPC serving"
    return False, f"gRPC health: {_STATUS_NAMES.get(status, str(status))}"


async def _call(socket_path: Path) -> bytes:
    """Send the request and return the answer's DATA bytes once the server ends the stream."""
    stream = await UnixStream.connect(socket_path)
    try:
        await stream.send(_REQUEST)
        data = bytearray()
        while True:
            header = await stream.read_exactly(9)
            length = int.from_bytes(header[:3], "big")
            kind, flags = header[3], header[4]
            stream_id = int.from_bytes(header[5:], "big") & 0x7FFF_FFFF
            if length > _MAX_FRAME:
                raise _CallFailed(f"a frame of {length} bytes")
            payload = await stream.read_exactly(length)
            if stream_id == 0:
                answer = _connection_frame(kind, flags, payload)
                if answer:
                    await stream.send(answer)
            elif stream_id == _STREAM:
                if kind == _RST_STREAM:
                    raise _CallFailed(f"the server reset the call (HTTP/2 error {int.from_bytes(payload[:4], 'big')})")
                if kind == _DATA:
                    data += _unpadded(payload, flags)
                    if len(data) > _MAX_MESSAGE:
                        raise _CallFailed(f"an answer of more than {_MAX_MESSAGE} bytes")
                if kind in (_DATA, _HEADERS) and flags & _END_STREAM:
                    if not data:
                        raise _CallFailed("the call ended without an answer")
                    return bytes(data)
    finally:
        stream.close()


def _connection_frame(kind: int, flags: int, payload: bytes) -> bytes:
    """What a frame on the connection (stream 0) asks to be sent back: the acknowledgement of the server's
    settings or ping, else nothing."""
    if kind == _SETTINGS and not flags & _ACK:
        return _frame(_SETTINGS, _ACK, 0)
    if kind == _PING and not flags & _ACK:
        return _frame(_PING, _ACK, 0, payload[:8])
    if kind == _GOAWAY:
        last_stream = int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF
        if last_stream < _STREAM:  # the call was not taken: no answer will come
            raise _CallFailed(f"the server went away (HTTP/2 error {int.from_bytes(payload[4:8], 'big')})")
    return b""


def _unpadded(payload: bytes, flags: int) -> bytes:
    if not flags & _PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _CallFailed("a malformed padded frame")
    return payload[1 : len(payload) - payload[0]]


def _serving_status(body: bytes) -> int:
    """The `status` of a length-prefixed HealthCheckResponse (field 1, an enum; absent means 0, UNKNOWN)."""
    if len(body) < 5:
        raise ValueError("shorter than a message header")
    if body[0] != 0:
        raise ValueError("a compressed message, which was not asked for")
    size = int.from_bytes(body[1:5], "big")
    message = body[5 : 5 + size]
    if len(message) != size:
        raise ValueError("a message shorter than its header says")
    status, position = 0, 0
    while position < len(message):
        key, position = read_varint(message, position)
        field, wire = key >> 3, key & 0x7
        if wire == 0:
            value, position = read_varint(message, position)
            if field == 1:
                status = value
        elif wire == 2:
            size, position = read_varint(message, position)
            position += size
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
    if position != len(message):
        raise ValueError("a field runs past the message")
    return status

"""HTTP/2 frames built and parsed by hand, for the tests that speak to the transport below what gRPC clients do."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS_FRAME, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1

WINDOW_UPDATE = 8
SETTINGS_INITIAL_WINDOW_SIZE = 4  # a SETTINGS parameter


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def hpack_integer(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = bytearray([limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(name: str, value: str) -> bytes:
    """A literal field without indexing and with a literal name (no Huffman): the simplest HPACK there is."""
    encoded = b"\x00"
    for text in (name, value):
        data = text.encode("latin-1")
        encoded += hpack_integer(len(data), 7) + data
    return encoded


def request_headers(stream_id: int, path: str, *, end_stream: bool = False) -> bytes:
    fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
              ("content-type", "application/grpc"), ("te", "trailers")]  # fmt: skip
    block = b"".join(hpack_literal(name, value) for name, value in fields)
    return frame(HEADERS_FRAME, END_HEADERS | (END_STREAM if end_stream else 0), stream_id, block)


def grpc_message(payload: bytes, *, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(payload)) + payload


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame."""
    frames, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        frames.append((kind, flags, stream_id, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return frames


def client_start() -> bytes:
    return PREFACE + frame(SETTINGS, 0, 0)

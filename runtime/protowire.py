"""Protocol Buffers' wire format read by hand, for the few places that look into one message without its schema
(a gRPC health answer on the device, the header of an ONNX file in the workspace)."""

from __future__ import annotations


def read_varint(data: bytes, position: int) -> tuple[int, int]:
    """The base-128 varint at `position` and the position after it; ValueError when it is cut short or longer
    than 64 bits."""
    value = shift = 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    raise ValueError("a truncated or malformed varint")

"""Protocol datatypes and their numpy and ONNX counterparts; the only place that knows the table."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import numpy as np
from edgewise.runtime.scoring.errors import InvalidInputError

# Protocol name -> numpy dtype (little-endian, as the wire format requires). BYTES is object arrays of bytes.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_BY_KIND = {(dt.kind, dt.itemsize): name for name, dt in NUMPY_DTYPES.items() if name != "BYTES"}

# onnxruntime's type strings -> protocol name.
ONNX_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return NUMPY_DTYPES[datatype]
    except KeyError:
        raise InvalidInputError(
            f"unsupported datatype {datatype!r}; expected one of {', '.join(NUMPY_DTYPES)}"
        ) from None


def protocol_datatype(dtype: np.dtype) -> str:
    """The protocol name of a numpy dtype; strings and objects map to BYTES."""
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_KIND[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise InvalidInputError(f"numpy dtype {dtype} has no protocol datatype") from None


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def decode_bytes_tensor(buffer: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """Split length-prefixed BYTES elements (4-byte little-endian length, then the bytes)."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    end = len(view)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInputError(f"input {name!r}: truncated length prefix in BYTES data")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInputError(f"input {name!r}: BYTES element runs past the end of its data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidInputError(f"input {name!r}: got {len(items)} BYTES elements, the shape needs {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = as_bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, np.bytes_ | bytearray | memoryview):
        return bytes(item)
    return str(item).encode("utf-8")


def bytes_array(items: Iterable[object], shape: Sequence[int]) -> np.ndarray:
    values = [as_bytes(v) for v in items]
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(tuple(shape))

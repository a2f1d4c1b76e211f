"""KServe v2 REST bodies: JSON tensors and the binary tensor data extension, to and from dataplane types.

A binary request carries `Inference-Header-Content-Length: N`: the first N bytes are the JSON header and
inputs with `parameters.binary_data_size` take their bytes, in order, from what follows. Outputs are sent
in binary when they ask for `binary_data` (or the request asks for `binary_data_output`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from edgewise.runtime.scoring.datatypes import (
    bytes_array,
    decode_bytes_tensor,
    element_count,
    numpy_dtype,
)
from edgewise.runtime.scoring.errors import InvalidInputError
from edgewise.runtime.scoring.protocol.convert import raw_bytes
from edgewise.runtime.scoring.types import InferInput, InferRequest, InferResponse, RequestedOutput

HEADER_LENGTH = "inference-header-content-length"


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return value


def _decode_input(item: dict[str, Any], binary: memoryview, offset: int) -> tuple[InferInput, int]:
    name = item.get("name")
    datatype = item.get("datatype")
    shape = item.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise InvalidInputError("each input needs a name, a datatype and a shape")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInputError(f"input {name!r} has an invalid shape {shape}")
    params = _object(item.get("parameters") or {}, f"input {name!r} parameters")
    dtype = numpy_dtype(datatype)
    count = element_count(shape)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size} runs past the {len(binary)} bytes of binary data"
            )
        chunk = binary[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            data = decode_bytes_tensor(chunk, count, name)
        else:
            if size != count * dtype.itemsize:
                raise InvalidInputError(
                    f"input {name!r}: {size} bytes of binary data, but shape {shape} of {datatype} needs "
                    f"{count * dtype.itemsize}"
                )
            data = np.frombuffer(chunk, dtype=dtype)
    else:
        if "data" not in item:
            raise InvalidInputError(f"input {name!r} has no data and no binary_data_size")
        try:
            if datatype == "BYTES":
                flat = np.asarray(item["data"], dtype=object).reshape(-1)
                data = bytes_array(flat, (flat.size,))
            else:
                data = np.asarray(item["data"], dtype=dtype).reshape(-1)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInputError(f"input {name!r}: data does not fit {datatype}: {exc}") from None
        if data.size != count:
            raise InvalidInputError(f"input {name!r}: {data.size} values, but shape {shape} needs {count}")
    return InferInput(name, datatype, tuple(shape), data.reshape(shape), params), offset


def decode_request(model: str, version: str, body: bytes, header_length: int | None) -> InferRequest:
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InvalidInputError(
                f"Inference-Header-Content-Length {header_length} is larger than the {len(body)}-byte body"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        doc = _object(orjson.loads(header), "the request")
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the request is not valid JSON: {exc}") from None
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidInputError("the request needs an 'inputs' list")
    inputs = []
    offset = 0
    for item in raw_inputs:
        tensor, offset = _decode_input(_object(item, "each input"), binary, offset)
        inputs.append(tensor)
    outputs = [
        RequestedOutput(str(o.get("name")), _object(o.get("parameters") or {}, "output parameters"))
        for o in (_object(o, "each output") for o in doc.get("outputs") or [])
    ]
    params = _object(doc.get("parameters") or {}, "the request parameters")
    request_id = doc.get("id", "")
    return InferRequest(model, inputs, version, str(request_id), params, outputs)


def _json_data(array: np.ndarray, datatype: str) -> Any:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if datatype == "FP16":
        return flat.astype(np.float32)
    return np.ascontiguousarray(flat)


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """The body and, when binary outputs follow the JSON, the JSON header's length."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    wanted = {o.name: o.parameters for o in request.outputs}
    chunks: list[bytes] = []
    outputs = []
    for output in response.outputs:
        binary = bool(wanted.get(output.name, {}).get("binary_data", default_binary))
        doc: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        params = dict(output.parameters)
        if binary:
            data = raw_bytes(output.data, output.datatype)
            params["binary_data_size"] = len(data)
            chunks.append(data)
        else:
            doc["data"] = _json_data(output.data, output.datatype)
        if params:
            doc["parameters"] = params
        outputs.append(doc)
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = outputs
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)

"""Protobuf messages of the Open Inference Protocol to and from the dataplane's types."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from edgewise.proto import inference_pb2 as pb
from edgewise.runtime.scoring.datatypes import (
    as_bytes,
    bytes_array,
    decode_bytes_tensor,
    encode_bytes_tensor,
    numpy_dtype,
)
from edgewise.runtime.scoring.errors import InvalidInputError
from edgewise.runtime.scoring.types import (
    InferInput,
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
)

# Which typed-contents field carries each datatype; FP16 has none and travels only as raw bytes.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters_from_proto(params: Any) -> Parameters:
    out: Parameters = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def parameters_to_proto(params: Parameters, target: Any) -> None:
    for key, value in params.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value < 2**63:
                slot.int64_param = value
            else:
                slot.uint64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        elif isinstance(value, bytes):
            slot.string_param = value.decode("utf-8", "replace")
        else:
            slot.string_param = str(value)


def _decode_tensor(tensor: Any, raw: bytes | None) -> np.ndarray:
    name, datatype = tensor.name, tensor.datatype
    shape = tuple(tensor.shape)
    if shape and min(shape) < 0:
        raise InvalidInputError(f"input {name!r} has a negative dimension in shape {list(shape)}")
    dtype = numpy_dtype(datatype)
    count = math.prod(shape)
    if raw is not None:
        if datatype == "BYTES":
            return decode_bytes_tensor(raw, count, name).reshape(shape)
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidInputError(
                f"input {name!r}: {len(raw)} bytes of raw data, but shape {list(shape)} of {datatype} "
                f"needs {expected}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInputError(f"input {name!r}: {datatype} data must be sent in raw_input_contents")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: {len(values)} values in {field}, but shape {list(shape)} needs {count}"
        )
    if datatype == "BYTES":
        return bytes_array(values, shape)
    try:
        return np.array(values, dtype=dtype).reshape(shape)
    except OverflowError as exc:
        raise InvalidInputError(f"input {name!r}: a value does not fit {datatype}: {exc}") from None


def request_from_proto(msg: pb.ModelInferRequest) -> InferRequest:
    raw_contents = msg.raw_input_contents
    if raw_contents and len(raw_contents) != len(msg.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw_contents)} entries for {len(msg.inputs)} inputs; "
            "send one entry per input or none"
        )
    inputs = []
    for index, tensor in enumerate(msg.inputs):
        raw = raw_contents[index] if raw_contents else None
        if raw is not None and tensor.HasField("contents"):
            raise InvalidInputError(f"input {tensor.name!r} has both contents and raw_input_contents")
        data = _decode_tensor(tensor, raw)
        params = parameters_from_proto(tensor.parameters) if tensor.parameters else {}
        inputs.append(InferInput(tensor.name, tensor.datatype, data.shape, data, params))
    outputs = [
        RequestedOutput(o.name, parameters_from_proto(o.parameters) if o.parameters else {})
        for o in msg.outputs
    ]
    params = parameters_from_proto(msg.parameters) if msg.parameters else {}
    return InferRequest(msg.model_name, inputs, msg.model_version, msg.id, params, outputs)


def raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return encode_bytes_tensor(array)
    dtype = numpy_dtype(datatype)
    if array.dtype != dtype:
        array = array.astype(dtype)
    return array.tobytes()  # C order, whatever the array's memory layout


def response_to_proto(response: InferResponse, *, raw: bool) -> pb.ModelInferResponse:
    """Raw output bytes when the request sent raw inputs (or FP16 forces it), typed contents otherwise."""
    msg = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    if response.parameters:
        parameters_to_proto(response.parameters, msg.parameters)
    raw = raw or any(o.datatype == "FP16" for o in response.outputs)
    for output in response.outputs:
        tensor = msg.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if output.parameters:
            parameters_to_proto(output.parameters, tensor.parameters)
        if raw:
            msg.raw_output_contents.append(raw_bytes(output.data, output.datatype))
        elif output.datatype == "BYTES":
            tensor.contents.bytes_contents.extend(as_bytes(v) for v in output.data.reshape(-1))
        else:
            getattr(tensor.contents, CONTENTS_FIELD[output.datatype]).extend(output.data.reshape(-1).tolist())
    return msg

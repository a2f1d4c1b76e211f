"""Request bodies for every protocol, and decoders that check a server's answer against onnxruntime's."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from edgewise.proto import inference_pb2

from _cases import ModelCase

GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
}


def grpc_message(case: ModelCase) -> bytes:
    """ModelInferRequest with the tensor in raw_input_contents, the form high-throughput clients send."""
    request = inference_pb2.ModelInferRequest(model_name=case.name)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = case.input_name, "FP32"
    tensor.shape.extend(case.sample.shape)
    request.raw_input_contents.append(case.sample.tobytes())
    return bytes(request.SerializeToString())


def grpc_frame(message: bytes) -> bytes:
    """Length-prefixed gRPC message (uncompressed), exactly what goes into an HTTP/2 DATA frame."""
    return struct.pack(">BI", 0, len(message)) + message


def rest_json(case: ModelCase) -> bytes:
    """KServe v2 JSON request with the data inline."""
    tensor: dict[str, Any] = {"name": case.input_name, "shape": list(case.sample.shape), "datatype": "FP32"}
    tensor["data"] = case.sample.ravel().tolist()
    return json.dumps({"inputs": [tensor]}).encode()


def rest_binary(case: ModelCase) -> tuple[bytes, dict[str, str]]:
    """Binary tensor extension: a JSON header, then the raw input; binary outputs are asked for."""
    raw = case.sample.tobytes()
    tensor: dict[str, Any] = {"name": case.input_name, "shape": list(case.sample.shape), "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    outputs = [{"name": name, "parameters": {"binary_data": True}} for name in case.output_names]
    # Both spellings of "answer in binary": the request-wide parameter and the per-output one.
    request = {"inputs": [tensor], "outputs": outputs, "parameters": {"binary_data_output": True}}
    header = json.dumps(request).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return header + raw, headers


def decode_grpc(data: bytes) -> dict[str, np.ndarray]:
    """Outputs of a serialized ModelInferResponse, from raw_output_contents or typed contents."""
    response = inference_pb2.ModelInferResponse.FromString(data)
    result: dict[str, np.ndarray] = {}
    for index, out in enumerate(response.outputs):
        dtype = _DTYPES[out.datatype]
        if response.raw_output_contents:
            array = np.frombuffer(response.raw_output_contents[index], dtype=dtype)
        else:
            array = np.asarray(getattr(out.contents, _CONTENTS[out.datatype]), dtype=dtype)
        result[out.name] = array.reshape(tuple(out.shape))
    return result


def decode_rest(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """Outputs of a v2 REST response, JSON or binary-extension (header length from the HTTP header)."""
    head, raw = (body[:header_length], body[header_length:]) if header_length is not None else (body, b"")
    result: dict[str, np.ndarray] = {}
    offset = 0
    for out in json.loads(head)["outputs"]:
        dtype = _DTYPES[out["datatype"]]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            array = np.frombuffer(raw[offset : offset + size], dtype=dtype)
            offset += size
        else:
            array = np.asarray(out["data"], dtype=dtype)
        result[out["name"]] = array.reshape(tuple(out["shape"]))
    return result


def mismatch(case: ModelCase, got: dict[str, np.ndarray]) -> str | None:
    """None when every expected output is present and close to the in-process result, else why not."""
    for name, want in case.expected.items():
        if name not in got:
            return f"output {name!r} missing (got {sorted(got)})"
        if got[name].shape != want.shape or not np.allclose(got[name], want, rtol=1e-4, atol=1e-5):
            return f"output {name!r} differs from onnxruntime's (shape {got[name].shape} vs {want.shape})"
    return None

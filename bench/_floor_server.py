"""The floor: the least a KServe v2 gRPC server can do, so framework overhead can be measured against it.

Only ModelInfer exists. The handler decodes raw_input_contents, runs onnxruntime inline on the event loop
and encodes raw_output_contents: no batching, no validation, no metrics.
Run: python _floor_server.py --port P --threads T NAME=PATH [NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from edgewise.proto import inference_pb2, inference_pb2_grpc

from _cases import session

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_NAMES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
}


class FloorServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """ModelInfer straight onto onnxruntime sessions keyed by model name."""

    def __init__(self, models: dict[str, Path], threads: int) -> None:
        self._sessions = {name: session(path, threads) for name, path in models.items()}
        self._outputs = {
            name: [(o.name, _NAMES[o.type]) for o in sess.get_outputs()]
            for name, sess in self._sessions.items()
        }

    async def ModelInfer(
        self, request: inference_pb2.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.ModelInferResponse:
        sess = self._sessions.get(request.model_name)
        if sess is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name!r}")
        feed = {
            spec.name: np.frombuffer(raw, dtype=_DTYPES[spec.datatype]).reshape(tuple(spec.shape))
            for spec, raw in zip(request.inputs, request.raw_input_contents, strict=True)
        }
        outputs = self._outputs[request.model_name]
        results = sess.run([name for name, _ in outputs], feed)
        response = inference_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        for (name, datatype), array in zip(outputs, results, strict=True):
            out = response.outputs.add()
            out.name, out.datatype = name, datatype
            out.shape.extend(array.shape)
            response.raw_output_contents.append(array.tobytes())
        return response


async def serve(port: int, models: dict[str, Path], threads: int) -> None:
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    )
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(models, threads), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("models", nargs="+", help="NAME=PATH of an ONNX file")
    opts = parser.parse_args()
    models = {name: Path(path) for name, path in (item.split("=", 1) for item in opts.models)}
    asyncio.run(serve(opts.port, models, opts.threads))


if __name__ == "__main__":
    main()

"""KServe ModelServer with a custom kserve.Model running onnxruntime (runs in the kserve venv).

Run: python _kserve_server.py --http_port H --grpc_port G [kserve flags] --bench-threads T NAME=PATH ...
KServe reads its own flags from sys.argv when imported; the rest are parsed here.
"""

from __future__ import annotations

import argparse
import logging

import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

_NAMES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
}


class OnnxModel(Model):  # type: ignore[misc]
    """v2 predict: InferRequest in, InferResponse out, with binary outputs when the request was binary."""

    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        self._path, self._threads = path, threads
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            self._path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._outputs = [(o.name, _NAMES[o.type]) for o in self._session.get_outputs()]
        self.ready = True
        return self.ready

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        feed = {item.name: item.as_numpy() for item in payload.inputs}
        results = self._session.run([name for name, _ in self._outputs], feed)
        binary = payload.use_binary_outputs
        outputs = []
        for (name, datatype), array in zip(self._outputs, results, strict=True):
            out = InferOutput(name=name, shape=list(array.shape), datatype=datatype)
            out.set_data_from_numpy(array, binary_data=binary)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=binary,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench-threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("models", nargs="+", help="NAME=PATH of an ONNX file")
    opts, _ = parser.parse_known_args()
    models = [
        OnnxModel(name, path, opts.bench_threads) for name, path in (m.split("=", 1) for m in opts.models)
    ]
    server = ModelServer()  # configures logging from KServe's flags
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # no per-request log line, like the others
    server.start(models)


if __name__ == "__main__":
    main()

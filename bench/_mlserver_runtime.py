"""MLServer custom runtime running onnxruntime; loaded by MLServer (in its own venv) via model-settings.json.

model-settings.json: {"implementation": "_mlserver_runtime.OnnxRuntimeModel",
                      "parameters": {"uri": "/abs/model.onnx", "extra": {"threads": 1}}}
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]
    """Decode inputs with NumpyCodec, run the session, encode every output: the idiomatic custom runtime."""

    async def load(self) -> bool:
        params = self.settings.parameters
        assert params is not None and params.uri is not None, "model-settings.json needs parameters.uri"
        options = ort.SessionOptions()
        options.intra_op_num_threads = int((params.extra or {}).get("threads", 1))
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            params.uri, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed: dict[str, np.ndarray] = {
            item.name: NumpyCodec.decode_input(item).astype(np.float32, copy=False) for item in payload.inputs
        }
        results = self._session.run(self._outputs, feed)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self._outputs, results, strict=True)],
        )

"""onnxruntime as a backend: metadata from the ONNX graph, names mapped as the model config says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.datatypes import ONNX_TYPES
from edgewise.runtime.scoring.errors import InferenceFailedError, InvalidInputError, ModelLoadError
from edgewise.runtime.scoring.types import TensorSpec

# A one-node Identity model (x -> y, FLOAT [1], opset 13, IR version 7) exactly as onnx.helper serializes it;
# tests/runtime/scoring/test_units.py rebuilds it to check these bytes.
WARM_UP_MODEL = (
    b"\x08\x07\x12\x00::\n\x10\n\x01x\x12\x01y\"\x08Identity\x12\x04warmZ\x0f\n\x01x\x12\n\n\x08\x08\x01\x12\x04"
    b"\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r"
)


def warm_up_runtime() -> None:
    """Create, run and drop one session that starts no thread: onnxruntime sets up its environment and kernel
    registry on the first session of a process (about 5 ms here), so a process that forks scoring servers
    pays that once for all of them."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(WARM_UP_MODEL, sess_options=options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.zeros(1, dtype=np.float32)})
    del session


def _dims(shape: list[int | str | None]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _spec(arg: ort.NodeArg, served: str, what: str, path: Path) -> TensorSpec:
    try:
        datatype = ONNX_TYPES[arg.type]
    except KeyError:
        raise ModelLoadError(f"{path}: {what} {arg.name!r} has type {arg.type}, which is not served") from None
    return TensorSpec(served, datatype, _dims(arg.shape))


def _text(name: str, array: np.ndarray) -> np.ndarray:
    """onnxruntime takes string tensors as str objects: it would turn bytes into their repr, "b'...'"."""
    text = np.empty(array.shape, dtype=object)
    try:
        text.reshape(-1)[:] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.reshape(-1)]
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"input {name!r}: an ONNX string tensor holds UTF-8 text: {exc}") from None
    return text


class OnnxBackend(Backend):
    platform = "onnxruntime_onnx"

    def __init__(
        self,
        path: Path,
        *,
        input_names: dict[str, str] | None = None,
        output_names: dict[str, str] | None = None,
        intra_op_threads: int = 0,
        intra_op_spinning: bool = False,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # onnxruntime's pool threads busy-wait after every run unless told not to: on a device that is CPU a
        # module burns while idle (about 50 ms per start here) and takes from its neighbours.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if intra_op_spinning else "0")
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelLoadError(f"cannot load {path}: {exc}") from exc
        in_map = input_names or {}
        out_map = output_names or {}
        graph_inputs = self._session.get_inputs()
        graph_outputs = self._session.get_outputs()
        self._inputs = tuple(_spec(a, in_map.get(a.name, a.name), "input", path) for a in graph_inputs)
        self._outputs = tuple(_spec(a, out_map.get(a.name, a.name), "output", path) for a in graph_outputs)
        self._to_graph = {spec.name: arg.name for spec, arg in zip(self._inputs, graph_inputs, strict=True)}
        self._from_graph = [spec.name for spec in self._outputs]
        self._graph_output = {spec.name: arg.name for spec, arg in zip(self._outputs, graph_outputs, strict=True)}

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        names = outputs or self._from_graph
        feed = {
            self._to_graph[name]: _text(name, array) if array.dtype == object else array
            for name, array in inputs.items()
        }
        try:
            results = self._session.run([self._graph_output[n] for n in names], feed)
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ValueError) as exc:
            raise InvalidInputError(f"the model rejected the input: {exc}") from exc
        except Exception as exc:
            raise InferenceFailedError(f"inference failed: {exc}") from exc
        return dict(zip(names, results, strict=True))

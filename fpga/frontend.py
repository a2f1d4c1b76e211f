"""ONNX → `FloatModel`: finds the chain of dense layers in a graph and the host-side head that follows it.

`frontend_graph` walks the graph; the operators it maps are in `frontend_ops` (the default ONNX domain) and
`frontend_ml` (ai.onnx.ml, as scikit-learn models export). An unmapped node fails with an `UnsupportedModelError`
naming its operator and node, so that a model either compiles to exactly what ONNX Runtime computes or not at all.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from edgewise.fpga import frontend_ml, frontend_ops
from edgewise.fpga.errors import UnsupportedModelError
from edgewise.fpga.frontend_graph import ML_DOMAIN, GraphReader
from edgewise.fpga.ir import FloatModel

HANDLERS = {"": frontend_ops.HANDLERS, ML_DOMAIN: frontend_ml.HANDLERS}


def read_onnx(model: str | Path | bytes | onnx.ModelProto) -> FloatModel:
    """The dense chain and head of an ONNX model, or an `UnsupportedModelError` naming what does not map."""
    return GraphReader(_load(model).graph, HANDLERS).read()


def _load(model: str | Path | bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    source = "the bytes given" if isinstance(model, bytes) else f"'{model}'"
    try:
        return onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    except OSError as error:
        raise UnsupportedModelError(f"cannot read the ONNX model {source}: {error}") from error
    except Exception as error:  # protobuf's DecodeError, whose module path varies between protobuf builds
        raise UnsupportedModelError(f"{source} is not an ONNX model: {error}") from error

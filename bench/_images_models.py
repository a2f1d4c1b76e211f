"""ONNX models of a chosen size for the images benchmark, made in code so nothing is downloaded.

The weight is random bits read as float32: incompressible, so the gzip layer that carries it is as big as the
model, and a layer size or a pull throughput measured on it is honest. The values (some NaN or infinite) are
never scored; the image builder only packages the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def matmul_of_size(path: Path, *, megabytes: float, seed: int) -> Path:
    """y = x @ W with a square float32 W of about `megabytes` MB (10^6 bytes), saved at `path`."""
    side = max(1, round(math.sqrt(megabytes * 1e6 / 4)))
    rng = np.random.default_rng(seed)
    weight = np.frombuffer(rng.bytes(side * side * 4), dtype=np.float32).reshape(side, side)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        f"matmul{side}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", side])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path

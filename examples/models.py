"""Small ONNX models built in code, so that the demo, tests and benchmarks never download weights."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def matmul_model(path: Path, *, features: int = 16, outputs: int = 16, seed: int = 0) -> Path:
    """y = x @ W with a dynamic batch dimension: the cheapest model that still does real work."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((features, outputs)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    return _save(graph, path)


def mlp_model(path: Path, *, sizes: tuple[int, ...] = (784, 256, 128, 10), seed: int = 0) -> Path:
    """A dense ReLU network (784-256-128-10 by default) with logits and softmax probabilities."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "input"
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{layer}"), numpy_helper.from_array(b, f"B{layer}")]
        last = layer == len(sizes) - 2
        out = "logits" if last else f"h{layer}"
        nodes.append(helper.make_node("Gemm", [current, f"W{layer}", f"B{layer}"], [out]))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"a{layer}"]))
            out = f"a{layer}"
        current = out
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", sizes[-1]]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", sizes[-1]]),
        ],
        initializer=inits,
    )
    return _save(graph, path)

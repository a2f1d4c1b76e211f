"""Handlers of the default ONNX domain: dense layers, per-feature arithmetic, plumbing and the output head.

Each handler takes the reader and the symbols of a node's inputs and returns the symbols of its outputs (see
`frontend_graph`). Arithmetic on constants alone is evaluated, so that exporters which compute a constant in the
graph still compile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import numpy as np
import onnx
from edgewise.fpga import frontend_symbols as symbols
from edgewise.fpga.frontend_graph import GraphReader, Handler, Inputs
from edgewise.fpga.frontend_symbols import Affine, Complement, Const, Dense, Head, Input, Label, Symbol
from onnx import TensorProto, helper, numpy_helper

_INTEGER_TYPES: set[int] = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
                  TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64}  # fmt: skip


# -- plumbing -----------------------------------------------------------------------------------------------------


def passthrough(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    source = inputs[0]
    if source is None:
        raise reader.refuse("has no input")
    return [source]


def dropout(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if len(inputs) > 2 and inputs[2] is not None and bool(reader.constant(inputs[2], "training_mode").any()):
        raise reader.refuse("runs in training mode; export the model for inference")
    return passthrough(reader, inputs)


def cast(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    source, to = inputs[0], reader.int_attribute("to", 0)
    if isinstance(source, Const):
        return [Const(source.value.astype(helper.tensor_dtype_to_np_dtype(to)))]
    if isinstance(source, Label):
        if to == source.elem or (to in _INTEGER_TYPES and source.elem in _INTEGER_TYPES):
            return [replace(source, elem=to)]
    elif to == TensorProto.FLOAT and source is not None:
        return [source]
    raise reader.refuse(f"casts to {symbols.type_name(to)}, which would change the served values")


def flatten(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if reader.int_attribute("axis", 1) != 1:
        raise reader.refuse("flattens with an axis other than 1, which would mix the batch with features")
    source = inputs[0]
    if isinstance(source, Affine) and isinstance(source.source, Input):
        return [replace(source, source=Input((symbols.size(source.source.dims),)))]
    if isinstance(source, Input):
        return [Input((symbols.size(source.dims),))]
    if isinstance(source, Label):
        return [replace(source, flat=False)]
    if isinstance(source, Const):
        return [Const(source.value.reshape(len(source.value), -1))]
    return passthrough(reader, inputs)


def reshape_node(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    target = [int(v) for v in reader.constant(inputs[1], "shape").reshape(-1)]
    if reader.int_attribute("allowzero", 0) and 0 in target:
        raise reader.refuse("reshapes with allowzero=1 and a zero dimension")
    return [reshape(reader, inputs[0], target)]


def reshape(reader: GraphReader, symbol: Symbol | None, target: list[int]) -> Symbol:
    """Reshapes that keep the batch axis and flatten the rest, or flatten labels to [N]."""
    if isinstance(symbol, Const):
        shape = [symbol.value.shape[i] if dim == 0 else dim for i, dim in enumerate(target)]
        try:
            return Const(symbol.value.reshape(shape))
        except (ValueError, IndexError) as error:
            raise reader.refuse(f"cannot reshape a constant of shape {list(symbol.value.shape)}: {error}") from error
    if isinstance(symbol, Affine):
        source = reshape(reader, symbol.source, target)
        assert isinstance(source, Input | Dense)
        return replace(symbol, source=source)
    if isinstance(symbol, Label) and target in ([-1], [-1, 1], [0, 1]):
        return replace(symbol, flat=len(target) == 1)
    elif isinstance(symbol, Input):
        features = symbols.size(symbol.dims)
        if len(target) == 2 and target[0] in (-1, 0) and (target[1] in (-1, features) or features is None):
            return Input((features if target[1] == -1 else target[1],))
    elif isinstance(symbol, Dense | Head):
        pair = isinstance(symbol, Head) and symbol.pair
        width = reader.layers[symbol.layer].weights.shape[0] * (2 if pair else 1)
        if len(target) == 2 and target[0] in (-1, 0) and target[1] in (-1, width) and target != [-1, -1]:
            return symbol
    raise reader.refuse(f"reshapes to {target}; only reshapes that keep the batch and flatten the rest are mapped")


def constant_node(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    node = reader.node
    attribute = node.attribute[0] if len(node.attribute) == 1 else None
    if attribute is None or attribute.name not in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        raise reader.refuse("holds a kind of constant the compiler does not read (sparse or string)")
    value = helper.get_attribute_value(attribute)
    array = numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)
    return [Const(array)]


# -- dense layers -------------------------------------------------------------------------------------------------


def gemm(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if reader.int_attribute("transA", 0):
        raise reader.refuse("has transA=1; the FPGA compiler maps Gemm with the batch on the first axis only")
    matrix = reader.constant(inputs[1], "weight matrix B")
    if matrix.ndim != 2:
        raise reader.refuse(f"has a weight matrix of shape {list(matrix.shape)}; it must be two-dimensional")
    alpha, beta = float(reader.attribute("alpha", 1.0)), float(reader.attribute("beta", 1.0))  # type: ignore[arg-type]
    weights = alpha * (matrix if reader.int_attribute("transB", 0) else matrix.T).astype(np.float64)
    bias = np.zeros(weights.shape[0])
    if len(inputs) > 2 and inputs[2] is not None:
        bias = beta * reader.row(reader.constant(inputs[2], "bias C"), weights.shape[0], "bias C")
    return [reader.new_layer(inputs[0], weights, bias)]


def matmul(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if isinstance(inputs[0], Const):
        raise reader.refuse("multiplies a constant by the data; only data @ constant weights is mapped")
    matrix = reader.constant(inputs[1], "weight matrix")
    if matrix.ndim != 2:
        raise reader.refuse(f"has a weight matrix of shape {list(matrix.shape)}; it must be two-dimensional")
    weights = matrix.T.astype(np.float64)
    return [reader.new_layer(inputs[0], weights, np.zeros(weights.shape[0]))]


def relu(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    layer = reader.last(reader.settle(inputs[0]), doing="applies Relu")
    layer.relu = True
    return [reader.bump(layer)]


# -- per-feature arithmetic: a bias, or a scale and offset folded into a dense layer --------------------------------


def _operands(reader: GraphReader, inputs: Inputs, what: str) -> tuple[Symbol | None, np.ndarray, bool]:
    """(data, constant, whether the constant comes first) of a binary node with one constant operand."""
    first, second = inputs
    if isinstance(first, Const) and not isinstance(second, Const):
        return second, reader.per_feature(first.value, what), True
    return first, reader.per_feature(reader.constant(second, what), what), False


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX's Div: integer division truncates toward zero."""
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return np.asarray(np.divide(a, b))
    return np.asarray(np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b)), dtype=np.result_type(a, b))


def _folded(inputs: Inputs, compute: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[Symbol] | None:
    first, second = inputs
    if isinstance(first, Const) and isinstance(second, Const):
        return [Const(compute(first.value, second.value))]
    return None


def add(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if (constant := _folded(inputs, np.add)) is not None:
        return constant
    data, value, _ = _operands(reader, inputs, "bias")
    return [reader.affine(data, np.ones(1), value, doing="adds a bias")]


def mul(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if (constant := _folded(inputs, np.multiply)) is not None:
        return constant
    data, value, _ = _operands(reader, inputs, "factor")
    return [reader.affine(data, value, np.zeros(1), doing="multiplies by a constant")]


def div(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if (constant := _folded(inputs, _divide)) is not None:
        return constant
    data, value, reversed_ = _operands(reader, inputs, "divisor")
    if reversed_:
        raise reader.refuse("divides a constant by the data, which is not linear; only data / constant is mapped")
    if not value.all():
        raise reader.refuse("divides by zero")
    return [reader.affine(data, 1.0 / value, np.zeros(1), doing="divides by a constant")]


def sub(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    """data - c and c - data, or 1 - Sigmoid in the probabilities of a binary classifier."""
    if (constant := _folded(inputs, np.subtract)) is not None:
        return constant
    one, source = inputs
    unity = isinstance(one, Const) and one.value.size == 1 and bool(np.all(one.value == 1))
    if unity and isinstance(source, Head) and _binary_sigmoid(reader, source):
        return [Complement(source.layer, source.version)]
    data, value, reversed_ = _operands(reader, inputs, "constant")
    if reversed_:
        return [reader.affine(data, -np.ones(1), value, doing="subtracts from a constant")]
    return [reader.affine(data, np.ones(1), -value, doing="subtracts a constant")]


# -- the head -----------------------------------------------------------------------------------------------------


def _activation(reader: GraphReader, op: Literal["softmax", "sigmoid"], inputs: Inputs) -> list[Symbol]:
    if op == "softmax" and reader.int_attribute("axis", -1) not in (1, -1):
        raise reader.refuse("normalizes over an axis other than the features")
    source = reader.settle(inputs[0])
    if isinstance(source, Input) or (isinstance(source, Affine) and isinstance(source.source, Input)):
        raise reader.refuse("applies to the model input, before any dense layer")
    if not isinstance(source, Dense):
        raise reader.refuse("is mapped only on a dense layer's output, at the end of the model")
    return [Head(op, source.layer, source.version)]


def softmax(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    return _activation(reader, "softmax", inputs)


def sigmoid(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    return _activation(reader, "sigmoid", inputs)


def argmax(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if reader.int_attribute("axis", 0) not in (1, -1):
        raise reader.refuse("takes the maximum over an axis other than the features (axis must be 1)")
    if reader.int_attribute("select_last_index", 0):
        raise reader.refuse("has select_last_index=1; the host head picks the first maximum")
    source = reader.settle(inputs[0])
    if not isinstance(source, Dense | Head):
        raise reader.refuse("is mapped only on a dense layer's output or its softmax/sigmoid")
    pair = isinstance(source, Head) and source.pair
    flat = not reader.int_attribute("keepdims", 1)
    return [Label(source.layer, source.version, pair, TensorProto.INT64, flat)]


def _binary_sigmoid(reader: GraphReader, symbol: Symbol | None) -> bool:
    if not isinstance(symbol, Head) or symbol.op != "sigmoid" or symbol.pair:
        return False
    return bool(reader.layers[symbol.layer].weights.shape[0] == 1)


def concat(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    if len(inputs) == 2 and reader.int_attribute("axis", 0) in (1, -1):
        low, high = inputs
        if isinstance(low, Complement) and isinstance(high, Head) and _binary_sigmoid(reader, high):
            if (low.layer, low.version) != (high.layer, high.version):
                raise reader.refuse("joins 1 - Sigmoid and Sigmoid of different values")
            return [Head("sigmoid", high.layer, high.version, pair=True)]
    raise reader.refuse("is mapped only as [1 - Sigmoid, Sigmoid], the probabilities of a binary classifier")


HANDLERS: dict[str, Handler] = {
    "Gemm": gemm,
    "MatMul": matmul,
    "Add": add,
    "Sub": sub,
    "Mul": mul,
    "Div": div,
    "Relu": relu,
    "Flatten": flatten,
    "Reshape": reshape_node,
    "Identity": passthrough,
    "Dropout": dropout,
    "Cast": cast,
    "Constant": constant_node,
    "Softmax": softmax,
    "Sigmoid": sigmoid,
    "ArgMax": argmax,
    "Concat": concat,
}

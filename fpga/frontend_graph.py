"""The walk over an ONNX graph: what each tensor stands for, the chain of dense layers it builds, and the head.

ONNX orders nodes topologically, so one pass suffices: each node's handler (see `frontend_ops` and
`frontend_ml`) reads the symbols of its inputs and returns those of its outputs, changing the chain of layers
as it goes. A node that fits no mapped pattern stops the walk with an `UnsupportedModelError` naming it, so a
model either compiles to what ONNX Runtime computes or not at all.

A per-feature scale and offset (Scaler, or Add/Sub/Mul/Div by a constant) of the model input, before the first
dense layer, becomes the model's input transform, computed on the host as the input is quantized (see
`edgewise.fpga.ir`): folded into the first layer's weights, a scaler's large factors for near-constant features
would take that layer's whole int8 weight range. Any other such map is folded into a dense layer, which keeps
the hardware a plain chain of layers: at once into the layer it follows when that layer has no Relu, else into
the next layer's weights, or, at the output, into the last layer when Relu commutes with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from edgewise.fpga.errors import UnsupportedModelError
from edgewise.fpga.frontend_symbols import (
    Affine,
    Complement,
    Const,
    Dense,
    Head,
    Input,
    Label,
    Layer,
    Symbol,
    input_transform,
    scale_inputs,
    type_name,
)
from edgewise.fpga.ir import DenseLayer, FloatModel, HeadOp, HeadOutput
from onnx import TensorProto, helper, numpy_helper

MAPPED = (
    "it maps Gemm, MatMul+Add, Relu, Flatten/Reshape, a per-feature scale and offset before a dense layer "
    "(Scaler, Add/Sub/Mul/Div by a constant), and Softmax/Sigmoid/ArgMax at the output"
)
ML_DOMAIN = "ai.onnx.ml"
DATATYPES: dict[int, str] = {TensorProto.FLOAT: "FP32", TensorProto.INT64: "INT64", TensorProto.STRING: "BYTES"}

Inputs = list[Symbol | None]
Handler = Callable[["GraphReader", Inputs], list[Symbol]]


class GraphReader:
    """Reads one graph; `handlers` maps an operator domain ("" or "ai.onnx.ml") to its handlers by op type."""

    def __init__(self, graph: onnx.GraphProto, handlers: Mapping[str, Mapping[str, Handler]]) -> None:
        self.graph = graph
        self.handlers = handlers
        self.symbols: dict[str, Symbol] = {}
        self.layers: list[Layer] = []
        self.node: onnx.NodeProto = onnx.NodeProto()
        self.name = ""
        self._settled: dict[int, Symbol] = {}  # id of an Affine -> the layer value it was folded into
        self.input_offset: np.ndarray | None = None  # the input transform, from a map before the first layer
        self.input_gain: np.ndarray | None = None

    # errors

    def refuse(self, why: str) -> UnsupportedModelError:
        op = self.node.op_type
        return UnsupportedModelError(f"{op} (node '{self.name}') {why}", operator=op, node=self.name)

    def unsupported(self) -> UnsupportedModelError:
        return self.refuse(f"is not supported by the FPGA compiler; {MAPPED}")

    # the walk

    def read(self) -> FloatModel:
        for tensor in self.graph.initializer:
            self.symbols[tensor.name] = Const(numpy_helper.to_array(tensor))
        input_name = self._read_input()
        for index, node in enumerate(self.graph.node):
            self.node, self.name = node, node.name or f"#{index}"
            self._read_node()
        return self._finish(input_name)

    def _read_input(self) -> str:
        inputs = [value for value in self.graph.input if value.name not in self.symbols]
        if len(inputs) != 1:
            names = ", ".join(f"'{value.name}'" for value in inputs) or "none"
            raise UnsupportedModelError(
                f"the model has {len(inputs)} inputs ({names}); the FPGA compiler maps a single float input"
            )
        value = inputs[0]
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type != TensorProto.FLOAT:
            kind = type_name(tensor.elem_type) if tensor.elem_type else "not a tensor"
            raise UnsupportedModelError(f"input '{value.name}' is {kind}; the FPGA compiler maps a FLOAT input")
        if not tensor.HasField("shape") or len(tensor.shape.dim) < 2:
            raise UnsupportedModelError(
                f"input '{value.name}' must have a known shape [N, features] (or [N, ...] flattened by the model)"
            )
        dims = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim[1:])
        self.symbols[value.name] = Input(dims)
        return value.name

    def _read_node(self) -> None:
        domain = self.node.domain or ""
        handler = self.handlers.get("" if domain == "ai.onnx" else domain, {}).get(self.node.op_type)
        if handler is None:
            raise self.unsupported()
        outputs = handler(self, self._inputs())
        for name, symbol in zip(self.node.output, outputs, strict=False):
            if name:
                self.symbols[name] = symbol

    def _inputs(self) -> Inputs:
        found: Inputs = []
        for name in self.node.input:
            if not name:
                found.append(None)
            elif name in self.symbols:
                found.append(self.symbols[name])
            else:
                raise self.refuse(f"reads '{name}', which no mapped node produces")
        return found

    def attribute(self, name: str, default: object = None) -> object:
        for attribute in self.node.attribute:
            if attribute.name == name:
                value = helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def int_attribute(self, name: str, default: int) -> int:
        value = self.attribute(name, default)
        assert isinstance(value, int)
        return value

    def constant(self, symbol: Symbol | None, what: str) -> np.ndarray:
        if not isinstance(symbol, Const):
            raise self.refuse(f"needs a constant {what} (an initializer), not a computed value")
        return symbol.value

    def row(self, value: np.ndarray, size: int, what: str) -> np.ndarray:
        """A constant that broadcasts over the batch to one value per feature."""
        if value.size not in (1, size) or (value.ndim == 2 and value.shape[0] != 1) or value.ndim > 2:
            raise self.refuse(f"has a {what} of shape {list(value.shape)}; it must broadcast to [1, {size}]")
        return np.broadcast_to(value.reshape(-1).astype(np.float64), (size,)).copy()

    # dense layers

    def last(self, symbol: Symbol | None, *, doing: str) -> Layer:
        """The last layer, when `symbol` is its current value (anything else would branch the chain)."""
        if isinstance(symbol, Head | Label | Complement):
            raise self.refuse(f"{doing} after the output head; Softmax/Sigmoid/ArgMax are mapped only at the output")
        if not isinstance(symbol, Dense):
            raise self.refuse(f"{doing} on a value that is not a dense layer's output")
        if symbol.layer != len(self.layers) - 1:
            raise self.refuse(f"{doing} on the output of layer {symbol.layer}, but the chain continues after it")
        layer = self.layers[symbol.layer]
        if symbol.version != layer.version:
            raise self.refuse(f"{doing} on a value of layer {symbol.layer} that other nodes have since changed")
        return layer

    def new_layer(self, source: Symbol | None, weights: np.ndarray, bias: np.ndarray) -> Dense:
        """Appends y = source @ weights.T + bias, taking a pending scale and offset of `source` into it, or, of
        the model input, into the input transform."""
        affine = source if isinstance(source, Affine) else None
        if affine is not None:
            source = affine.source
        if isinstance(source, Input):
            if self.layers:
                raise self.refuse("reads the model input, but a dense layer's input must be the previous layer")
            if len(source.dims) != 1:
                raise self.refuse("reads an input of more than two dimensions; flatten it first (Flatten axis=1)")
            expected = source.dims[0]
        else:
            expected = self.last(source, doing="takes a dense layer's input").weights.shape[0]
        if expected is not None and weights.shape[1] != expected:
            raise self.refuse(f"has weights for {weights.shape[1]} inputs, but its input has {expected} features")
        if affine is not None:
            if len(affine.scale) not in (1, weights.shape[1]):
                raise self.refuse(
                    f"has weights for {weights.shape[1]} inputs, but {affine.operator} (node '{affine.node}') "
                    f"scales {len(affine.scale)} features"
                )
            if isinstance(source, Input):
                bias, self.input_offset, self.input_gain = input_transform(weights, bias, affine.scale, affine.shift)
            else:
                weights, bias = scale_inputs(weights, bias, affine.scale, affine.shift)
        self.layers.append(Layer(weights.astype(np.float32), bias.astype(np.float32)))
        return Dense(len(self.layers) - 1, 0)

    def bump(self, layer: Layer) -> Dense:
        layer.version += 1
        return Dense(len(self.layers) - 1, layer.version)

    # per-feature scale and offset

    def per_feature(self, value: np.ndarray, what: str) -> np.ndarray:
        """A constant operand of a per-feature map: a scalar, or a vector shaped [F] or [1, F]."""
        if value.size != 1 and (value.ndim > 2 or (value.ndim == 2 and value.shape[0] != 1)):
            raise self.refuse(f"has a {what} of shape {list(value.shape)}; it must be a scalar or one per feature")
        return value.reshape(-1).astype(np.float64)

    def affine(self, source: Symbol | None, scale: np.ndarray, shift: np.ndarray, *, doing: str) -> Symbol:
        """`source * scale + shift` per feature: folded into the layer it follows if that has no Relu, else kept
        (composed with any map already pending) for the next dense layer."""
        if source is None:
            raise self.refuse("has no input")
        base = source.source if isinstance(source, Affine) else source
        width = max(len(scale), len(shift))
        features: int | None
        if isinstance(base, Input):
            if len(base.dims) != 1 and width != 1:
                raise self.refuse(f"{doing} per element of a multi-dimensional input; flatten it first")
            features = base.dims[0] if len(base.dims) == 1 else None
        else:
            features = self.last(base, doing=doing).weights.shape[0]
        if features is not None and width not in (1, features):
            raise self.refuse(f"{doing} with {width} values, but its input has {features} features")
        if isinstance(source, Affine):  # s2 * (s1 * x + c1) + c2
            if 1 not in (width, len(source.scale)) and width != len(source.scale):
                raise self.refuse(f"{doing} with {width} values after a map of {len(source.scale)} features")
            scale, shift = scale * source.scale, scale * source.shift + shift
        scale, shift = (array.copy() for array in np.broadcast_arrays(scale, shift))
        if isinstance(base, Dense) and not self.layers[base.layer].relu:
            layer = self.layers[base.layer]
            layer.scale_outputs(scale, shift)
            return self.bump(layer)
        assert isinstance(base, Input | Dense)
        return Affine(base, scale, shift, self.node.op_type, self.name)

    def settle(self, symbol: Symbol | None) -> Symbol | None:
        """What a non-dense reader sees of a pending map: folded into the last layer when Relu commutes with it
        (relu(s·z) = s·relu(z) for s >= 0), refused when it cannot be; anything else unchanged."""
        if not isinstance(symbol, Affine) or not isinstance(symbol.source, Dense):
            return symbol
        if id(symbol) in self._settled:
            return self._settled[id(symbol)]
        source, layer = symbol.source, self.layers[symbol.source.layer]
        if source.layer != len(self.layers) - 1 or source.version != layer.version:
            return symbol  # a value from inside the chain: the reader refuses it as such
        if (symbol.scale < 0).any() or symbol.shift.any():
            change = "shifts" if symbol.shift.any() else "negates"
            raise UnsupportedModelError(
                f"{symbol.operator} (node '{symbol.node}') {change} the output of layer {source.layer} after its "
                "Relu, and no dense layer follows to take it into its weights; only a non-negative scale without "
                "offset folds into the last layer",
                operator=symbol.operator,
                node=symbol.node,
            )
        layer.scale_outputs(symbol.scale, np.zeros_like(symbol.shift))
        self._settled[id(symbol)] = settled = self.bump(layer)
        return settled

    # the end

    def _finish(self, input_name: str) -> FloatModel:
        if not self.layers:
            raise UnsupportedModelError(f"the model has no dense layer (Gemm or MatMul); {MAPPED}")
        outputs = [(value, self.settle(self.symbols.get(value.name))) for value in self.graph.output]
        last = len(self.layers) - 1
        pair = any(getattr(symbol, "pair", False) for _, symbol in outputs)
        if pair:
            layer = self.layers[last]
            layer.weights = np.vstack([np.zeros_like(layer.weights), layer.weights])
            layer.bias = np.concatenate([np.zeros_like(layer.bias), layer.bias])
        head = tuple(self._head_output(value, symbol, last, pair) for value, symbol in outputs)
        layers = tuple(DenseLayer(layer.weights, layer.bias, layer.relu) for layer in self.layers)
        return FloatModel(
            input_name=input_name,
            layers=layers,
            head=head,
            input_offset=self.input_offset,
            input_gain=self.input_gain,
        )

    def _head_output(self, value: onnx.ValueInfoProto, symbol: Symbol | None, last: int, pair: bool) -> HeadOutput:
        def fail(why: str) -> UnsupportedModelError:
            return UnsupportedModelError(f"output '{value.name}' {why}")

        if not isinstance(symbol, Dense | Head | Label):
            raise fail("is not computed from the last dense layer; outputs must be its values or its head")
        if symbol.layer != last or symbol.version != self.layers[last].version:
            raise fail("is taken from inside the chain of dense layers; only the last layer's values are served")
        if getattr(symbol, "pair", False) != pair:
            raise fail("mixes a binary classifier's one-column score with its two-column probabilities")
        width = self.layers[last].weights.shape[0]
        declared = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
        if isinstance(symbol, Label):
            if not symbol.flat:
                raise fail("has labels of shape [N, 1]; the FPGA image serves [N] (ArgMax keepdims=0 or Reshape [-1])")
            if symbol.labels and len(symbol.labels) != width:
                raise fail(f"maps {width} outputs to {len(symbol.labels)} class labels")
            op: HeadOp = "argmax"
            elem, labels = symbol.elem, symbol.labels
        else:
            op = "identity" if isinstance(symbol, Dense) else "softmax" if symbol.pair else symbol.op
            elem, labels = TensorProto.FLOAT, ()
        if elem not in DATATYPES or (declared and declared != elem):
            name = type_name(declared or elem)
            raise fail(f"is {name}; the FPGA head serves FLOAT values, INT64 labels and STRING labels")
        return HeadOutput(value.name, op, DATATYPES[elem], labels)

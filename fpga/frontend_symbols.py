"""What a tensor of an ONNX graph stands for while the frontend reads it, and the dense layers it has found so far.

Every tensor is one of: the model's input, a constant, the running value of a dense layer, a per-feature scale
and offset waiting for the next dense layer, or a head value (softmax, sigmoid, argmax, class labels) computed
from the last layer. A dense layer's value carries a version, bumped by every node that changes the layer in
place (a folded bias, scale or Relu), so that a value read after such a change is recognised as stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from onnx import TensorProto


@dataclass(frozen=True, slots=True)
class Const:
    value: np.ndarray


@dataclass(frozen=True, slots=True)
class Input:
    dims: tuple[int | None, ...]  # without the batch axis


@dataclass(frozen=True, slots=True)
class Dense:
    """The values of layer `layer` as they were at `version`."""

    layer: int
    version: int


@dataclass(frozen=True, slots=True, eq=False)
class Affine:
    """`source * scale + shift`, per feature, kept until a dense layer takes it into its weights.

    `scale` and `shift` are float64 vectors of one length: 1 (every feature) or the feature count. A source that
    is a layer's value is a layer with Relu (without Relu the map folds into the layer at once). `operator` and
    `node` name the last node that made it, for a refusal when nothing can take it.
    """

    source: Input | Dense
    scale: np.ndarray
    shift: np.ndarray
    operator: str
    node: str


@dataclass(frozen=True, slots=True)
class Head:
    """softmax/sigmoid of a layer; `pair` is the binary form [1 - sigmoid(z), sigmoid(z)]."""

    op: Literal["softmax", "sigmoid"]
    layer: int
    version: int
    pair: bool = False


@dataclass(frozen=True, slots=True)
class Complement:
    """1 - sigmoid(z) of a one-output layer: half of a binary classifier's probabilities."""

    layer: int
    version: int


@dataclass(frozen=True, slots=True)
class Label:
    """argmax over the features of a layer, optionally mapped to class labels; `flat` when shaped [N]."""

    layer: int
    version: int
    pair: bool
    elem: int
    flat: bool
    labels: tuple[int | str, ...] = ()


Symbol = Const | Input | Dense | Affine | Head | Complement | Label


@dataclass(slots=True)
class Layer:
    """A dense layer while the graph is read: folded nodes change it in place."""

    weights: np.ndarray  # (out, in)
    bias: np.ndarray  # (out,)
    relu: bool = False
    version: int = 0

    def scale_outputs(self, scale: np.ndarray, shift: np.ndarray) -> None:
        """y * scale + shift per output: diag(scale) · W and scale · b + shift."""
        self.weights = (scale[:, None] * self.weights.astype(np.float64)).astype(np.float32)
        self.bias = (scale * self.bias.astype(np.float64) + shift).astype(np.float32)


def scale_inputs(
    weights: np.ndarray, bias: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A layer reading x * scale + shift as one reading x: W · diag(scale), and b + W · shift."""
    columns = weights.shape[1]
    scale, shift = np.broadcast_to(scale, (columns,)), np.broadcast_to(shift, (columns,))
    return weights * scale[None, :], bias + weights @ shift


def input_transform(
    weights: np.ndarray, bias: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """x * scale + shift before a first layer as the input transform (x - offset) * gain: (bias, offset, gain).

    A feature scaled by 0 is the constant `shift`, which no offset expresses: it moves into the layer's bias
    and its gain is 0. An offset of zeros or a gain of ones is None, the identity.
    """
    columns = weights.shape[1]
    gain = np.broadcast_to(np.asarray(scale, dtype=np.float64), (columns,)).copy()
    shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), (columns,))
    constant = gain == 0
    bias = bias + weights[:, constant].astype(np.float64) @ shift[constant]
    offset = np.where(constant, 0.0, -shift / np.where(constant, 1.0, gain))
    return bias, (offset if offset.any() else None), (None if (gain == 1).all() else gain)


def size(dims: tuple[int | None, ...]) -> int | None:
    known = [dim for dim in dims if dim is not None]
    return math.prod(known) if len(known) == len(dims) else None


def type_name(elem: int) -> str:
    return str(TensorProto.DataType.Name(elem)) if elem in TensorProto.DataType.values() else str(elem)

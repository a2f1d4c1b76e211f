"""The two forms a model takes between ONNX and hardware: a float chain of dense layers, and its integer twin.

`FloatModel` is what the ONNX frontend reads: dense layers (Gemm, or MatMul + Add), each optionally followed by
ReLU, then a host-side head (softmax, sigmoid, argmax and class labels) that runs after the FPGA.

`IntegerModel` is the quantized model and the bit-exact reference for the hardware. Its arithmetic is fixed
here and nowhere else; the Amaranth design, its simulation and the virtual FPGA must all agree with
`IntegerModel.forward` bit for bit:

    acc = x @ W.T + b                          (int8 x int8 products, int32 bias, int32 accumulator)
    if the layer requantizes (all but the last):
        y = (acc * multiplier + 2**(shift-1)) >> shift   (arithmetic shift, i.e. rounding half up)
        y = clamp(y, 0 if relu else -128, 127)           (ReLU folded into the clamp; int8 out)
    else (the last layer):
        y = max(acc, 0) if relu else acc                 (int32 out, dequantized on the host)

`multiplier` is in [0, 2**15) and `shift` in [1, 63]. The model's input is
`round((x - input_offset) * input_gain / input_scale)` clamped to [-128, 127]; its output is `y * output_scale`.

The input transform (`input_offset`, `input_gain`, one float per feature; None is the identity) is a model's
leading per-feature scaler (StandardScaler and the like), computed on the host as the input is quantized. Folded
into the first layer instead, a near-constant feature's large factor would take the whole int8 weight range of
that layer; on the host it costs nothing and the int8 input already carries the scaled features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from edgewise.fpga.errors import FpgaError, QuantizationError, UnsupportedModelError

HeadOp = Literal["identity", "softmax", "sigmoid", "argmax"]
MULTIPLIER_BITS = 15
INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class HeadOutput:
    """One output of the served model, computed on the host from the dequantized last layer.

    `op` is applied to the last layer's values; `labels` maps argmax indices to class labels (ints or strings),
    as scikit-learn classifiers export them. `datatype` is the KServe v2 datatype of the output.
    """

    name: str
    op: HeadOp
    datatype: str = "FP32"
    labels: tuple[int | str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "datatype": self.datatype, "labels": list(self.labels)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HeadOutput:
        return cls(raw["name"], raw["op"], raw.get("datatype", "FP32"), tuple(raw.get("labels", ())))


@dataclass(frozen=True, slots=True)
class DenseLayer:
    """y = x @ weights.T + bias, then ReLU when `relu`. weights: float (out, in); bias: float (out,)."""

    weights: np.ndarray
    bias: np.ndarray
    relu: bool

    @property
    def shape(self) -> tuple[int, int]:
        out_features, in_features = self.weights.shape
        return int(out_features), int(in_features)


def transform_input(x: np.ndarray, offset: np.ndarray | None, gain: np.ndarray | None) -> np.ndarray:
    """`(x - offset) * gain` per feature, in float64; None leaves that step out (the identity)."""
    values = np.asarray(x, dtype=np.float64)
    if offset is not None:
        values = values - offset
    if gain is not None:
        values = values * gain
    return values


def _check_input_transform(model: FloatModel | IntegerModel, error: type[FpgaError]) -> None:
    """Stores `input_offset` and `input_gain` as read-only float64 copies, each None or finite, one per input."""
    for name in ("input_offset", "input_gain"):
        value = getattr(model, name)
        if value is None:
            continue
        vector = np.array(value, dtype=np.float64)
        what = name.replace("_", " ")
        if vector.shape != (model.in_features,):
            raise error(
                f"the {what} has shape {list(vector.shape)}; it must hold one value per input ({model.in_features})"
            )
        if not np.isfinite(vector).all():
            raise error(f"the {what} holds a value that is not finite")
        vector.flags.writeable = False
        object.__setattr__(model, name, vector)


class _LayerChain:
    """The input and output widths of a chain of layers (dense or integer)."""

    __slots__ = ()
    layers: tuple[DenseLayer, ...] | tuple[IntLayer, ...]

    @property
    def in_features(self) -> int:
        return self.layers[0].shape[1]

    @property
    def out_features(self) -> int:
        return self.layers[-1].shape[0]


@dataclass(frozen=True, slots=True)
class FloatModel(_LayerChain):
    """The dense chain of an ONNX model, the input transform before it and the head that follows it."""

    input_name: str
    layers: tuple[DenseLayer, ...]
    head: tuple[HeadOutput, ...]
    input_offset: np.ndarray | None = None  # float (in_features,); see the module docstring
    input_gain: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_input_transform(self, UnsupportedModelError)

    def transform_input(self, x: np.ndarray) -> np.ndarray:
        """What the first layer reads: the input after the input transform, float64 (N, in_features)."""
        return transform_input(x, self.input_offset, self.input_gain)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The last layer's float values (before the head) for a batch (N, in_features)."""
        y = self.transform_input(x)
        for layer in self.layers:
            y = y @ layer.weights.T.astype(np.float64) + layer.bias.astype(np.float64)
            if layer.relu:
                y = np.maximum(y, 0.0)
        return y


@dataclass(frozen=True, slots=True)
class IntLayer:
    weights: np.ndarray  # int8 (out, in)
    bias: np.ndarray  # int32 (out,)
    multiplier: int  # unused when not `requantize`
    shift: int
    relu: bool
    requantize: bool

    @property
    def shape(self) -> tuple[int, int]:
        out_features, in_features = self.weights.shape
        return int(out_features), int(in_features)


@dataclass(frozen=True, slots=True)
class IntegerModel(_LayerChain):
    """The quantized model; see the module docstring for its arithmetic."""

    input_name: str
    layers: tuple[IntLayer, ...]
    input_scale: float
    output_scale: float
    head: tuple[HeadOutput, ...]
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. per-layer activation scales, for reports
    input_offset: np.ndarray | None = None  # float (in_features,); see the module docstring
    input_gain: np.ndarray | None = None

    def __post_init__(self) -> None:
        for index, layer in enumerate(self.layers):
            if layer.weights.dtype != np.int8 or layer.bias.dtype != np.int32:
                raise QuantizationError(f"layer {index}: weights must be int8 and bias int32")
            if layer.requantize and not (0 <= layer.multiplier < 2**MULTIPLIER_BITS and 1 <= layer.shift <= 63):
                raise QuantizationError(
                    f"layer {index}: multiplier {layer.multiplier} or shift {layer.shift} out of range"
                )
            if layer.requantize == (index == len(self.layers) - 1):
                raise QuantizationError("every layer but the last requantizes to int8; the last emits int32")
        _check_input_transform(self, QuantizationError)

    @property
    def architecture(self) -> tuple[tuple[int, int, bool], ...]:
        """What the hardware's logic depends on: layer shapes and ReLU flags (weights live in block RAM)."""
        return tuple((*layer.shape, layer.relu) for layer in self.layers)

    def transform_input(self, x: np.ndarray) -> np.ndarray:
        return transform_input(x, self.input_offset, self.input_gain)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """int8 input: `clip(rint((x - input_offset) * input_gain / input_scale), -128, 127)`."""
        q = np.rint(self.transform_input(x) / self.input_scale)
        return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float64) * self.output_scale).astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """int8 (N, in_features) -> int32 (N, out_features), exactly as the hardware computes it."""
        y = np.asarray(x)
        if y.dtype != np.int8:
            raise QuantizationError(f"the integer model takes int8 input, not {y.dtype}")
        values = y.astype(np.int64)
        for index, layer in enumerate(self.layers):
            acc = values @ layer.weights.astype(np.int64).T + layer.bias.astype(np.int64)
            if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
                raise QuantizationError(f"layer {index}: the accumulator overflows int32")
            if layer.requantize:
                scaled = (acc * layer.multiplier + (1 << (layer.shift - 1))) >> layer.shift
                values = np.clip(scaled, 0 if layer.relu else INT8_MIN, INT8_MAX)
            else:
                values = np.maximum(acc, 0) if layer.relu else acc
        return values.astype(np.int32)

    # -- files -------------------------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """`integer_model.json` (scales, shifts, input transform, head) and `integer_model.npz` (weights, biases).

        The input transform is written as JSON numbers, which read back as the same float64 values."""
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        layers = []
        for index, layer in enumerate(self.layers):
            arrays[f"w{index}"] = layer.weights
            arrays[f"b{index}"] = layer.bias
            layers.append(
                {"multiplier": layer.multiplier, "shift": layer.shift, "relu": layer.relu,
                 "requantize": layer.requantize, "shape": list(layer.shape)}
            )  # fmt: skip
        with (folder / "integer_model.npz").open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # the stubs take allow_pickle for a key
        description = {
            "format": "edgewise.integer-model/1",
            "input_name": self.input_name,
            "input_scale": self.input_scale,
            "output_scale": self.output_scale,
            "input_offset": None if self.input_offset is None else self.input_offset.tolist(),
            "input_gain": None if self.input_gain is None else self.input_gain.tolist(),
            "layers": layers,
            "head": [output.to_json() for output in self.head],
            "metadata": self.metadata,
        }
        (folder / "integer_model.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> IntegerModel:
        description = json.loads((folder / "integer_model.json").read_text())
        with np.load(folder / "integer_model.npz") as arrays:
            layers = tuple(
                IntLayer(
                    weights=arrays[f"w{index}"].astype(np.int8),
                    bias=arrays[f"b{index}"].astype(np.int32),
                    multiplier=int(raw["multiplier"]),
                    shift=int(raw["shift"]),
                    relu=bool(raw["relu"]),
                    requantize=bool(raw["requantize"]),
                )
                for index, raw in enumerate(description["layers"])
            )
        return cls(
            input_name=description["input_name"],
            layers=layers,
            input_scale=float(description["input_scale"]),
            output_scale=float(description["output_scale"]),
            head=tuple(HeadOutput.from_json(raw) for raw in description["head"]),
            metadata=dict(description.get("metadata", {})),
            input_offset=_optional_array(description.get("input_offset")),
            input_gain=_optional_array(description.get("input_gain")),
        )


def _optional_array(value: Any) -> np.ndarray | None:
    """A JSON list of numbers as float64, or None (files written before the input transform lack the key)."""
    return None if value is None else np.asarray(value, dtype=np.float64)

"""Post-training quantization: a `FloatModel` and calibration inputs → the `IntegerModel` the hardware computes.

Weights and activations are int8 with one symmetric scale per tensor, biases int32 at the accumulator's scale
(input scale * weight scale). Between layers the accumulator is brought back to int8 by an integer multiplier
and a right shift, so the hardware needs no floating point at all; the last layer keeps its int32 accumulator
and the host multiplies it by `output_scale`. The arithmetic itself lives in `IntegerModel.forward` only.

The input scale is set from the inputs after the model's input transform (a leading scaler, applied on the
host), since that is what the int8 input carries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from edgewise.fpga.calibration import make_samples
from edgewise.fpga.errors import QuantizationError
from edgewise.fpga.ir import INT8_MAX, INT32_MAX, MULTIPLIER_BITS, DenseLayer, FloatModel, IntegerModel, IntLayer

MAX_SHIFT = 63
# The 99.99th percentile of magnitudes: on the test models (digits MLPs, the 16-32-32-5 benchmark, five seeds
# each) it gave 3-10% lower output error than the maximum and never more accuracy loss; on small calibration
# sets it is the maximum.
DEFAULT_PERCENTILE = 99.99
WORST_CASE_INPUT = 128  # |int8| at its largest, for the accumulator bound


def quantize(model: FloatModel, calibration: np.ndarray, *, percentile: float = DEFAULT_PERCENTILE) -> IntegerModel:
    """Scales every activation from `calibration` (N, in_features, raw model inputs) by a percentile of its
    magnitudes; the input's from the inputs after the input transform.

    A percentile below 100 saturates the rarest largest activations to spend the int8 range on the common ones;
    100 takes the maximum, which never saturates on the calibration data itself.
    """
    if not 50.0 <= percentile <= 100.0:
        raise QuantizationError(f"the calibration percentile must be between 50 and 100, not {percentile}")
    x = make_samples(calibration, features=model.in_features, source="calibration data").x
    values = model.transform_input(x)
    input_scale = activation_scale(values, percentile)
    scale = input_scale
    layers: list[IntLayer] = []
    report: list[dict[str, Any]] = []
    for index, layer in enumerate(model.layers):
        values = FloatModel(model.input_name, (layer,), ()).forward(values)  # the one float definition
        last = index == len(model.layers) - 1
        out_scale = None if last else activation_scale(values, percentile)
        int_layer, details = quantize_layer(layer, index, input_scale=scale, output_scale=out_scale)
        layers.append(int_layer)
        report.append(details)
        if out_scale is not None:
            scale = out_scale
    output_scale = report[-1]["accumulator_scale"]
    metadata = {
        "calibration": {"samples": len(x), "activation_range": "max" if percentile >= 100 else f"p{percentile:g}"},
        "input_scale": input_scale,
        "output_scale": output_scale,
        "layers": report,
    }
    return IntegerModel(
        input_name=model.input_name,
        layers=tuple(layers),
        input_scale=input_scale,
        output_scale=output_scale,
        head=model.head,
        metadata=metadata,
        input_offset=model.input_offset,
        input_gain=model.input_gain,
    )


def activation_scale(values: np.ndarray, percentile: float = 100.0) -> float:
    """The symmetric int8 scale that maps the chosen magnitude of `values` to 127."""
    magnitudes = np.abs(values).ravel()
    bound = float(magnitudes.max()) if percentile >= 100 else float(np.percentile(magnitudes, percentile))
    if bound == 0.0:  # a percentile inside a run of zeros (a sparse ReLU output), or an all-zero tensor
        bound = float(magnitudes.max()) or 1.0
    return bound / INT8_MAX


def weight_scale(weights: np.ndarray) -> float:
    bound = float(np.abs(weights).max()) if weights.size else 0.0
    return (bound or 1.0) / INT8_MAX


def quantize_layer(
    layer: DenseLayer, index: int, *, input_scale: float, output_scale: float | None
) -> tuple[IntLayer, dict[str, Any]]:
    """One dense layer at a given input scale; `output_scale` None for the last layer (no requantization)."""
    w_scale = weight_scale(layer.weights)
    acc_scale = input_scale * w_scale
    weights = np.clip(np.rint(layer.weights.astype(np.float64) / w_scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    bias = np.rint(layer.bias.astype(np.float64) / acc_scale)
    if bias.size and np.abs(bias).max() > INT32_MAX:
        raise QuantizationError(
            f"layer {index}: a bias of {float(np.abs(layer.bias).max()):.4g} does not fit int32 at the accumulator "
            f"scale {acc_scale:.3g}; the layer's inputs or weights are too small next to its bias"
        )
    bias = bias.astype(np.int32)
    worst = int(WORST_CASE_INPUT * np.abs(weights.astype(np.int64)).sum(axis=1).max() + np.abs(bias).max())
    if worst > INT32_MAX:
        raise QuantizationError(
            f"layer {index}: the accumulator can reach {worst}, over int32 ({INT32_MAX}); the layer has too many "
            "inputs or too large a bias for a 32-bit accumulator"
        )
    details: dict[str, Any] = {
        "shape": list(layer.shape),
        "relu": layer.relu,
        "input_scale": input_scale,
        "weight_scale": w_scale,
        "accumulator_scale": acc_scale,
        "worst_case_accumulator": worst,
    }
    multiplier, shift = 0, 1  # unused by the last layer, but in range for any reader of the file
    if output_scale is not None:
        real = acc_scale / output_scale
        multiplier, shift = fixed_point(real, index)
        details |= {
            "output_scale": output_scale,
            "multiplier": multiplier,
            "shift": shift,
            "requantization_error": abs(multiplier / 2**shift - real) / real,
        }
    int_layer = IntLayer(weights, bias, multiplier, shift, layer.relu, requantize=output_scale is not None)
    return int_layer, details


def fixed_point(real: float, index: int = 0) -> tuple[int, int]:
    """(multiplier, shift) with multiplier / 2**shift ≈ `real`, the multiplier as large as fits its bits."""
    limit = 2**MULTIPLIER_BITS
    if not 0.0 < real < limit / 2:
        raise QuantizationError(
            f"layer {index}: the requantization factor {real:.3g} cannot be a {MULTIPLIER_BITS}-bit multiplier "
            "and a shift of at least 1; the calibration data gives this layer a degenerate range"
        )
    shift = max(1, min(MAX_SHIFT, MULTIPLIER_BITS - 1 - int(np.floor(np.log2(real)))))
    while shift > 1 and round(real * 2**shift) >= limit:  # rounding up can reach the limit
        shift -= 1
    multiplier = round(real * 2**shift)
    if multiplier >= limit:
        raise QuantizationError(f"layer {index}: the requantization factor {real:.3g} needs a multiplier over {limit}")
    if multiplier == 0:
        raise QuantizationError(
            f"layer {index}: the requantization factor {real:.3g} is below the smallest multiplier / 2**{MAX_SHIFT}"
        )
    return multiplier, shift

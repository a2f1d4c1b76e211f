"""Integer models for the hardware tests, made directly (random int8 weights, int32 biases, multipliers, shifts)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from edgewise.fpga.ir import HeadOutput, IntegerModel, IntLayer


def random_integer_model(
    sizes: Sequence[int],
    *,
    seed: int,
    last_relu: bool = False,
    relu: bool = True,
    bias_scale: int = 2000,
    multiplier: int | None = None,
    shift: int | None = None,
) -> IntegerModel:
    """An MLP of `sizes` (e.g. (16, 32, 5)) with plausible requantization (outputs not all saturated)."""
    rng = np.random.default_rng(seed)
    layers = []
    count = len(sizes) - 1
    for index in range(count):
        in_features, out_features = sizes[index], sizes[index + 1]
        last = index == count - 1
        weights = rng.integers(-128, 128, size=(out_features, in_features)).astype(np.int8)
        bias = rng.integers(-bias_scale, bias_scale + 1, size=out_features).astype(np.int32)
        if last:
            layers.append(IntLayer(weights, bias, 0, 0, last_relu, False))
            continue
        chosen_shift = shift if shift is not None else int(rng.integers(16, 24))
        # aim the typical accumulator (~ sqrt(in) * 128 * 74) at about +-100
        typical = np.sqrt(in_features) * 128 * 74
        chosen = multiplier if multiplier is not None else int(min(2**15 - 1, 100 * 2**chosen_shift / typical))
        layers.append(IntLayer(weights, bias, chosen, chosen_shift, relu, True))
    return IntegerModel(
        input_name="input",
        layers=tuple(layers),
        input_scale=0.05,
        output_scale=0.001,
        head=(HeadOutput("scores", "identity"),),
    )


def random_inputs(in_features: int, count: int, *, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(count, in_features)).astype(np.int8)

"""The Amaranth design in Amaranth's simulator against IntegerModel.forward, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from edgewise.fpga.errors import FpgaError, SimulationMismatchError
from edgewise.fpga.ir import IntegerModel, IntLayer
from edgewise.fpga.sim import check_outputs, simulate, simulator_speed, verify

from tests.fpga.hw_models import random_inputs, random_integer_model


@pytest.mark.parametrize(
    ("sizes", "parallelism", "last_relu"),
    [
        ((16, 32, 5), 8, False),
        ((7, 10, 3), 3, True),  # widths not multiples of P, ReLU on the last layer
        ((5, 4, 3, 2), 1, False),
        ((3, 1, 4), 2, False),  # a one-wide hidden layer: the next layer waits for its only input
        ((6, 9), 4, True),  # a single layer
        ((4, 12, 9, 6, 3), 3, False),  # four layers: both banks reused
    ],
)
def test_design_matches_reference(sizes: tuple[int, ...], parallelism: int, last_relu: bool) -> None:
    model = random_integer_model(sizes, seed=sum(sizes) + parallelism, last_relu=last_relu)
    inputs = random_inputs(sizes[0], 4, seed=parallelism)
    result = verify(model, parallelism=parallelism, inputs=inputs)
    assert np.array_equal(result.outputs, model.forward(inputs))
    assert len(set(result.cycles.tolist())) == 1  # the schedule does not depend on the data


def _extreme_model(*, multiplier: int, shift: int, bias: int, relu: bool, weight: int) -> IntegerModel:
    rng = np.random.default_rng(multiplier + shift)
    hidden = np.full((9, 12), weight, dtype=np.int8)
    hidden[::2] = rng.choice([-128, 127], size=(5, 12)).astype(np.int8)
    output = rng.choice([-128, 127], size=(4, 9)).astype(np.int8)
    return IntegerModel(
        input_name="input",
        layers=(
            IntLayer(hidden, np.array([bias, -bias] * 4 + [bias], dtype=np.int32), multiplier, shift, relu, True),
            IntLayer(output, np.array([2**31 - 2**22, -(2**31) + 2**22, 0, 7], dtype=np.int32), 0, 0, True, False),
        ),
        input_scale=1.0,
        output_scale=1.0,
        head=(),
    )


@pytest.mark.parametrize(
    ("multiplier", "shift", "bias", "relu", "weight"),
    [
        (2**15 - 1, 1, 2**31 - 2**20, False, -128),  # the largest multiplier, smallest shift: everything saturates
        (2**15 - 1, 63, -(2**31) + 2**20, True, 127),  # the largest shift: everything rounds to zero
        (1, 47, 2**30, False, -128),
        (3, 20, -5, False, 127),
        (0, 1, 12345, False, -128),  # a zero multiplier
        (2**14 + 1, 26, -(2**30), True, -128),
    ],
)
def test_extreme_values(multiplier: int, shift: int, bias: int, relu: bool, weight: int) -> None:
    model = _extreme_model(multiplier=multiplier, shift=shift, bias=bias, relu=relu, weight=weight)
    rails = np.array([[-128] * 12, [127] * 12, [-128, 127] * 6, [0] * 12], dtype=np.int8)
    verify(model, parallelism=4, inputs=rails)


def test_benchmark_shape_meets_the_cycle_target() -> None:
    model = random_integer_model((16, 32, 32, 5), seed=7)
    result = verify(model, parallelism=8, inputs=random_inputs(16, 2, seed=3))
    # 1696 MACs in 224 array steps, plus loading, requantization and the pipeline
    assert 224 <= result.cycles_per_inference <= 300
    assert result.cycles_per_second > 0


def test_mismatch_names_row_output_and_values() -> None:
    model = random_integer_model((6, 9, 3), seed=11)
    inputs = random_inputs(6, 2, seed=12)
    result = simulate(model, parallelism=4, inputs=inputs)
    wrong = IntegerModel(
        input_name=model.input_name,
        layers=(model.layers[0], IntLayer(model.layers[1].weights, model.layers[1].bias + 1, 0, 0, False, False)),
        input_scale=1.0,
        output_scale=1.0,
        head=(),
    )
    # the design built from `model` against the reference of a model whose outputs are all one larger
    expected = wrong.forward(inputs)
    assert np.array_equal(expected, result.outputs + 1)
    with pytest.raises(SimulationMismatchError, match=r"row 0, output 0: design -?\d+, reference -?\d+"):
        check_outputs(expected, result.outputs, parallelism=4)
    check_outputs(model.forward(inputs), result.outputs, parallelism=4)


def test_inputs_are_checked() -> None:
    model = random_integer_model((6, 3), seed=1)
    with pytest.raises(FpgaError, match="int8 of shape"):
        simulate(model, parallelism=2, inputs=np.zeros((2, 5), dtype=np.int8))


def test_simulator_speed_is_measured() -> None:
    model = random_integer_model((6, 9, 3), seed=2)
    assert simulator_speed(model, parallelism=4, inferences=2) > 0

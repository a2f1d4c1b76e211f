"""Runs the `Accelerator` in Amaranth's simulator and holds it to the integer reference, bit for bit.

The testbench drives the design as a host would: it offers one input row a beat per cycle and takes each output
beat as soon as it is valid. A row's cycle count runs from the cycle its first input beat is accepted to the
cycle its last output beat is taken, both included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgewise.fpga.errors import FpgaError, SimulationMismatchError
from edgewise.fpga.hdl import Accelerator
from edgewise.fpga.ir import IntegerModel

_CLOCK_PERIOD = 1 / 48e6


@dataclass(frozen=True, slots=True)
class SimulationResult:
    outputs: np.ndarray  # int32 (N, out_features)
    cycles: np.ndarray  # int64 (N,): cycles of each inference
    simulated_cycles: int  # clock cycles the simulator ran in all
    wall_seconds: float  # time spent in the simulator

    @property
    def cycles_per_inference(self) -> int:
        return int(self.cycles.max()) if self.cycles.size else 0

    @property
    def cycles_per_second(self) -> float:
        """The simulator's speed on this design."""
        return self.simulated_cycles / self.wall_seconds if self.wall_seconds > 0 else 0.0


def simulate(model: IntegerModel, *, parallelism: int, inputs: np.ndarray, vcd: Path | None = None) -> SimulationResult:
    """Run `inputs` (int8, (N, in_features)) through the design, one inference after the other."""
    from amaranth.sim import Simulator  # type: ignore[import-untyped]

    rows = _check_inputs(model, inputs)
    dut = Accelerator(model, parallelism=parallelism)
    layout = dut.layout
    budget = 20 * (layout.weight_steps + layout.neurons + layout.in_features + 64)
    outputs = np.zeros((len(rows), layout.out_features), dtype=np.int32)
    cycles = np.zeros(len(rows), dtype=np.int64)
    clock = [0]

    async def testbench(ctx: Any) -> None:
        features, results = dut.features, dut.outputs
        ctx.set(results.ready, 1)
        for index, row in enumerate(rows):
            sent, received, first = 0, 0, -1
            ctx.set(features.valid, 1)
            ctx.set(features.payload, int(row[0]))
            deadline = clock[0] + budget
            while received < layout.out_features:
                if clock[0] > deadline:
                    raise FpgaError(
                        f"the design produced {received} of {layout.out_features} outputs for row {index} "
                        f"within {budget} cycles"
                    )
                taking_input = sent < len(row) and ctx.get(features.ready)
                giving_output = ctx.get(results.valid)
                if giving_output:
                    outputs[index, received] = ctx.get(results.payload)
                await ctx.tick()
                if taking_input:
                    if sent == 0:
                        first = clock[0]
                    sent += 1
                    if sent < len(row):
                        ctx.set(features.payload, int(row[sent]))
                    else:
                        ctx.set(features.valid, 0)
                if giving_output:
                    received += 1
                    if received == layout.out_features:
                        cycles[index] = clock[0] - first + 1
                clock[0] += 1

    simulator = Simulator(dut)
    simulator.add_clock(_CLOCK_PERIOD)
    simulator.add_testbench(testbench)
    started = time.perf_counter()
    if vcd is not None:
        with simulator.write_vcd(str(vcd)):
            simulator.run()
    else:
        simulator.run()
    wall = time.perf_counter() - started
    return SimulationResult(outputs=outputs, cycles=cycles, simulated_cycles=clock[0], wall_seconds=wall)


def verify(model: IntegerModel, *, parallelism: int, inputs: np.ndarray) -> SimulationResult:
    """Simulate and compare with `model.forward`; the first difference raises SimulationMismatchError."""
    rows = _check_inputs(model, inputs)
    expected = model.forward(rows)
    result = simulate(model, parallelism=parallelism, inputs=rows)
    check_outputs(expected, result.outputs, parallelism=parallelism)
    return result


def check_outputs(expected: np.ndarray, actual: np.ndarray, *, parallelism: int) -> None:
    """Raise SimulationMismatchError naming the first differing row and output, with both values."""
    mismatches = np.argwhere(np.asarray(actual) != np.asarray(expected))
    if mismatches.size:
        row, column = (int(value) for value in mismatches[0])
        raise SimulationMismatchError(
            f"the design disagrees with the integer model at row {row}, output {column}: "
            f"design {int(actual[row, column])}, reference {int(expected[row, column])} "
            f"({len(mismatches)} of {expected.size} values differ; P={parallelism})"
        )


def simulator_speed(model: IntegerModel, *, parallelism: int, inferences: int = 8, seed: int = 0) -> float:
    """Cycles per second of Amaranth's simulator on this design, over `inferences` random input rows."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(-128, 128, size=(inferences, model.in_features)).astype(np.int8)
    return simulate(model, parallelism=parallelism, inputs=inputs).cycles_per_second


def _check_inputs(model: IntegerModel, inputs: np.ndarray) -> np.ndarray:
    rows = np.asarray(inputs)
    if rows.dtype != np.int8 or rows.ndim != 2 or rows.shape[1] != model.in_features:
        raise FpgaError(f"inputs must be int8 of shape (N, {model.in_features}), not {rows.dtype} {tuple(rows.shape)}")
    return rows

"""The FPGA backend: the host's half of an FPGA model, around a driver that runs the design.

The host quantizes each input row (`round((x - offset) * gain / scale)`, clamped to int8; the input transform
`offset`, `gain` is the model's leading scaler, when it has one), hands the int8 vector to the driver,
dequantizes the int32 vector it gets back (`y * output_scale`) and computes each served output from it
(`head.head_output`: identity, softmax, sigmoid, argmax with labels). The cycles the design took travel back as
the response parameter `fpga_cycles`.

The board boundary is the `Driver`: one call that runs one int8 vector and returns the int32 vector and the
cycles it took. `VirtualFpga` clocks the design's CXXRTL model in this process. A driver for a real board would
program `bitstream.bin` when it is created and move the same vectors over the board's link (the ICEBreaker's
UART wrapper); nothing above the driver changes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.backends.fpga.descriptor import FpgaDescriptor, read_descriptor
from edgewise.runtime.scoring.backends.fpga.head import head_output
from edgewise.runtime.scoring.backends.fpga.virtual import VirtualFpga
from edgewise.runtime.scoring.errors import InvalidInputError
from edgewise.runtime.scoring.metrics import FPGA_CYCLES
from edgewise.runtime.scoring.types import Parameters, TensorSpec

INT8_MIN, INT8_MAX = -128, 127


class Driver(Protocol):
    """Runs the design on one input vector; the backend never calls it from two threads at once."""

    def run(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        """int8 (in_features,) -> int32 (out_features,) and the clock cycles the design took."""
        ...


def quantize(
    x: np.ndarray, scale: float, *, offset: np.ndarray | None = None, gain: np.ndarray | None = None
) -> np.ndarray:
    """int8 rows of `x` as the integer model's input: `(x - offset) * gain / scale` in float64 (a None offset or
    gain is left out), rounded half to even, then clamped. The integer model's `quantize_input`, step for step."""
    values = np.asarray(x, dtype=np.float64)
    if np.isnan(values).any():
        raise InvalidInputError("the input holds NaN, which has no quantized value")
    if offset is not None:
        values = values - offset
    if gain is not None:
        with np.errstate(invalid="ignore"):  # inf * 0, refused just below
            values = values * gain
        if np.isnan(values).any():
            raise InvalidInputError("the input holds an infinite value for a feature the model scales by 0")
    return np.clip(np.rint(values / scale), INT8_MIN, INT8_MAX).astype(np.int8)


class FpgaBackend(Backend):
    platform = "edgewise_fpga"
    returns_parameters = True

    def __init__(self, descriptor: FpgaDescriptor, *, driver: Driver) -> None:
        self.descriptor = descriptor
        self._driver = driver
        self._lock = threading.Lock()
        lead = descriptor.input_shape[:-1]
        self._inputs = (TensorSpec(descriptor.input_name, descriptor.input_datatype, descriptor.input_shape),)
        self._outputs = tuple(
            TensorSpec(head.name, head.datatype, lead if head.op == "argmax" else (*lead, descriptor.out_features))
            for head in descriptor.outputs
        )
        self._heads = {head.name: head for head in descriptor.outputs}

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self.predict_with_parameters(inputs, outputs)[0]

    def predict_with_parameters(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> tuple[dict[str, np.ndarray], Parameters]:
        d = self.descriptor
        x = inputs[d.input_name]
        lead = x.shape[:-1]
        rows = quantize(x.reshape(-1, d.in_features), d.input_scale, offset=d.input_offset, gain=d.input_gain)
        raw = np.empty((rows.shape[0], d.out_features), dtype=np.int32)
        cycles = 0
        with self._lock:
            for index, row in enumerate(rows):
                raw[index], taken = self._driver.run(row)
                cycles += taken
        values = raw.astype(np.float64) * d.output_scale
        result = {}
        for name in outputs or self._heads:
            head = self._heads[name]
            array = head_output(head.op, values, labels=head.labels, datatype=head.datatype)
            result[name] = array.reshape(lead if head.op == "argmax" else (*lead, d.out_features))
        return result, {FPGA_CYCLES: cycles}

    def close(self) -> None:
        close = getattr(self._driver, "close", None)
        if close is not None:
            close()


def load_fpga_backend(path: Path) -> FpgaBackend:
    """The backend of the version whose descriptor is `path`, on the virtual FPGA."""
    descriptor = read_descriptor(path)
    driver = VirtualFpga.build(
        descriptor.design_source,
        descriptor.design_include,
        in_features=descriptor.in_features,
        out_features=descriptor.out_features,
    )
    return FpgaBackend(descriptor, driver=driver)

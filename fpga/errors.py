"""Errors of the FPGA toolchain: compiling, verifying and building a model for an FPGA.

EdgewiseError
 └─ FpgaError                       any failure of the FPGA flow
     ├─ UnsupportedModelError       the ONNX graph has an operator or a shape the compiler does not map
     ├─ CalibrationError            missing, empty or mis-shaped calibration or test data
     ├─ QuantizationError           a value does not fit its integer width (e.g. an accumulator over int32)
     ├─ SimulationMismatchError     the simulated hardware disagrees with the integer reference
     ├─ ToolchainError              Yosys, nextpnr, icepack or icebram failed (with the tool's last lines)
     ├─ DesignTooLargeError         the design does not fit the device (with used and available resources)
     └─ PatchError                  the block RAM contents of a bitstream cannot be replaced
"""

from __future__ import annotations

from collections.abc import Mapping

from edgewise._exceptions import EdgewiseError


class FpgaError(EdgewiseError):
    """Base class of the FPGA flow's errors."""


class UnsupportedModelError(FpgaError):
    def __init__(self, message: str, *, operator: str | None = None, node: str | None = None) -> None:
        super().__init__(message)
        self.operator = operator
        self.node = node


class CalibrationError(FpgaError):
    pass


class QuantizationError(FpgaError):
    pass


class SimulationMismatchError(FpgaError):
    pass


class ToolchainError(FpgaError):
    def __init__(self, message: str, *, tool: str = "", output: str = "") -> None:
        super().__init__(message)
        self.tool = tool
        self.output = output


class DesignTooLargeError(FpgaError):
    """`resources` maps a resource name (ICESTORM_LC, ICESTORM_RAM, ICESTORM_DSP, ...) to (used, available)."""

    def __init__(self, message: str, *, resources: Mapping[str, tuple[int, int]]) -> None:
        super().__init__(message)
        self.resources = dict(resources)


class PatchError(FpgaError):
    pass

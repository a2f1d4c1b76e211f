"""FPGA models in the scoring server: the `fpga.json` descriptor, the backend, and the virtual FPGA driver.

Device-side only: nothing here imports the FPGA toolchain (`edgewise.fpga`) or Amaranth. See `backend.py` for
where a real board's driver plugs in.
"""

from edgewise.runtime.scoring.backends.fpga.backend import Driver, FpgaBackend, load_fpga_backend
from edgewise.runtime.scoring.backends.fpga.descriptor import FpgaDescriptor, HeadSpec, read_descriptor
from edgewise.runtime.scoring.backends.fpga.virtual import VirtualFpga, compile_design

__all__ = [
    "Driver",
    "FpgaBackend",
    "FpgaDescriptor",
    "HeadSpec",
    "VirtualFpga",
    "compile_design",
    "load_fpga_backend",
    "read_descriptor",
]

"""The Amaranth design of the FPGA accelerator, its memory contents and its UART boundary (docs/fpga.md)."""

from edgewise.fpga.hdl.accelerator import Accelerator, MemoryInit
from edgewise.fpga.hdl.images import MEMORY_NAMES, MemoryImage, memory_images, memory_shapes, random_images
from edgewise.fpga.hdl.layout import Layout

__all__ = [
    "MEMORY_NAMES",
    "Accelerator",
    "Layout",
    "MemoryImage",
    "MemoryInit",
    "memory_images",
    "memory_shapes",
    "random_images",
]

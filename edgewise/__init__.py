"""edgewise: train, register, package and serve machine-learning models on edge devices."""

from edgewise._exceptions import EdgewiseError

__version__ = "0.1.0"
__all__ = ["EdgewiseError", "__version__"]

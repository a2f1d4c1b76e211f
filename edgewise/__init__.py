"""edgewise: train, register, package and serve machine-learning models on edge devices."""

import os

from edgewise._exceptions import EdgewiseError

# onnxruntime's official builds upload usage telemetry over HTTPS unless this is set before it initializes.
# edgewise sends nothing anywhere on its own; a user who wants onnxruntime's telemetry can set it to 0.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
__all__ = ["EdgewiseError", "__version__"]

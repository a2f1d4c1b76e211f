"""The host-side head of an FPGA model: each served output computed from the dequantized last layer.

This is the one implementation: the scoring backend serves it, and the FPGA compiler's accuracy report and
tests (`edgewise.fpga.accuracy`) call it, so that what is measured is what is served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from edgewise.runtime.scoring.datatypes import NUMPY_DTYPES
from edgewise.runtime.scoring.errors import InferenceFailedError

HEAD_OPS = ("identity", "softmax", "sigmoid", "argmax")


def head_output(op: str, values: np.ndarray, *, labels: Sequence[int | str] = (), datatype: str = "FP32") -> np.ndarray:
    """One output of `op` over the last axis of `values` (the dequantized last layer, (..., out_features)).

    argmax gives the first maximum's index as INT64, or its entry of `labels`: integers for INT64, UTF-8 encoded
    bytes for BYTES (as the protocol carries strings). The other ops give `datatype` (FP32 or FP64) values of the
    same shape as `values`; sigmoid is evaluated so that no magnitude overflows.
    """
    values = np.asarray(values, dtype=np.float64)
    if op == "argmax":
        index: np.ndarray = np.argmax(values, axis=-1)
        if not labels:
            return index.astype(np.int64)
        strings = datatype == "BYTES"
        table = np.empty(len(labels), dtype=object if strings else np.int64)
        table[:] = [str(label).encode("utf-8") if strings else label for label in labels]
        labelled: np.ndarray = table[index]
        return labelled
    result: np.ndarray
    if op == "softmax":
        exponentials = np.exp(values - values.max(axis=-1, keepdims=True))
        result = exponentials / exponentials.sum(axis=-1, keepdims=True)
    elif op == "sigmoid":
        small = np.exp(-np.abs(values))  # in (0, 1]: 1 / (1 + e^-v) for v >= 0, e^v / (1 + e^v) below
        result = np.where(values >= 0, 1.0, small) / (1.0 + small)
    elif op == "identity":
        result = values
    else:
        raise InferenceFailedError(f"unknown head op {op!r}; the head computes {', '.join(HEAD_OPS)}")
    return result.astype(NUMPY_DTYPES[datatype])

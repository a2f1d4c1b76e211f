"""The contract every inference backend fulfils: load once, describe itself, predict on numpy arrays."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from edgewise.runtime.scoring.types import Parameters, TensorSpec


class Backend(ABC):
    """One loaded model version. `predict` may be called from any thread, one call at a time per batcher.

    A backend that reports per-call facts (an FPGA's clock cycles) sets `returns_parameters` and implements
    `predict_with_parameters`; the server then calls that instead of `predict` and puts the parameters in the
    response. Such a backend is served without dynamic batching, which could not split them per request.
    """

    platform: str = ""
    returns_parameters: ClassVar[bool] = False

    @property
    @abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    @abstractmethod
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run the model; `outputs` names the outputs wanted (all when empty)."""

    def predict_with_parameters(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> tuple[dict[str, np.ndarray], Parameters]:
        """`predict` plus the response parameters of this call."""
        return self.predict(inputs, outputs), {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources; the default relies on garbage collection."""

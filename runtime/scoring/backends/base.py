"""The contract every inference backend fulfils: load once, describe itself, predict on numpy arrays."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from edgewise.runtime.scoring.types import TensorSpec


class Backend(ABC):
    """One loaded model version. `predict` may be called from any thread, one call at a time per batcher."""

    platform: str = ""

    @property
    @abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    @abstractmethod
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run the model; `outputs` names the outputs wanted (all when empty)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources; the default relies on garbage collection."""

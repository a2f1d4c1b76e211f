"""The SDK for training scripts: `Run.get_context()` and the run's logging API.

Inside a submitted run (EDGEWISE_RUN_ID and friends in the environment) points go to the workspace in
batches from a background thread; elsewhere the run is offline and writes to ./edgewise-offline/.
"""

from __future__ import annotations

from edgewise.cloud.sdk.run import Run

__all__ = ["Run"]

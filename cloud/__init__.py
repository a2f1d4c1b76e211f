"""The workspace: experiments, runs, metrics, the model registry, and the SDK used by training scripts.

`from edgewise.cloud import Run, Client` stays light: the service's own dependencies (FastAPI, SQLAlchemy)
load only when the service starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgewise.cloud.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    ModelInUseError,
    NotFoundError,
    ServiceUnavailableError,
    SnapshotTooLargeError,
    UnsafePathError,
    WorkspaceError,
)

if TYPE_CHECKING:
    from edgewise.cloud.client import Client
    from edgewise.cloud.sdk import Run

__all__ = [
    "AuthenticationError",
    "Client",
    "ConflictError",
    "InvalidInputError",
    "ModelInUseError",
    "NotFoundError",
    "Run",
    "ServiceUnavailableError",
    "SnapshotTooLargeError",
    "UnsafePathError",
    "WorkspaceError",
]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from edgewise.cloud.client import Client

        return Client
    if name == "Run":
        from edgewise.cloud.sdk import Run

        return Run
    raise AttributeError(f"module 'edgewise.cloud' has no attribute {name!r}")

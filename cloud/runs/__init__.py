"""Submitting and executing runs.

Client side: `take_snapshot` / `hash_snapshot` (what a submission uploads), `git_info` (where the code came
from), `load_runconfig` / `merge` (`.edgewise/run.yml` plus flags). Service side: `EnvironmentCache` (virtual
environments per requirements) and `LocalRunner` (the local compute target). Each loads on first use, so a
client never pays for the service's modules and the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgewise.cloud.runs.environments import EnvironmentCache
    from edgewise.cloud.runs.gitinfo import git_info
    from edgewise.cloud.runs.runconfig import RunConfig, load_runconfig, merge
    from edgewise.cloud.runs.runner import LocalRunner, RunEvents, RunJob, stop_orphan
    from edgewise.cloud.runs.snapshot import Snapshot, SnapshotFile, hash_snapshot, take_snapshot

__all__ = [
    "EnvironmentCache",
    "LocalRunner",
    "RunConfig",
    "RunEvents",
    "RunJob",
    "Snapshot",
    "SnapshotFile",
    "git_info",
    "hash_snapshot",
    "load_runconfig",
    "merge",
    "stop_orphan",
    "take_snapshot",
]

_LAZY = {
    "EnvironmentCache": "environments",
    "git_info": "gitinfo",
    "RunConfig": "runconfig",
    "load_runconfig": "runconfig",
    "merge": "runconfig",
    "LocalRunner": "runner",
    "RunEvents": "runner",
    "RunJob": "runner",
    "stop_orphan": "runner",
    "Snapshot": "snapshot",
    "SnapshotFile": "snapshot",
    "hash_snapshot": "snapshot",
    "take_snapshot": "snapshot",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

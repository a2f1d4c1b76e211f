"""The steps a plan is made of: small frozen values the planner emits and the executor runs.

Keeping them as data (not closures) makes a plan printable, comparable in table tests and loggable
before anything happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.runtime.agent.model import ModuleSpec, RuntimeStatus


@dataclass(frozen=True, kw_only=True)
class PullImage:
    """Make the image available locally (pulled, verified, unpacked); a no-op when it is cached."""

    module: str
    image: str

    def describe(self) -> str:
        return f"pull {self.image} for {self.module}"


@dataclass(frozen=True, kw_only=True)
class StartModule:
    """Start `spec` where nothing of this module serves (or after stopping what does, with `stop_first`).

    `restart` counts the start against the restart limit; `fresh` resets the count and any rollback
    (a new deployment, or a manual restart).
    """

    module: str
    spec: ModuleSpec
    manifest_version: int
    reason: str
    restart: bool = False
    fresh: bool = False
    stop_first: bool = False

    def describe(self) -> str:
        return f"start {self.module} ({self.spec.digest}): {self.reason}"


@dataclass(frozen=True, kw_only=True)
class UpdateModule:
    """Replace the running version with `spec` without a gap; the old one keeps serving if the new fails."""

    module: str
    spec: ModuleSpec
    manifest_version: int

    def describe(self) -> str:
        return f"update {self.module} to {self.spec.digest}"


@dataclass(frozen=True, kw_only=True)
class StopModule:
    """Stop the running process and record `status` (stopped on purpose, backing off, or failed)."""

    module: str
    status: RuntimeStatus
    reason: str
    manifest_version: int
    failure: bool = False

    def describe(self) -> str:
        return f"stop {self.module} ({self.status.value}): {self.reason}"


@dataclass(frozen=True, kw_only=True)
class RemoveModule:
    """Stop a module that left the manifest and delete its record and folders."""

    module: str

    def describe(self) -> str:
        return f"remove {self.module}"


@dataclass(frozen=True, kw_only=True)
class MarkModule:
    """Record a status without touching a process; with `exited` the process was found gone (exit recorded)."""

    module: str
    status: RuntimeStatus
    description: str
    manifest_version: int
    exited: bool = False
    exit_code: int | None = None
    failure: bool = False

    def describe(self) -> str:
        return f"mark {self.module} {self.status.value}: {self.description}"


@dataclass(frozen=True, kw_only=True)
class ResetRestartCount:
    """A module ran long enough to be considered stable again: its restart count starts over."""

    module: str

    def describe(self) -> str:
        return f"reset the restart count of {self.module}"


Command = PullImage | StartModule | UpdateModule | StopModule | RemoveModule | MarkModule | ResetRestartCount

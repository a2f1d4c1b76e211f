"""Where a run's data goes: `RunSink`, and `ServiceSink`, which sends it to the workspace service.

A `Run` does the same thing online and offline; only its sink differs (see `offline.py` for the other one).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgewise.cloud.errors import ServiceUnavailableError
from edgewise.cloud.sdk.buffer import RetryableError
from edgewise.cloud.store.records import FileEntry, MetricPoint

if TYPE_CHECKING:
    from edgewise.cloud.client import Client


class RunSink(Protocol):
    """The operations of a run that leave the process."""

    run_id: str
    experiment: str
    label: str

    def send(self, points: list[dict[str, Any]]) -> None:
        """Store a batch of points in their wire form; raise RetryableError when worth trying again."""

    def upload(self, name: str, path: Path) -> FileEntry: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def child(self, name: str) -> RunSink: ...

    def complete(self, status: str, reason: str | None) -> None: ...

    def metrics(self) -> list[MetricPoint]: ...


class ServiceSink:
    """A run that lives on the workspace service."""

    def __init__(self, *, client: Client, run_id: str, experiment: str, label: str | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment = experiment
        self.label = label or f"run {run_id}"

    def send(self, points: list[dict[str, Any]]) -> None:
        try:
            self.client.log_metric_dicts(self.run_id, points)
        except ServiceUnavailableError as exc:
            raise RetryableError(str(exc)) from exc

    def upload(self, name: str, path: Path) -> FileEntry:
        return self.client.upload_artifact(self.run_id, name=name, path=path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.set_run_tags(self.run_id, tags)

    def child(self, name: str) -> ServiceSink:
        run = self.client.create_child_run(self.run_id, name=name)
        return ServiceSink(client=self.client, run_id=run.id, experiment=run.experiment, label=f"child run {run.id}")

    def complete(self, status: str, reason: str | None) -> None:
        self.client.complete_run(self.run_id, status=status, reason=reason)

    def metrics(self) -> list[MetricPoint]:
        return self.client.get_metrics(self.run_id)

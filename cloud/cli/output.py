"""How the CLI shows things: JSON for scripts, Rich tables for people, one red line for errors."""

from __future__ import annotations

import enum
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from edgewise.cloud.store.records import Experiment, MetricPoint, ModelVersion, Run, RunStatus
from rich.console import Console
from rich.markup import escape
from rich.table import Table

PIPE_WIDTH = 200


def _width(stream: TextIO) -> int | None:
    """Rich assumes 80 columns when writing to a pipe, which crops ids in tables; give pipes more room."""
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return None if interactive or os.environ.get("COLUMNS") else PIPE_WIDTH


# Soft wrap keeps ids, paths and messages on one line however narrow the terminal.
out = Console(soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))

_STATUS_STYLE = {
    RunStatus.QUEUED: "dim",
    RunStatus.PREPARING: "cyan",
    RunStatus.RUNNING: "blue",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELED: "yellow",
}
_MAX_METRIC_COLUMNS = 4


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


def error(message: str) -> None:
    """The one line every failed command prints before exiting with 1."""
    err.print(f"[red]error: {escape(message)}[/red]", highlight=False)


def note(message: str) -> None:
    """Progress and hints go to stderr so that stdout stays parseable."""
    err.print(escape(message), style="dim", highlight=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num_bytes} B"  # pragma: no cover - the loop always returns


def status(value: RunStatus) -> str:
    return f"[{_STATUS_STYLE.get(value, '')}]{value.value}[/]"


def pairs(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def key_values(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A two-column table of fields; values are markup-escaped unless they carry a status colour."""
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def runs_table(runs: Sequence[Run], *, title: str | None = None) -> None:
    metric_names = _common_metrics(runs)
    table = Table(title=title, title_justify="left")
    for column in ("id", "experiment", "name", "status", "created", "duration"):
        table.add_column(column, no_wrap=column in ("id", "created"))
    for name in metric_names:
        table.add_column(name, justify="right")
    for run in runs:
        table.add_row(
            escape(run.id),
            escape(run.experiment),
            escape(run.name or "-"),
            status(run.status),
            when(run.created_at),
            duration(run.duration),
            *(number(run.metrics.get(name)) for name in metric_names),
        )
    out.print(table)


def experiments_table(experiments: Sequence[Experiment]) -> None:
    table = Table()
    for column in ("name", "runs", "created", "id"):
        table.add_column(column, justify="right" if column == "runs" else "left")
    for experiment in experiments:
        table.add_row(
            escape(experiment.name), str(experiment.run_count), when(experiment.created_at), escape(experiment.id)
        )
    out.print(table)


def models_table(models: Sequence[ModelVersion]) -> None:
    table = Table()
    for column in ("name", "version", "format", "framework", "run", "created", "tags"):
        table.add_column(column, justify="right" if column == "version" else "left")
    for model in models:
        table.add_row(
            escape(model.name),
            str(model.version),
            escape(model.format),
            escape(model.framework or "-"),
            escape(model.run_id or "-"),
            when(model.created_at),
            escape(pairs(model.tags)),
        )
    out.print(table)


def metrics_table(points: Sequence[MetricPoint]) -> None:
    table = Table()
    for column in ("name", "step", "value", "kind", "logged"):
        table.add_column(column, justify="right" if column in ("step", "value") else "left")
    for point in points:
        shown = number(point.value) if point.value is not None else json.dumps(point.payload)[:80]
        table.add_row(
            escape(point.name),
            "-" if point.step is None else str(point.step),
            escape(shown),
            point.kind.value,
            when(point.timestamp),
        )
    out.print(table)


def _common_metrics(runs: Iterable[Run]) -> list[str]:
    """The metric columns of a run table: the names most runs share, in alphabetical order."""
    counts: dict[str, int] = {}
    for run in runs:
        for name in run.metrics:
            counts[name] = counts.get(name, 0) + 1
    chosen = sorted(counts, key=lambda name: (-counts[name], name))[:_MAX_METRIC_COLUMNS]
    return sorted(chosen)

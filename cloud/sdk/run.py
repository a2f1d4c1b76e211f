"""`Run`: what a training script logs to, the same API inside a submitted run and offline.

`log()` and friends only queue points in the run's `MetricBuffer`; files, tags and child runs go straight
through the run's sink. `Run.get_context()` hands out the process's one run (see `context.py`).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.names import check_relpath
from edgewise.cloud.sdk.buffer import MetricBuffer
from edgewise.cloud.sdk.sinks import RunSink
from edgewise.cloud.store.records import FileEntry, MetricPoint


class Run:
    """A run as a script sees it. Use `Run.get_context()` rather than building one."""

    def __init__(self, *, sink: RunSink, parent: Run | None = None, name: str | None = None, **buffer: Any) -> None:
        self._sink = sink
        self.parent = parent
        self.name = name
        self._buffer = MetricBuffer(send=sink.send, label=sink.label, **buffer)
        self._buffer_options = buffer
        self._lock = threading.Lock()
        self._images: dict[str, int] = {}
        self._children: list[Run] = []
        self.completed = False
        from edgewise.cloud.sdk import context

        context.track(self)

    @classmethod
    def get_context(cls) -> Run:
        """The run of this process: bound to the workspace inside a submitted run, else an offline run."""
        from edgewise.cloud.sdk import context

        return context.get_context()

    @property
    def id(self) -> str:
        return self._sink.run_id

    @property
    def experiment(self) -> str:
        return self._sink.experiment

    @property
    def sink(self) -> RunSink:
        return self._sink

    @property
    def lost_points(self) -> int:
        """Points that could not be delivered (they were written to stderr instead)."""
        return self._buffer.lost

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, experiment={self.experiment!r})"

    # -- metrics ---------------------------------------------------------------------------------------------

    def log(self, name: str, value: float, step: int | None = None, description: str = "") -> None:
        """Log a scalar; without `step` it is the number of earlier points of `name` in this run."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"metric {name!r}: {value!r} is not a number; use log_list/log_row") from None
        if type(name) is not str or not name:
            raise InvalidInputError(f"a metric name must be a non-empty string, not {name!r}")
        if step is not None:
            step = int(step)
        if description:
            self._buffer.add(name, number, step, "scalar", {"description": description})
        else:
            self._buffer.add(name, number, step)

    def log_list(self, name: str, values: Iterable[Any]) -> None:
        self._buffer.add(_name(name), None, None, "list", [_plain(v) for v in values])

    def log_row(self, name: str, **cols: Any) -> None:
        self._buffer.add(_name(name), None, None, "row", {k: _plain(v) for k, v in cols.items()})

    def log_table(self, name: str, table: Mapping[str, Iterable[Any]]) -> None:
        """A table as columns: `{"epoch": [1, 2], "loss": [0.5, 0.3]}`."""
        self._buffer.add(_name(name), None, None, "table", {k: [_plain(v) for v in col] for k, col in table.items()})

    def log_image(self, name: str, path: Path | str | None = None, plot: Any = None) -> FileEntry:
        """Upload an image file, or a matplotlib figure as PNG, as `images/<name>/<n>.<ext>` and log it."""
        if (path is None) == (plot is None):
            raise InvalidInputError("log_image needs exactly one of path= (an image file) or plot= (a figure)")
        with self._lock:
            n = self._images.get(name, 0)
            self._images[name] = n + 1
        if path is not None:
            suffix = Path(path).suffix.lower() or ".png"
            entry = self._sink.upload(check_relpath(f"images/{_name(name)}/{n}{suffix}"), Path(path))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                png = Path(tmp) / "figure.png"
                plot.savefig(png, format="png")
                entry = self._sink.upload(check_relpath(f"images/{_name(name)}/{n}.png"), png)
        self._buffer.add(name, None, None, "image", {"path": entry.path, "digest": entry.digest})
        return entry

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every point logged so far is stored; False if `timeout` passed first."""
        return self._buffer.flush(timeout)

    def get_metrics(self) -> list[MetricPoint]:
        """Every point of this run, in logging order (after a flush)."""
        self.flush()
        return self._sink.metrics()

    # -- the rest of the run ---------------------------------------------------------------------------------

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._sink.set_tags({str(k): str(v) for k, v in tags.items()})

    def upload_file(self, name: str, path: Path | str) -> FileEntry:
        """Store a local file with the run under the relative path `name`."""
        return self._sink.upload(check_relpath(name, what="file name"), Path(path))

    def child_run(self, name: str) -> Run:
        """A child run; `with run.child_run("fold-1") as child:` completes it (failed if the block raises)."""
        child = Run(sink=self._sink.child(name), parent=self, name=name, **self._buffer_options)
        with self._lock:
            self._children.append(child)
        return child

    def complete(self, *, status: str = "completed", reason: str | None = None) -> None:
        """Deliver every point, end open child runs, and mark the run ended; logging to it afterwards fails."""
        if self.completed:
            return
        with self._lock:
            children = list(self._children)
        for child in children:
            child.complete(status=status, reason=reason)
        self.close()
        self._sink.complete(status, reason)
        self.completed = True
        from edgewise.cloud.sdk import context

        context.untrack(self)

    def close(self, timeout: float | None = None) -> bool:
        """Deliver every point and stop the sender, without ending the run on the service."""
        return self._buffer.close(timeout)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.complete()
        else:
            self.complete(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500])


def _name(name: str) -> str:
    if type(name) is not str or not name:
        raise InvalidInputError(f"a metric name must be a non-empty string, not {name!r}")
    return name


def _plain(value: Any) -> Any:
    """A JSON-ready copy of `value` (NumPy scalars and arrays included)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if hasattr(value, "item"):
        return _plain(value.item())
    return str(value)

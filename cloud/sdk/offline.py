"""`OfflineSink`: a run outside the workspace, kept in a local folder and echoed to the console.

The same script runs unchanged on a laptop: metrics go to `./edgewise-offline/<timestamp>/metrics.jsonl`
(one JSON point per line), uploaded files under `files/`, tags in `tags.json`, child runs in `children/`.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson
from edgewise.cloud.names import check_relpath
from edgewise.cloud.sdk.transfer import digest_file
from edgewise.cloud.store.records import FileEntry, MetricPoint

OFFLINE_ROOT = "edgewise-offline"


def new_offline_folder(root: Path | None = None) -> Path:
    """A fresh `<root>/<timestamp>` folder (suffixed when two runs start in the same second)."""
    base = (root or Path.cwd() / OFFLINE_ROOT) / time.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


class OfflineSink:
    """Writes a run's metrics, files and tags into `folder` and prints each metric to `console`."""

    def __init__(self, *, folder: Path, experiment: str, console: TextIO | None = None, label: str = "") -> None:
        self.folder = folder
        self.experiment = experiment
        self.run_id = f"offline-{folder.name}"
        self.label = label or f"offline run {self.run_id}"
        self.metrics_path = folder / "metrics.jsonl"
        self._console = console
        self._lock = threading.Lock()
        self._children = 0
        self.metrics_path.touch()

    def send(self, points: list[dict[str, Any]]) -> None:
        lines = b"".join(orjson.dumps(p) + b"\n" for p in points)
        with self._lock, open(self.metrics_path, "ab") as out:
            out.write(lines)
        console = self._console or sys.stdout
        console.write("".join(_describe(p) for p in points))
        console.flush()

    def upload(self, name: str, path: Path) -> FileEntry:
        rel = check_relpath(name, what="file name")
        digest, size = digest_file(Path(path))
        target = self.folder / "files" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return FileEntry(path=rel, digest=digest, size=size, mode=os.stat(path).st_mode & 0o777)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        path = self.folder / "tags.json"
        with self._lock:
            current = orjson.loads(path.read_bytes()) if path.exists() else {}
            current.update({str(k): str(v) for k, v in tags.items()})
            path.write_bytes(orjson.dumps(current, option=orjson.OPT_INDENT_2))

    def child(self, name: str) -> OfflineSink:
        with self._lock:
            self._children += 1
            folder = self.folder / "children" / f"{self._children}-{name}"
        folder.mkdir(parents=True)
        return OfflineSink(folder=folder, experiment=self.experiment, console=self._console, label=f"child {name}")

    def complete(self, status: str, reason: str | None) -> None:
        body = {"status": status, "reason": reason, "ended_at": time.time()}
        (self.folder / "status.json").write_bytes(orjson.dumps(body))

    def metrics(self) -> list[MetricPoint]:
        with open(self.metrics_path, "rb") as stream:
            return [MetricPoint.from_dict(orjson.loads(line)) for line in stream if line.strip()]


def _describe(point: dict[str, Any]) -> str:
    kind = point.get("kind", "scalar")
    if kind == "scalar":
        return f"[edgewise] {point['name']} = {point['value']} (step {point['step']})\n"
    return f"[edgewise] {point['name']} ({kind}): {orjson.dumps(point.get('payload')).decode()[:200]}\n"

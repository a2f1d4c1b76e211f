"""Request sampling: a random fraction of inferences written as JSON lines for the agent to ship as telemetry.

Each line is `{"ts", "model", "version", "inputs": {name: {"datatype", "shape", "data"}}, "outputs": {...}}`,
written with one `write` on an O_APPEND descriptor so a reader never sees half a line from a live writer, and
two server versions during a handover can share the file. When the next line would take the file past its
bound, the file is renamed to `<file>.1` (replacing an older one) and a new one is started.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

log = logging.getLogger(__name__)


class SampleSettings(Protocol):
    @property
    def sample_file(self) -> Path | None: ...

    @property
    def sample_rate(self) -> float: ...

    @property
    def sample_file_max_bytes(self) -> int: ...


class Tensor(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def data(self) -> np.ndarray: ...


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} in a sample")


def _tensors(tensors: Sequence[Tensor]) -> dict[str, dict[str, Any]]:
    return {t.name: {"datatype": t.datatype, "shape": list(t.shape), "data": t.data} for t in tensors}


class RequestSampler:
    """Appends the inputs and outputs of a `rate` fraction of inferences to `path`."""

    def __init__(self, *, path: Path, rate: float, max_bytes: int) -> None:
        self.path = path
        self.rate = min(1.0, max(0.0, rate))
        self.max_bytes = max(1, max_bytes)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._failed = False

    @classmethod
    def from_settings(cls, settings: SampleSettings) -> RequestSampler | None:
        """A sampler, or None when sampling is off (no file, or a rate of 0)."""
        if settings.sample_file is None or settings.sample_rate <= 0:
            return None
        return cls(path=settings.sample_file, rate=settings.sample_rate, max_bytes=settings.sample_file_max_bytes)

    def offer(self, model: str, version: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> bool:
        """Sample this inference with probability `rate`; True when a line was written. Never raises."""
        if self.rate < 1.0 and random.random() >= self.rate:
            return False
        try:
            line = orjson.dumps(
                {
                    "ts": time.time(),
                    "model": model,
                    "version": version,
                    "inputs": _tensors(inputs),
                    "outputs": _tensors(outputs),
                },
                default=_default,
                option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
            )
            self._write(line)
        except (OSError, TypeError) as exc:
            if not self._failed:  # once: a full disk must not flood the log
                log.warning("cannot write request samples to %s: %s", self.path, exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _write(self, line: bytes) -> None:
        with self._lock:
            if self._fd is None or os.fstat(self._fd).st_ino != _inode(self.path):
                self._reopen()  # first write, or another writer rotated the file
            assert self._fd is not None
            size = os.fstat(self._fd).st_size
            if size > 0 and size + len(line) > self.max_bytes:
                self._rotate()
            os.write(self._fd, line)

    def _reopen(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def _rotate(self) -> None:
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._reopen()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None

"""A run's stdout and stderr on the terminal: read once, or followed until the run ends."""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from edgewise.cloud.client import Client


class LogStream(enum.StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    BOTH = "both"

    @property
    def names(self) -> tuple[str, ...]:
        return ("stdout", "stderr") if self is LogStream.BOTH else (self.value,)


def _target(stream: str) -> BinaryIO:
    """The script's stderr goes to ours, so that `2>/dev/null` works on its logs as on a local run."""
    return sys.stderr.buffer if stream == "stderr" else sys.stdout.buffer


def write_chunk(stream: str, data: bytes) -> None:
    target = _target(stream)
    target.write(data)
    target.flush()


def print_logs(client: Client, run_id: str, which: LogStream) -> None:
    """Everything logged so far, each selected stream whole and in turn."""
    for stream in which.names:
        offset = 0
        while True:
            data, next_offset, _status = client.read_logs(run_id, stream=stream, offset=offset)
            if data:
                write_chunk(stream, data)
            if not data or next_offset <= offset:
                break
            offset = next_offset


def follow_logs(client: Client, run_id: str, which: LogStream) -> None:
    """Stream the selected logs as they grow; returns when the run has ended and its logs are drained."""
    wanted = set(which.names)
    for stream, data in client.follow_logs(run_id):
        if stream in wanted and data:
            write_chunk(stream, data)

"""What runs on this machine, read from /proc: listeners of a port, process trees, liveness."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path

_PROC = Path("/proc")
_LISTEN = "0A"


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def parent(pid: int) -> int | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: tells a reused pid apart."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def all_pids() -> list[int]:
    return [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()]


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listening_pids(port: int) -> set[int]:
    """The processes holding a listening TCP socket on `port` (several when they share it with SO_REUSEPORT)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    found: set[int] = set()
    if not wanted:
        return found
    for pid in all_pids():
        with contextlib.suppress(OSError):
            for fd in (_PROC / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        found.add(pid)
                        break
    return found


def descendants(roots: Iterable[int]) -> set[int]:
    """`roots` and every process below them."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        ppid = parent(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def mentioning(*texts: str, exclude: Iterable[int] = ()) -> set[int]:
    """Processes whose command line mentions one of `texts` (e.g. a state directory), minus `exclude`."""
    skip = {os.getpid(), *exclude}
    return {pid for pid in all_pids() if pid not in skip and any(t in arg for arg in cmdline(pid) for t in texts)}


def process_roots(*texts: str, agent_pid: int | None) -> set[int]:
    """Topmost processes mentioning one of `texts` (an agent's state directory, its runtime folder) other than
    the agent: one per running module process tree."""
    exclude = {agent_pid} if agent_pid is not None else set()
    pids = mentioning(*texts, exclude=exclude)
    return {pid for pid in pids if parent(pid) not in pids}


def kill_trees(roots: Iterable[int]) -> None:
    """SIGKILL each of `roots` and everything below it."""
    for pid in descendants(roots):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

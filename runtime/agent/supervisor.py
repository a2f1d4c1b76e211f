"""Module processes: start one in its sandbox, adopt it again after an agent restart, watch it, stop it.

A module runs in its own session with its output appended to its log file (never a pipe), so it keeps running
when the agent stops. The agent remembers each module by pid *and* start time (`/proc/<pid>/stat` field 22):
a pid alone may have been reused by an unrelated process after a reboot or a long absence.

With a sandbox the process the agent starts is the wrapper (bwrap), and the scoring server is a descendant
in another session and pid namespace. The pid the agent records, reports and signals is the server's own:
killing the wrapper alone would leave the server serving as an orphan, while the server's exit ends its
namespace and the wrappers with it. The wrapper is kept only to reap it and to read the exit code it passes on.

With a launcher pool (`launcher.py`), `spawn` forks the module from a launcher instead of starting a program:
the module is then the launcher's child, in a session of its own, with no wrapper; the launcher reports its
exit status. Either way the agent tracks, signals and adopts it by pid and start time alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgewise.runtime.agent import cpus
from edgewise.runtime.agent.drivers.base import WRAPPER_COMMANDS, LaunchSpec, Sandbox
from edgewise.runtime.agent.errors import ModuleError
from edgewise.runtime.agent.launcher import LaunchedProcess, LauncherError, LauncherPool

_POLL = 0.05  # seconds between checks while a module stops
_KILL_WAIT = 5.0  # seconds to wait for the kernel to finish off killed processes
_FIND_WAIT = 10.0  # seconds a sandbox gets to exec the module inside it


@dataclass(frozen=True, kw_only=True)
class ModuleProcess:
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a reused pid apart
    started_at: float  # unix time
    generation: int
    admin_dir: Path


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int
    start_ticks: int

    @property
    def dead(self) -> bool:
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """The process's /proc stat, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, ..., starttime is field 22.
    return ProcStat(pid, comm, fields[0], int(fields[1]), int(fields[2]), int(fields[19]))


def is_running(pid: int, start_ticks: int) -> bool:
    """The pid is alive (not a zombie) and is still the process that started at `start_ticks`."""
    stat = read_stat(pid)
    return stat is not None and stat.start_ticks == start_ticks and not stat.dead


def log_tail(path: Path, lines: int = 20) -> list[str]:
    """The last lines of a module's log (for error messages and the `logs` method)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            tail = deque(f, maxlen=max(lines, 0))
    except OSError:
        return []
    return [line.decode(errors="replace").rstrip("\n") for line in tail]


def _all_stats() -> list[ProcStat]:
    stats = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                stats.append(stat)
    return stats


def _module_stat(wrapper: subprocess.Popen[bytes]) -> ProcStat | None:
    """The module's own process: the started one itself, or the first non-wrapper process below a sandbox."""
    deadline = time.monotonic() + _FIND_WAIT
    while True:
        stat = read_stat(wrapper.pid)
        if stat is None or stat.dead:
            return None
        if stat.comm not in WRAPPER_COMMANDS:
            return stat
        stats = _all_stats()
        children: dict[int, list[ProcStat]] = {}
        for other in stats:
            children.setdefault(other.ppid, []).append(other)
        queue = list(children.get(wrapper.pid, []))
        while queue:
            candidate = queue.pop(0)
            if candidate.dead:
                continue
            if candidate.comm not in WRAPPER_COMMANDS:
                return candidate
            queue.extend(children.get(candidate.pid, []))
        if time.monotonic() > deadline:
            return stat  # nothing ran inside yet: fall back to the wrapper rather than lose the module
        time.sleep(0.01)


def _exit_code(returncode: int) -> int:
    """Popen's negative "killed by signal N" as the shell's 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    def __init__(self, *, sandbox: Sandbox, stop_grace: float, launchers: LauncherPool | None = None) -> None:
        self.sandbox = sandbox
        self.stop_grace = stop_grace
        self.launchers = launchers
        # pid -> (start ticks, process): the program started (or its sandbox's wrapper), or the forked module
        self._children: dict[int, tuple[int, subprocess.Popen[bytes] | LaunchedProcess]] = {}
        self._lock = threading.Lock()
        self._cpus = cpus.allowed()  # where a module started as its own program runs (see `cpus.py`)

    def start_slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while a module starts: with a launcher pool, starts take turns (see `slots.StartSlots`)."""
        if self.launchers is None:
            return contextlib.nullcontext()
        return self.launchers.slots.slot()

    async def spawn(self, launch: LaunchSpec) -> ModuleProcess:
        """Start the module: forked from a launcher when the pool can, else as its own program (`start`)."""
        plan = self.launchers.plan(self.sandbox, launch) if self.launchers is not None else None
        if plan is None or self.launchers is None:
            return await asyncio.to_thread(self.start, launch)
        spec, fork = plan
        started_at = time.time()
        with self._open_log(launch, started_at, via="launcher") as log:
            try:
                launched = await self.launchers.spawn(self.sandbox, spec, fork, log.fileno())
            except LauncherError as exc:
                log.write(f"edgewise-agent: {exc}; starting it as its own program\n".encode())
                launched = None
        if launched is None:
            return await asyncio.to_thread(self.start, launch)
        return self._track(launch, launched.pid, launched.start_ticks, launched, started_at)

    def start(self, launch: LaunchSpec) -> ModuleProcess:
        """Start the module in its sandbox, in a session of its own, appending its output to its log. Blocking."""
        command = self.sandbox.command(launch)
        started_at = time.time()
        with self._open_log(launch, started_at) as log, cpus.for_children(self._cpus):
            try:
                process = subprocess.Popen(
                    command.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=command.env,
                    cwd=command.cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise ModuleError(f"cannot start module {launch.module}: {exc}") from None
        stat = _module_stat(process)
        if stat is None:  # the wrapper died before anything ran inside it
            process.wait()
            raise ModuleError(f"module {launch.module} exited as it started; see {launch.log_path}")
        return self._track(launch, stat.pid, stat.start_ticks, process, started_at)

    def _track(
        self,
        launch: LaunchSpec,
        pid: int,
        start_ticks: int,
        handle: subprocess.Popen[bytes] | LaunchedProcess,
        started_at: float,
    ) -> ModuleProcess:
        """Remember a module this supervisor started (to reap it) and describe it."""
        with self._lock:
            self._children[pid] = (start_ticks, handle)
        return ModuleProcess(
            pid=pid, start_ticks=start_ticks, started_at=started_at, generation=launch.generation,
            admin_dir=launch.admin_dir,
        )  # fmt: skip

    def adopt(
        self, *, pid: int, start_ticks: int, started_at: float, generation: int, admin_dir: Path
    ) -> ModuleProcess | None:
        """The module recorded before an agent restart, if that very process still runs; None otherwise."""
        if not is_running(pid, start_ticks):
            return None
        return ModuleProcess(
            pid=pid, start_ticks=start_ticks, started_at=started_at, generation=generation, admin_dir=admin_dir
        )

    def exit_status(self, proc: ModuleProcess) -> tuple[bool, int | None]:
        """(exited, exit code): the code is known for processes this supervisor started; 128+N means signal N."""
        child = self._child(proc)
        if child is None:
            return (not is_running(proc.pid, proc.start_ticks), None)
        if isinstance(child, LaunchedProcess):
            known, code = child.reported()
            if not known:
                return (False, None)  # its launcher reaps it and reports the exit within moments
            if code is None and is_running(proc.pid, proc.start_ticks):
                return (False, None)  # its launcher is gone, not the module
            return (True, _exit_code(code) if code is not None else None)
        code = child.poll()
        if child.pid != proc.pid and code is None and not is_running(proc.pid, proc.start_ticks):
            # the server is gone; its wrappers follow within moments and pass its exit code on
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = child.wait(timeout=1.0)
            if code is None:
                return (True, None)
        if code is None:
            return (False, None)
        return (True, _exit_code(code))

    def alive(self, proc: ModuleProcess) -> bool:
        return not self.exit_status(proc)[0]

    async def stop(self, proc: ModuleProcess, *, grace: float | None = None) -> int | None:
        """SIGTERM the module's processes, SIGKILL whatever is left after `grace` seconds; the exit code if known."""
        grace = self.stop_grace if grace is None else grace
        members = self._members(proc)
        own = [m for m in members if m.comm not in WRAPPER_COMMANDS] or members
        for member in own:
            self._signal(member, signal.SIGTERM)
        root = next((m for m in own if m.pid == proc.pid), None)
        if root is not None and root.pgid == root.pid:  # the module leads its group: reach its helpers too
            with contextlib.suppress(OSError):
                os.killpg(root.pid, signal.SIGTERM)
        if not await self._wait_gone(proc, members, grace):
            for member in {m.pid: m for m in [*members, *self._members(proc)]}.values():
                self._signal(member, signal.SIGKILL)
            if root is not None:
                with contextlib.suppress(OSError):
                    os.killpg(root.pid, signal.SIGKILL)
            if not await self._wait_gone(proc, members, _KILL_WAIT):
                raise ModuleError(f"module process {proc.pid} did not stop even after SIGKILL")
        return self.exit_status(proc)[1]

    # -- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _open_log(launch: LaunchSpec, started_at: float, *, via: str = "") -> BinaryIO:
        """The module's log, open for appending, with the line that marks this start written."""
        for directory in (launch.data_dir, launch.admin_dir, launch.log_path.parent):
            directory.mkdir(parents=True, exist_ok=True)
        log = launch.log_path.open("ab")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at))
        how = f" ({via})" if via else ""
        line = f"--- {stamp} edgewise-agent: starting {launch.module} generation {launch.generation}{how}\n"
        log.write(line.encode())
        log.flush()
        return log

    def _child(self, proc: ModuleProcess) -> subprocess.Popen[bytes] | LaunchedProcess | None:
        with self._lock:
            entry = self._children.get(proc.pid)
        if entry is None or entry[0] != proc.start_ticks:
            return None
        return entry[1]

    def _members(self, proc: ModuleProcess) -> list[ProcStat]:
        """The module's live processes: the recorded one, its descendants, and the rest of its process group."""
        stats = _all_stats()
        children: dict[int, list[ProcStat]] = {}
        for stat in stats:
            children.setdefault(stat.ppid, []).append(stat)
        roots = [s for s in stats if s.pid == proc.pid and s.start_ticks == proc.start_ticks]
        # A group outlives its leader only while members remain, and its id is not reused meanwhile.
        roots += [s for s in stats if s.pgid == proc.pid and s.pid != proc.pid]
        found: dict[int, ProcStat] = {}
        queue = list(roots)
        while queue:
            stat = queue.pop()
            if stat.pid in found or stat.dead:
                continue
            found[stat.pid] = stat
            queue.extend(children.get(stat.pid, []))
        return list(found.values())

    @staticmethod
    def _signal(member: ProcStat, sig: signal.Signals) -> None:
        if is_running(member.pid, member.start_ticks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member.pid, sig)

    async def _wait_gone(self, proc: ModuleProcess, members: list[ProcStat], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.exit_status(proc)  # reaps our own child
            if not any(is_running(m.pid, m.start_ticks) for m in members) and self.exit_status(proc)[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL)

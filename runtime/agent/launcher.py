"""The module launcher, agent side: a process that has imported the scoring server once and forks modules.

Starting `edgewise-score` as a new program costs about half a CPU-second of imports (numpy, onnxruntime, gRPC,
uvicorn, protobuf); a fork of a process that has them costs milliseconds. The first module start of an agent
starts a launcher (`launcher_process.py`) in the agent's sandbox; every later start with an equal
`LauncherSpec` forks from it. A forked module is an ordinary supervised process: its own session, its output
on its log, its pid and start time recorded; it outlives the launcher and the agent like any module. The
launcher reaps it and reports its exit status here (`LaunchedProcess.poll`, as `Popen.poll` would).

A launcher with no running module for `idle_timeout` seconds is stopped, so an agent without modules keeps
its small footprint. A launcher that cannot start (or dies) is not tried again for a minute: modules then
start as their own programs, exactly as without a launcher.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgewise.runtime.agent import cpus
from edgewise.runtime.agent.drivers.base import LaunchSpec, Sandbox
from edgewise.runtime.agent.drivers.forking import ARGS_FD, ForkSpec, LauncherSpec, RootDir
from edgewise.runtime.agent.errors import ModuleError
from edgewise.runtime.agent.slots import StartSlots

log = logging.getLogger("edgewise.agent.launcher")

START_TIMEOUT = 60.0  # seconds a launcher gets to import the scoring server
RETRY_AFTER = 60.0  # seconds before a launcher that failed is tried again
_MAX_MESSAGE = 1 << 16
# Without it onnxruntime starts a telemetry thread with an SQLite database as it is imported: a launcher that
# imported it so could not fork a module safely (the thread would be missing in the child, its locks not).
FORK_SAFE_ENV = {"ORT_DISABLE_TELEMETRY": "1"}


class LauncherError(ModuleError):
    """The launcher could not fork a module (it did not start, died, or refused the request)."""


@dataclass
class _Exit:
    code: int | None = None
    done: threading.Event = field(default_factory=threading.Event)


class LaunchedProcess:
    """A module the launcher forked; its exit status comes from the launcher's report (as Popen's from wait)."""

    def __init__(self, *, pid: int, start_ticks: int, launcher: Launcher) -> None:
        self.pid = pid
        self.start_ticks = start_ticks
        self._exit = launcher._exit_of(pid, start_ticks)

    def reported(self) -> tuple[bool, int | None]:
        """(known, code): known once the launcher reported the exit, or once it can no longer (code None).
        A negative code means killed by that signal."""
        return (self._exit.done.is_set(), self._exit.code)

    def wait(self, timeout: float) -> tuple[bool, int | None]:
        self._exit.done.wait(timeout)
        return self.reported()


class Launcher:
    """One launcher process and its control socket; a reader thread takes its answers and exit reports."""

    def __init__(self, *, spec: LauncherSpec, sandbox: Sandbox, on_idle: Any) -> None:
        self.spec = spec
        self._sandbox = sandbox
        self._on_idle = on_idle
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[tuple[int, int]]] = {}
        self._exits: dict[tuple[int, int], _Exit] = {}
        self._live: set[tuple[int, int]] = set()
        self._next_id = 0
        self._ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._closed = False
        self.pid: int | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and wait until it has imported the scoring server (blocking)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        args_r = -1
        try:
            command = self._sandbox.launcher_command(self.spec, control_fd=theirs.fileno())
            argv, pass_fds = list(command.argv), [theirs.fileno()]
            if ARGS_FD in argv:
                args_r, args_w = os.pipe()
                with os.fdopen(args_w, "wb") as w:
                    w.write(b"".join(os.fsencode(a) + b"\0" for a in command.fd_args))
                argv[argv.index(ARGS_FD)] = str(args_r)
                pass_fds.append(args_r)
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                env=command.env,
                cwd=command.cwd,
                pass_fds=pass_fds,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise LauncherError(f"cannot start the module launcher: {exc}") from None
        finally:
            theirs.close()
            if args_r >= 0:
                os.close(args_r)
        self._control = ours
        threading.Thread(target=self._read, name="launcher-reader", daemon=True).start()
        try:
            self.pid = self._ready.result(timeout=START_TIMEOUT)
        except (concurrent.futures.TimeoutError, LauncherError) as exc:
            self.close()
            raise LauncherError(f"the module launcher did not start: {exc or 'no answer'}") from None

    @property
    def alive(self) -> bool:
        return not self._closed and self._process is not None and self._process.poll() is None

    @property
    def running_modules(self) -> int:
        """Modules forked and not yet exited, and those being forked."""
        with self._lock:
            return len(self._live) + len(self._pending)

    def close(self) -> None:
        """Close the control socket: the launcher exits, the modules it forked keep running."""
        with self._lock:
            self._closed = True
            control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_RDWR)
            control.close()
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    # -- forking -----------------------------------------------------------------------------------

    def spawn(self, fork: ForkSpec, log_fd: int) -> concurrent.futures.Future[tuple[int, int]]:
        """Ask for one module; the future gives its (pid, start ticks) or raises LauncherError."""
        future: concurrent.futures.Future[tuple[int, int]] = concurrent.futures.Future()
        with self._lock:
            if self._control is None or self._closed:
                future.set_exception(LauncherError("the module launcher is not running"))
                return future
            self._next_id += 1
            request_id = self._next_id
            self._pending[request_id] = future
            message = json.dumps({"op": "spawn", "id": request_id, "spec": fork.to_json()}).encode()
            try:
                socket.send_fds(self._control, [message], [log_fd])
            except OSError as exc:
                self._pending.pop(request_id, None)
                future.set_exception(LauncherError(f"the module launcher did not take the request: {exc}"))
        return future

    def _exit_of(self, pid: int, ticks: int) -> _Exit:
        with self._lock:
            entry = self._exits.setdefault((pid, ticks), _Exit())
            if self._closed:  # gone already: its exit can no longer be told (callers look in /proc)
                entry.done.set()
            return entry

    # -- the reader thread -------------------------------------------------------------------------

    def _read(self) -> None:
        control = self._control
        assert control is not None
        try:
            while True:
                try:
                    message = control.recv(_MAX_MESSAGE)
                except OSError:
                    break
                if not message:
                    break
                self._handle(json.loads(message))
        finally:
            self._gone()

    def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            self._ready.set_result(int(message["pid"]))
            return
        if op == "exited":
            key = (int(message["pid"]), int(message["ticks"]))
            with self._lock:
                entry = self._exits.setdefault(key, _Exit())
                self._live.discard(key)
                idle = not self._live
            entry.code = int(message["code"])
            entry.done.set()
            if idle:
                self._on_idle(self)
            return
        with self._lock:
            future = self._pending.pop(int(message.get("id") or 0), None)
            if op == "spawned":
                self._live.add((int(message["pid"]), int(message["ticks"])))
        if future is None:
            return
        if op == "spawned":
            future.set_result((int(message["pid"]), int(message["ticks"])))
        else:
            future.set_exception(LauncherError(f"the module launcher refused: {message.get('error')}"))

    def _gone(self) -> None:
        with self._lock:
            self._closed = True
            pending, self._pending = list(self._pending.values()), {}
            waiting = [e for e in self._exits.values() if not e.done.is_set()]
        error = LauncherError("the module launcher exited")
        if not self._ready.done():
            self._ready.set_exception(error)
        for future in pending:
            future.set_exception(error)
        for entry in waiting:  # their exit codes can no longer be told; callers fall back to /proc
            entry.done.set()


class LauncherPool:
    """The launchers of an agent (or of every agent in one process), one per `LauncherSpec` in use.

    `roots`: the host folders a sandboxed launcher shows (at their own paths) for its modules to bind from.
    `start_slots`: how many modules may be starting at once (default: two per CPU, as a start also waits for
    its health probes), see `StartSlots`.
    """

    def __init__(
        self,
        *,
        roots: Iterable[RootDir] = (),
        idle_timeout: float = 60.0,
        start_slots: int | None = None,
        slot_hold: float = 2.0,
    ) -> None:
        self.roots = tuple(roots)
        self.idle_timeout = idle_timeout
        self.slots = StartSlots(size=start_slots or 2 * (os.cpu_count() or 1), hold=slot_hold)
        self.cpus = cpus.allowed()  # where launchers run, whatever thread starts them (see `cpus.py`)
        self._lock = threading.Lock()
        self._launchers: dict[LauncherSpec, Launcher] = {}
        self._starting: dict[LauncherSpec, concurrent.futures.Future[Launcher]] = {}
        self._failed: dict[LauncherSpec, float] = {}
        self._timers: dict[int, threading.Timer] = {}
        self._closed = False

    def plan(self, sandbox: Sandbox, launch: LaunchSpec) -> tuple[LauncherSpec, ForkSpec] | None:
        """The launcher and fork for `launch`, or None when it starts as its own program."""
        plan = sandbox.fork_plan(launch, roots=self.roots)
        if plan is None or self._closed:
            return None
        env = dict(plan[0].env)
        if any(env.get(name) != value for name, value in FORK_SAFE_ENV.items()):
            return None
        failed = self._failed.get(plan[0])
        if failed is not None and time.monotonic() - failed < RETRY_AFTER:
            return None
        return plan

    async def spawn(self, sandbox: Sandbox, spec: LauncherSpec, fork: ForkSpec, log_fd: int) -> LaunchedProcess:
        """Fork `fork` from the launcher for `spec` (started first if needed); LauncherError when it cannot."""
        launcher = await asyncio.wrap_future(self._launcher(sandbox, spec))
        pid, ticks = await asyncio.wrap_future(launcher.spawn(fork, log_fd))
        with self._lock:
            timer = self._timers.pop(id(launcher), None)
        if timer is not None:
            timer.cancel()
        return LaunchedProcess(pid=pid, start_ticks=ticks, launcher=launcher)

    def launchers(self) -> list[Launcher]:
        with self._lock:
            return list(self._launchers.values())

    def close(self) -> None:
        """Stop every launcher (their modules keep running)."""
        with self._lock:
            self._closed = True
            launchers, self._launchers = list(self._launchers.values()), {}
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()
        for launcher in launchers:
            launcher.close()

    # -- internals ---------------------------------------------------------------------------------

    def _launcher(self, sandbox: Sandbox, spec: LauncherSpec) -> concurrent.futures.Future[Launcher]:
        with self._lock:
            current = self._launchers.get(spec)
            if current is not None and current.alive:
                done: concurrent.futures.Future[Launcher] = concurrent.futures.Future()
                done.set_result(current)
                return done
            starting = self._starting.get(spec)
            if starting is not None:
                return starting
            starting = concurrent.futures.Future()
            self._starting[spec] = starting
            dead = self._launchers.pop(spec, None)  # it died (its modules run on): a new one takes over
        args = (sandbox, spec, starting, dead)
        threading.Thread(target=self._start, args=args, name="launcher-start", daemon=True).start()
        return starting

    def _start(
        self,
        sandbox: Sandbox,
        spec: LauncherSpec,
        future: concurrent.futures.Future[Launcher],
        dead: Launcher | None,
    ) -> None:
        if dead is not None:
            log.warning("module launcher %s exited; starting another", dead.pid)
            dead.close()
        launcher = Launcher(spec=spec, sandbox=sandbox, on_idle=self._idle)
        began = time.monotonic()
        try:
            with cpus.for_children(self.cpus):
                launcher.start()
        except LauncherError as exc:
            log.warning("%s; modules start as their own programs for the next %g s", exc, RETRY_AFTER)
            with self._lock:
                self._failed[spec] = time.monotonic()
                self._starting.pop(spec, None)
            future.set_exception(exc)
            return
        log.info(
            "module launcher %d started (sandbox %s) in %.2f s", launcher.pid, spec.sandbox, time.monotonic() - began
        )
        with self._lock:
            self._starting.pop(spec, None)
            closed = self._closed
            if not closed:
                self._launchers[spec] = launcher
        if closed:
            launcher.close()
            future.set_exception(LauncherError("the agent is stopping"))
            return
        future.set_result(launcher)

    def _idle(self, launcher: Launcher) -> None:
        """Called by a launcher whose last module exited: stop it unless a module starts meanwhile."""
        timer = threading.Timer(self.idle_timeout, lambda: self._stop_if_idle(launcher, timer))
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            previous = self._timers.pop(id(launcher), None)
            self._timers[id(launcher)] = timer
        if previous is not None:
            previous.cancel()
        timer.start()

    def _stop_if_idle(self, launcher: Launcher, timer: threading.Timer) -> None:
        with self._lock:
            if self._timers.get(id(launcher)) is not timer:
                return  # a module started since (or another timer took over)
            del self._timers[id(launcher)]
            if launcher.running_modules or self._launchers.get(launcher.spec) is not launcher:
                return
            del self._launchers[launcher.spec]
        log.info("module launcher %s stopped: no module ran for %g s", launcher.pid, self.idle_timeout)
        launcher.close()

"""The module launcher's process: import the scoring server once, then fork one module per request.

Started by the agent (`launcher.py`) with one end of a SOCK_SEQPACKET socket pair. Requests are JSON messages,
`{"op": "spawn", "id": n, "spec": {...}}` with the module's log file as an attached descriptor; answers are
`{"op": "spawned", "id": n, "pid": p, "ticks": t}` or `{"op": "failed", "id": n, "error": "..."}`, and every
child's end is told as `{"op": "exited", "pid": p, "ticks": t, "code": c}` (a negative code: killed by that
signal). The launcher stays single-threaded, creates no gRPC channel or server and no onnxruntime session: what
it forks must be as clean as a new process. It exits when the agent closes its end; the modules keep running.

Inside bubblewrap each module gets a pid namespace of its own: the launcher unshares one for its next child
only and returns to its own at once, so the pid it reports is the host's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

from edgewise.runtime.agent import forked, linux
from edgewise.runtime.agent.drivers.forking import ENV_ROOM_VARIABLE, ForkSpec

MAX_MESSAGE = 1 << 20


def preload() -> None:
    """Everything a scoring server imports on its way to serving, so that a forked module does not."""
    from edgewise.runtime.scoring.server import preload as preload_server

    preload_server()


class Launcher:
    def __init__(self, control: socket.socket, *, isolate: bool) -> None:
        self.control = control
        self.isolate = isolate
        self.children: dict[int, int] = {}  # pid -> start ticks
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the agent, which closes us
        self._selector = selectors.DefaultSelector()
        self._selector.register(control, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if isolate else -1

    def serve(self) -> int:
        self._send({"op": "ready", "pid": os.getpid()})
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self.control:
                    if not self._receive():
                        return 0
                else:
                    while True:
                        try:
                            if not os.read(self._wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                    self._reap()

    def _receive(self) -> bool:
        try:
            message, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 4)
        except ConnectionError:
            return False
        if not message:
            for fd in fds:
                os.close(fd)
            return False
        try:
            request = json.loads(message)
            if request.get("op") != "spawn" or len(fds) != 1:
                raise ValueError(f"unknown request {request.get('op')!r} with {len(fds)} descriptors")
            self._spawn(request, fds[0])
        except (ValueError, KeyError, TypeError, OSError) as exc:
            for fd in fds:
                os.close(fd)
            self._send({"op": "failed", "id": _id_of(message), "error": str(exc)})
        return True

    def _spawn(self, request: dict[str, Any], log_fd: int) -> None:
        spec = ForkSpec.from_json(request["spec"])
        sys.stdout.flush()
        sys.stderr.flush()
        if self.isolate:
            linux.unshare(linux.CLONE_NEWPID)  # for the next child only: see the module docstring
        try:
            pid = os.fork()
        except OSError:
            self._back_to_own_pid_ns()
            raise
        if pid == 0:
            forked.run(spec, log_fd=log_fd, close_launcher=self._close_in_child)
        self._back_to_own_pid_ns()
        os.close(log_fd)
        ticks = _start_ticks(pid)
        self.children[pid] = ticks
        self._send({"op": "spawned", "id": request["id"], "pid": pid, "ticks": ticks})
        self._reap()

    def _back_to_own_pid_ns(self) -> None:
        if self.isolate:
            linux.setns(self._own_pid_ns, linux.CLONE_NEWPID)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ticks = self.children.pop(pid, 0)
            self._send({"op": "exited", "pid": pid, "ticks": ticks, "code": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the agent is gone; the next receive ends the loop
            self.control.send(json.dumps(message).encode())

    def _close_in_child(self) -> None:
        """A module keeps nothing of the launcher's: its control socket, selector, wake-up pipe."""
        self._selector.close()
        self.control.close()
        for fd in (self._wake_r, self._wake_w, self._own_pid_ns):
            if fd >= 0:
                os.close(fd)


def _id_of(message: bytes) -> Any:
    try:
        return json.loads(message).get("id")
    except (ValueError, AttributeError):
        return None


def _start_ticks(pid: int) -> int:
    """/proc/<pid>/stat field 22 (the child is at worst a zombie here: only this process reaps it)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode(errors="replace")
    return int(raw[raw.rindex(")") + 2 :].split()[19])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgewise-agent module launcher")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--sandbox", choices=["bubblewrap", "none"], required=True)
    parser.add_argument("room", nargs="?", help="room for the command lines of forked modules")
    opts = parser.parse_args(argv)
    control = socket.socket(fileno=opts.control_fd)
    os.set_inheritable(opts.control_fd, False)
    os.environ.pop(ENV_ROOM_VARIABLE, None)
    linux.detach_environment()  # forked modules write their environment over the initial strings
    linux.set_command_line(["edgewise-agent", "module-launcher", f"--sandbox={opts.sandbox}"])
    if opts.sandbox == "bubblewrap":
        linux.last_capability()  # read here once instead of in every module that drops them
    preload()
    gc.freeze()  # what the launcher imported stays out of the children's collections (and their copied pages)
    return Launcher(control, isolate=opts.sandbox == "bubblewrap").serve()


if __name__ == "__main__":
    sys.exit(main())

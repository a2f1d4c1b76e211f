"""A module forked from the launcher: it becomes what `edgewise-score` started as its own program would be.

In the child of the launcher's fork, before any module code runs: a session of its own, stdout and stderr on
the module's log, stdin on /dev/null, the name and command line of the scoring server, the module's environment
and working directory, and (inside a sandboxed launcher) its own namespaces and file system view with every
capability dropped. Then the scoring server's own `main` runs, and the process exits with its status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import NoReturn

from edgewise.runtime.agent import linux
from edgewise.runtime.agent.drivers.base import MODULE_CONFIG, SCORE_COMMAND
from edgewise.runtime.agent.drivers.forking import ForkSpec, Isolation

_NAMESPACES = linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS


def run(spec: ForkSpec, *, log_fd: int, close_launcher: Callable[[], None]) -> NoReturn:
    """Turn this freshly forked process into the module and run it; never returns."""
    code = 1
    try:
        close_launcher()
        _own_session_and_output(log_fd)
        _reset_signals()
        linux.set_process_name(SCORE_COMMAND)
        linux.set_command_line(list(spec.title))
        if spec.isolation is not None:
            isolate(spec.isolation)
        os.chdir(spec.cwd)
        _own_environment(spec.env)
        linux.set_environment_strings(dict(spec.env))
        if spec.isolation is not None:
            linux.drop_capabilities()
        _fresh_process_state(spec)
        code = _serve(spec)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException as exc:  # the module's log says why it could not start; the agent sees the exit
        with contextlib.suppress(Exception):
            print(f"edgewise-agent: module {spec.module} generation {spec.generation} failed: {exc}", file=sys.stderr)
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)


def _serve(spec: ForkSpec) -> int:
    from edgewise.runtime.scoring import cli

    if spec.settings is not None:
        cli.main_from(spec.settings)
    else:
        cli.main(list(spec.args))
    return 0


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _own_session_and_output(log_fd: int) -> None:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    if log_fd > 2:
        os.close(log_fd)


def _own_environment(env: Mapping[str, str]) -> None:
    """The module's environment in place of the launcher's, which differs from it in a few variables at most
    (see `forking.PER_MODULE_ENV`): only those are set or unset. The launcher detached the C environment from
    its initial strings (`linux.detach_environment`), which the module then shows its own in."""
    for key in [key for key in os.environ if key not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _reset_signals() -> None:
    """Dispositions as a new program has them; SIGTERM ends the process at once until the server installs its
    own handler (as the pid 1 of its namespace, a signal without a handler would be ignored)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))


def _fresh_process_state(spec: ForkSpec) -> None:
    """What a forked process would otherwise share with its launcher and siblings."""
    sys.argv = [SCORE_COMMAND, *spec.args]
    root = logging.getLogger()
    for handler in list(root.handlers):  # the scoring server configures logging itself
        root.removeHandler(handler)
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:  # the legacy global generator would repeat the launcher's sequence
        numpy_random.seed()


def isolate(iso: Isolation) -> None:
    """Build the module's own view inside the launcher's sandbox (see `drivers/bubblewrap.py`)."""
    linux.unshare(_NAMESPACES)
    linux.make_private("/")
    # Descriptors first: the folders they name disappear below the covers mounted next.
    sources = {bind.source: os.open(bind.source, os.O_PATH | os.O_CLOEXEC) for bind in iso.binds}
    config = os.open(iso.config_file, os.O_PATH | os.O_CLOEXEC) if iso.config_file is not None else None
    try:
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        linux.tmpfs("/tmp", mode=0o1777)
        linux.tmpfs("/dev/shm", mode=0o1777)
        linux.mount("devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC, "newinstance,ptmxmode=0666")
        covered = [path for path in iso.cover if os.path.isdir(path)]  # a root below /tmp is gone already
        for path in covered:
            linux.tmpfs(path)
        for bind in iso.binds:
            os.makedirs(bind.target, exist_ok=True)
            linux.bind(f"/proc/self/fd/{sources[bind.source]}", bind.target, writable=bind.writable)
        if config is not None:
            folder = str(MODULE_CONFIG.parent)
            linux.tmpfs(folder)
            with open(MODULE_CONFIG, "wb"):
                pass
            linux.bind(f"/proc/self/fd/{config}", str(MODULE_CONFIG), writable=False)
            linux.remount_read_only(folder)
        for path in covered:
            linux.remount_read_only(path)
        for path in ("/", "/dev"):
            linux.remount_read_only(path)
        linux.sethostname(iso.hostname)
    finally:
        for fd in [*sources.values(), *([config] if config is not None else [])]:
            os.close(fd)

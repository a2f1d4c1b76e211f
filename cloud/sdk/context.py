"""The process's run: `get_context()`, and the exit paths that make sure no logged point is lost.

At interpreter exit (normal end, `sys.exit`, or an uncaught exception) every open run's points are delivered
and open child runs are ended (failed when an exception ended the script). SIGTERM, which is how the
workspace cancels a run, does the same before the process dies of the signal as it would have.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from types import FrameType

from edgewise.cloud.sdk.run import Run

SIGTERM_FLUSH_SECONDS = 10.0

_lock = threading.RLock()  # get_context() creates a run, which registers itself
_current: Run | None = None
_runs: dict[int, Run] = {}  # open runs in creation order, held until they complete so exit can finish them
_exit_hook = False
_sigterm_hook = False


def get_context() -> Run:
    """The one run of this process, created on first use from the EDGEWISE_* environment."""
    global _current
    with _lock:
        if _current is None:
            _current = _create()
        _install_exit_hook()
        _install_sigterm_hook()
        return _current


def _create() -> Run:
    from edgewise.cloud.sdk.sinks import ServiceSink

    run_id = os.environ.get("EDGEWISE_RUN_ID")
    if run_id:
        from edgewise.cloud.client import Client

        client = Client(url=os.environ.get("EDGEWISE_URL"), token=os.environ.get("EDGEWISE_TOKEN"))
        experiment = os.environ.get("EDGEWISE_EXPERIMENT") or ""
        return Run(sink=ServiceSink(client=client, run_id=run_id, experiment=experiment))
    from edgewise.cloud.sdk.offline import OfflineSink, new_offline_folder

    folder = new_offline_folder()
    sink = OfflineSink(folder=folder, experiment=os.environ.get("EDGEWISE_EXPERIMENT") or "offline")
    print(f"[edgewise] not inside a submitted run: logging offline to {sink.metrics_path}", flush=True)
    return Run(sink=sink)


def track(run: Run) -> None:
    """Remember `run` until it completes, so that exit delivers its points even if the script dropped it."""
    with _lock:
        _runs[id(run)] = run
        _install_exit_hook()


def untrack(run: Run) -> None:
    with _lock:
        _runs.pop(id(run), None)


def finish_all(*, status: str = "completed", reason: str | None = None, timeout: float | None = None) -> None:
    """Deliver every open run's points; end open child runs with `status` (the service ends submitted runs)."""
    with _lock:
        runs = list(reversed(_runs.values()))
    for run in runs:  # children were created after their parents: they end first
        if run.completed:
            continue
        try:
            delivered = run.close(timeout)
            if delivered and run.parent is not None:
                run.complete(status=status, reason=reason)
        except Exception as exc:  # the exit path must go on with the other runs
            print(f"edgewise: WARNING: could not finish {run!r}: {exc}", file=sys.stderr, flush=True)


def _at_exit() -> None:
    failed = getattr(sys, "last_value", None) is not None
    if failed:
        finish_all(status="failed", reason=f"the script raised {type(sys.last_value).__name__}")
    else:
        finish_all()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    finish_all(status="failed", reason="canceled (SIGTERM)", timeout=SIGTERM_FLUSH_SECONDS)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hook() -> None:
    global _exit_hook
    if not _exit_hook:
        _exit_hook = True
        atexit.register(_at_exit)


def _install_sigterm_hook() -> None:
    """Only where the script left SIGTERM alone, and only from the main thread (where handlers can be set)."""
    global _sigterm_hook
    if _sigterm_hook or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_hook = True
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)

"""Process groups of runs: signalling a whole tree, waiting for it to go, and stopping orphans.

A run's script starts in a session of its own, so its process id is also the id of the group that holds
everything it started; signalling the group reaches grandchildren that the script itself never waits for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

DEFAULT_GRACE_PERIOD = 5.0  # seconds between SIGTERM and SIGKILL


def stop_orphan(pid: int) -> bool:
    """Stop the process group `pid` left by an earlier service instance; True if there was one to stop.

    Only a group one of whose processes carries a run's environment (EDGEWISE_RUN_ID) is touched, so a
    recycled process id never gets an unrelated program killed.
    """
    if pid <= 1 or not group_alive(pid) or not _is_run_group(pid):
        return False
    signal_group(pid, signal.SIGTERM)
    kill_after(pid, DEFAULT_GRACE_PERIOD)
    return True


def _is_run_group(pgid: int) -> bool:
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # no way to look: trust the recorded id
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            if b"\x00EDGEWISE_RUN_ID=" in b"\x00" + (entry / "environ").read_bytes():
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_after(pgid: int, grace: float) -> None:
    """Wait up to `grace` seconds for the group to end, then SIGKILL what is left of it."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)


def exit_reason(code: int | None) -> str:
    """Why a script's run failed, from its exit status (negative: the signal that killed it)."""
    if code is None:
        return "the script did not start"
    if code >= 0:
        return f"script exited with code {code}"
    try:
        return f"killed by signal {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"

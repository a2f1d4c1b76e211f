"""The CPUs a started module may use: those its agent was given, not those of the thread that starts it.

Linux gives a new process the CPU affinity of the thread that creates it. The threads of an agent may be kept
on fewer CPUs than the agent was given (a simulated fleet keeps its agents' threads on one CPU: they take turns
at the interpreter lock, and each hand-over between CPUs costs a cross-CPU wake-up); the launcher and the
modules it forks must not inherit that restriction.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def allowed() -> frozenset[int] | None:
    """The CPUs the calling thread may run on; None where the system does not say."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def for_children(cpus: frozenset[int] | None) -> Iterator[None]:
    """Processes this thread starts inside the block may run on `cpus` (None: as this thread); the thread's own
    affinity is restored afterwards."""
    own = allowed()
    if cpus is None or own is None or own == cpus:
        yield
        return
    try:
        os.sched_setaffinity(0, cpus)
    except OSError:  # a CPU went offline since: the children run where this thread may
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, own)

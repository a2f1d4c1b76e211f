"""A process started from a thread kept on one CPU runs where its agent may, not where that thread may."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from edgewise.runtime.agent import cpus

EVERY_CPU = frozenset(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(len(EVERY_CPU) < 2, reason="needs two CPUs to narrow a thread to one")


def _in_a_thread_on_one_cpu(work: object) -> dict[str, object]:
    seen: dict[str, object] = {}

    def body() -> None:
        os.sched_setaffinity(0, {max(EVERY_CPU)})
        seen.update(work())  # type: ignore[operator]
        seen["after"] = frozenset(os.sched_getaffinity(0))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    return seen


def _child_cpus() -> frozenset[int]:
    child = subprocess.Popen(["sleep", "5"])
    try:
        return frozenset(os.sched_getaffinity(child.pid))
    finally:
        child.kill()
        child.wait()


def test_a_child_started_for_the_agents_cpus_runs_on_them_and_the_thread_stays_narrowed() -> None:
    def work() -> dict[str, object]:
        with cpus.for_children(EVERY_CPU):
            return {"child": _child_cpus()}

    seen = _in_a_thread_on_one_cpu(work)
    assert seen["child"] == EVERY_CPU
    assert seen["after"] == {max(EVERY_CPU)}


def test_without_cpus_a_child_inherits_the_threads_affinity() -> None:
    def work() -> dict[str, object]:
        with cpus.for_children(None):
            return {"child": _child_cpus()}

    assert _in_a_thread_on_one_cpu(work)["child"] == {max(EVERY_CPU)}
    assert cpus.allowed() == EVERY_CPU

"""Assertions shared by the end-to-end tests, about processes and reported state."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.runtime.agent.e2e import procs
from tests.runtime.agent.e2e.rig import MODULE, DeviceRig


def serving_pid(rig: DeviceRig, module: str = MODULE) -> int:
    """The reported pid of `module`, checked to be alive and to be (or contain) every listener of its HTTP port."""
    entry = rig.module(module)
    pid = entry.get("pid")
    assert isinstance(pid, int), f"reported {module} has no pid: {entry}"
    assert procs.alive(pid), f"reported pid {pid} of {module} is not running"
    listeners = procs.listening_pids(rig.http_port(module))
    tree = procs.descendants([pid])
    assert listeners, f"nothing listens on {module}'s HTTP port {rig.http_port(module)}"
    assert listeners <= tree, (
        f"port {rig.http_port(module)} is held by {sorted(listeners)}, not only by pid {pid}'s tree {sorted(tree)}: "
        + "; ".join(f"{p}: {' '.join(procs.cmdline(p))[:200]}" for p in sorted(listeners - tree))
    )
    return pid


def one_server_per_module(rig: DeviceRig, modules: int = 1) -> bool:
    """Whether exactly `modules` module process trees run from the agent's state directory."""
    return len(rig.agent.module_roots()) == modules


def describe_roots(rig: DeviceRig) -> str:
    """Each module process tree: its root (and parent), and the scoring servers in it."""
    parts = []
    for root in sorted(rig.agent.module_roots()):
        servers = [
            f"{pid}: {' '.join(procs.cmdline(pid))[:160]}"
            for pid in sorted(procs.descendants([root]))
            if any("edgewise-score" in arg for arg in procs.cmdline(pid))
        ]
        head = " ".join(procs.cmdline(root))[:60]
        parts.append(f"tree {root} (parent {procs.parent(root)}, {head}...) runs [{'; '.join(servers)}]")
    return f"{len(parts)} module process trees: " + " | ".join(parts)


def wait_one_server_per_module(rig: DeviceRig, modules: int = 1, *, timeout: float = 20.0) -> None:
    """Wait until exactly `modules` module process trees run; fail describing them as they are then."""
    deadline = time.monotonic() + timeout
    while not one_server_per_module(rig, modules):
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g}s, expected {modules}: {describe_roots(rig)}")
        time.sleep(0.1)


def text_of(*parts: Any) -> str:
    return json.dumps(parts).lower()

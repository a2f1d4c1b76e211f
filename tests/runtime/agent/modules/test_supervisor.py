"""Module processes under bubblewrap and without: start, health, stop (really stopping the server), adoption."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

from edgewise.runtime.agent.drivers import BubblewrapSandbox, PlainSandbox, Sandbox
from edgewise.runtime.agent.health import admin_request, wait_healthy
from edgewise.runtime.agent.supervisor import ModuleProcess, Supervisor, read_stat

from tests.runtime.agent.modules.conftest import LaunchFactory, Tracker, needs_bwrap
from tests.support import HOST, wait_until


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := read_stat(int(name))) is not None:
            children.setdefault(stat.ppid, []).append(stat.pid)
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def healthy(supervisor: Supervisor, proc: ModuleProcess, *, warmup: bool = True) -> None:
    asyncio.run(wait_healthy(proc.admin_dir, timeout=30.0, warmup=warmup, alive=lambda: supervisor.alive(proc)))


def test_start_serve_and_stop(sandbox: Sandbox, make_launch: LaunchFactory, tracker: Tracker) -> None:
    supervisor = Supervisor(sandbox=sandbox, stop_grace=10.0)
    launch = make_launch()
    proc = tracker.add(supervisor, supervisor.start(launch))
    healthy(supervisor, proc)
    assert port_open(launch.settings.http_port) and port_open(launch.settings.grpc_port)
    status, body = admin_request(launch.admin_dir, "GET", "/v2/admin/state")
    assert status == 200
    server_pid = json.loads(body)["pid"]
    stat = read_stat(proc.pid)
    assert stat is not None and stat.comm == "edgewise-score"  # the server itself, not its sandbox
    processes = [proc.pid]
    if sandbox.name == "bubblewrap":
        # it runs in its own pid namespace, below the bwrap wrappers the supervisor started
        assert os.readlink(f"/proc/{proc.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        wrapper = read_stat(stat.ppid)
        assert wrapper is not None and wrapper.comm == "bwrap"
        processes += [stat.ppid, wrapper.ppid]
    else:
        assert server_pid == proc.pid
    assert supervisor.exit_status(proc) == (False, None)

    code = asyncio.run(supervisor.stop(proc))
    assert code == 0  # the server drained and exited on SIGTERM (bwrap passes its code on)
    assert supervisor.exit_status(proc) == (True, 0)
    for pid in processes:  # nothing of the module is left, the server inside the sandbox included
        stat = read_stat(pid)
        assert stat is None or stat.dead, f"process {pid} ({stat}) survived the stop"
    assert not port_open(launch.settings.http_port)
    assert not (launch.admin_dir / "http.sock").exists()
    log = launch.log_path.read_text()
    assert "starting iris generation 1" in log and "edgewise-score stopped" in log


@needs_bwrap
def test_module_sees_its_sandbox(make_launch: LaunchFactory, tracker: Tracker) -> None:
    """Under bubblewrap the model repository is the image's, read-only, and HOME is the data folder."""
    supervisor = Supervisor(sandbox=BubblewrapSandbox(), stop_grace=10.0)
    launch = make_launch()
    proc = tracker.add(supervisor, supervisor.start(launch))
    healthy(supervisor, proc, warmup=False)
    server = tree(proc.pid)[-1]
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{server}/environ").read_text().split("\0") if "=" in item
    )
    assert environ["HOME"] == "/var/lib/edgewise/data"
    assert os.readlink(f"/proc/{server}/cwd") == "/var/lib/edgewise/data"
    mounts = Path(f"/proc/{server}/mounts").read_text().splitlines()
    models = [line.split() for line in mounts if line.split()[1] == "/var/lib/edgewise/models"]
    assert models and "ro" in models[0][3].split(",")
    data = [line.split() for line in mounts if line.split()[1] == "/var/lib/edgewise/data"]
    assert data and "rw" in data[0][3].split(",")


def test_adopt_after_agent_restart(sandbox: Sandbox, make_launch: LaunchFactory, tracker: Tracker) -> None:
    first = Supervisor(sandbox=sandbox, stop_grace=10.0)
    launch = make_launch()
    proc = tracker.add(first, first.start(launch))
    healthy(first, proc, warmup=False)

    # A new agent process knows only what the module record says.
    second = Supervisor(sandbox=sandbox, stop_grace=10.0)
    record = {"pid": proc.pid, "started_at": proc.started_at, "generation": 1, "admin_dir": launch.admin_dir}
    assert second.adopt(start_ticks=proc.start_ticks + 1, **record) is None  # same pid, another process
    adopted = second.adopt(start_ticks=proc.start_ticks, **record)
    assert adopted is not None and adopted == proc
    assert second.exit_status(adopted) == (False, None)

    asyncio.run(second.stop(adopted))
    exited, _ = second.exit_status(adopted)
    assert exited
    assert second.adopt(start_ticks=proc.start_ticks, **record) is None  # gone now
    assert not port_open(launch.settings.http_port)


def test_a_module_that_exits_is_seen_with_its_code(make_launch: LaunchFactory, tracker: Tracker) -> None:
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=5.0)
    launch = make_launch()
    # The model repository is gone from the image: edgewise-score refuses to start (argparse error, code 2).
    bad = launch.rootfs / "var/lib/edgewise/models"
    bad.rename(bad.with_name("elsewhere"))
    proc = tracker.add(supervisor, supervisor.start(launch))
    wait_until(lambda: supervisor.exit_status(proc)[0], timeout=30.0, what="the module to exit")
    assert supervisor.exit_status(proc) == (True, 2)
    assert "is not a directory" in launch.log_path.read_text()
    assert asyncio.run(supervisor.stop(proc)) == 2  # stopping an exited module is harmless


def test_stop_kills_a_module_that_ignores_sigterm(make_launch: LaunchFactory, tracker: Tracker) -> None:
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=0.5)
    launch = make_launch()
    proc = tracker.add(supervisor, supervisor.start(launch))
    healthy(supervisor, proc, warmup=False)
    os.kill(proc.pid, 19)  # SIGSTOP: it cannot act on SIGTERM now
    code = asyncio.run(supervisor.stop(proc))
    assert code == 128 + 9
    assert read_stat(proc.pid) is None


def test_killing_the_reported_pid_ends_the_whole_module(
    sandbox: Sandbox, make_launch: LaunchFactory, tracker: Tracker
) -> None:
    """The pid the agent reports is the server's: SIGKILL to it frees the ports, sandbox or not."""
    supervisor = Supervisor(sandbox=sandbox, stop_grace=10.0)
    launch = make_launch()
    proc = tracker.add(supervisor, supervisor.start(launch))
    healthy(supervisor, proc, warmup=False)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not supervisor.exit_status(proc)[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    exited, code = supervisor.exit_status(proc)
    assert exited and code == 128 + signal.SIGKILL
    assert not port_open(launch.settings.http_port)

"""Modules forked from the module launcher: ordinary supervised processes, each in a sandbox of its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgewise.runtime.agent.drivers import BubblewrapSandbox, LaunchSpec, PlainSandbox, Sandbox
from edgewise.runtime.agent.drivers.forking import RootDir
from edgewise.runtime.agent.handover import replace, start_verified
from edgewise.runtime.agent.health import admin_request
from edgewise.runtime.agent.launcher import LauncherPool
from edgewise.runtime.agent.supervisor import ModuleProcess, Supervisor, read_stat

from tests.runtime.agent.modules.conftest import BWRAP, LaunchFactory, Tracker, make_image, needs_bwrap
from tests.runtime.agent.modules.test_supervisor import port_open
from tests.support import wait_until


@pytest.fixture
def pool(tmp_path: Path, short_dir: Path) -> Iterator[LauncherPool]:
    """A pool whose sandboxed launchers show the test's folders (images, data, log, admin sockets)."""
    roots = (RootDir(path=tmp_path, writable=True), RootDir(path=short_dir, writable=True))
    launchers = LauncherPool(roots=roots, idle_timeout=60.0)
    yield launchers
    launchers.close()


def start(supervisor: Supervisor, launch: LaunchSpec, tracker: Tracker) -> ModuleProcess:
    return tracker.add(supervisor, asyncio.run(start_verified(supervisor=supervisor, launch=launch)))


def cmdline(pid: int) -> list[str]:
    return [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_a_forked_module_is_an_ordinary_supervised_process(
    sandbox: Sandbox, make_launch: LaunchFactory, tracker: Tracker, pool: LauncherPool
) -> None:
    supervisor = Supervisor(sandbox=sandbox, stop_grace=10.0, launchers=pool)
    assert pool.launchers() == []  # nothing runs until the first module starts
    launch = make_launch()
    proc = start(supervisor, launch, tracker)
    [launcher] = pool.launchers()
    stat = read_stat(proc.pid)
    assert stat is not None and stat.comm == "edgewise-score" and stat.ppid == launcher.pid
    assert os.getsid(proc.pid) == proc.pid and stat.pgid == proc.pid  # a session of its own, like any module
    shown = cmdline(proc.pid)  # the command line it would have had as a program of its own
    assert shown[0].endswith("edgewise-score") and str(launch.admin_dir) in shown and "--defer-listen" in shown
    assert port_open(launch.settings.http_port) and port_open(launch.settings.grpc_port)
    status, body = admin_request(launch.admin_dir, "GET", "/v2/admin/state")
    assert status == 200
    assert json.loads(body)["pid"] == (1 if sandbox.name == "bubblewrap" else proc.pid)  # own pid namespace
    assert supervisor.exit_status(proc) == (False, None)

    second = make_launch(2)
    new = asyncio.run(replace(supervisor=supervisor, old=proc, launch=second))
    tracker.add(supervisor, new)
    new_stat = read_stat(new.pid)
    assert new_stat is not None and new_stat.ppid == launcher.pid and len(pool.launchers()) == 1
    assert supervisor.exit_status(proc) == (True, 0)  # the old generation drained and exited on SIGTERM
    assert port_open(second.settings.http_port)

    assert asyncio.run(supervisor.stop(new)) == 0
    assert supervisor.exit_status(new) == (True, 0)
    gone = read_stat(new.pid)
    assert gone is None or gone.dead
    assert not port_open(second.settings.http_port)
    log = launch.log_path.read_text()
    assert "starting iris generation 1 (launcher)" in log and "starting iris generation 2 (launcher)" in log
    assert "edgewise-score stopped" in log


def test_exit_codes_of_forked_modules(
    make_launch: LaunchFactory, tracker: Tracker, pool: LauncherPool, tmp_path: Path
) -> None:
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=0.5, launchers=pool)
    killed = start(supervisor, make_launch(), tracker)
    os.kill(killed.pid, signal.SIGKILL)
    wait_until(lambda: supervisor.exit_status(killed)[0], timeout=20.0, what="the killed module to be seen")
    assert supervisor.exit_status(killed) == (True, 128 + signal.SIGKILL)

    frozen = start(supervisor, make_launch(2), tracker)
    os.kill(frozen.pid, signal.SIGSTOP)  # it cannot act on SIGTERM now
    assert asyncio.run(supervisor.stop(frozen)) == 128 + signal.SIGKILL

    bad = make_launch(3)
    models = bad.rootfs / "var/lib/edgewise/models"
    models.rename(models.with_name("elsewhere"))  # edgewise-score refuses to start: argparse error, code 2
    proc = tracker.add(supervisor, asyncio.run(supervisor.spawn(bad)))
    wait_until(lambda: supervisor.exit_status(proc)[0], timeout=20.0, what="the module to exit")
    assert supervisor.exit_status(proc) == (True, 2)
    assert "is not a directory" in bad.log_path.read_text()

    rootfs, config = make_image(tmp_path / "image-unknown-option")
    config["Cmd"] = ["--no-such-option"]  # the module's own parser rejects it, as the program's would
    unknown = make_launch(4, rootfs=rootfs, image_config=config, log_path=tmp_path / "unknown.log")
    proc = tracker.add(supervisor, asyncio.run(supervisor.spawn(unknown)))
    wait_until(lambda: supervisor.exit_status(proc)[0], timeout=20.0, what="the module to exit")
    assert supervisor.exit_status(proc) == (True, 2)
    assert "unrecognized arguments: --no-such-option" in unknown.log_path.read_text()


def test_modules_outlive_their_launcher(make_launch: LaunchFactory, tracker: Tracker, pool: LauncherPool) -> None:
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=10.0, launchers=pool)
    launch = make_launch()
    proc = start(supervisor, launch, tracker)
    [launcher] = pool.launchers()
    pool.close()  # as when the agent stops: the launcher exits, the module keeps serving
    assert launcher.pid is not None
    wait_until(lambda: (s := read_stat(launcher.pid or 0)) is None or s.dead, timeout=20.0, what="the launcher")
    assert supervisor.exit_status(proc) == (False, None)
    assert admin_request(launch.admin_dir, "GET", "/v2/health/ready")[0] == 200
    assert asyncio.run(supervisor.stop(proc)) is None  # nobody is left to tell its exit code
    assert supervisor.exit_status(proc) == (True, None)
    assert not port_open(launch.settings.http_port)


def test_an_idle_launcher_stops(make_launch: LaunchFactory, tracker: Tracker, tmp_path: Path, short_dir: Path) -> None:
    pool = LauncherPool(roots=(RootDir(path=tmp_path, writable=True),), idle_timeout=0.5)
    try:
        supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=10.0, launchers=pool)
        proc = start(supervisor, make_launch(), tracker)
        [launcher] = pool.launchers()
        asyncio.run(supervisor.stop(proc))
        wait_until(lambda: pool.launchers() == [], timeout=20.0, what="the idle launcher to stop")
        wait_until(lambda: (s := read_stat(launcher.pid or 0)) is None or s.dead, timeout=20.0, what="its exit")
        again = start(supervisor, make_launch(2), tracker)  # the next module starts a new launcher
        [fresh] = pool.launchers()
        stat = read_stat(again.pid)
        assert fresh.pid != launcher.pid and stat is not None and stat.ppid == fresh.pid
    finally:
        pool.close()


def test_a_module_that_turns_onnxruntime_telemetry_on_starts_as_its_own_program(
    make_launch: LaunchFactory, tracker: Tracker, pool: LauncherPool
) -> None:
    """onnxruntime then runs a thread from import on, which a fork would lose: no launcher for it."""
    supervisor = Supervisor(sandbox=PlainSandbox(), stop_grace=10.0, launchers=pool)
    launch = make_launch(env={"ORT_DISABLE_TELEMETRY": "0"})
    assert pool.plan(PlainSandbox(), launch) is None
    proc = start(supervisor, launch, tracker)
    assert pool.launchers() == []
    stat = read_stat(proc.pid)
    assert stat is not None and stat.ppid == os.getpid()


@needs_bwrap
def test_a_forked_module_sees_only_its_own_sandbox(
    make_launch: LaunchFactory, tracker: Tracker, pool: LauncherPool, tmp_path: Path
) -> None:
    supervisor = Supervisor(sandbox=BubblewrapSandbox(executable=BWRAP or "bwrap"), stop_grace=10.0, launchers=pool)
    mine = make_launch()
    other = make_launch(2, module="other", data_dir=tmp_path / "other-data", log_path=tmp_path / "other-log")
    proc = start(supervisor, mine, tracker)
    neighbour = start(supervisor, other, tracker)
    (other.data_dir / "secret").write_text("not for iris")
    (mine.data_dir / "hello").write_text("for iris")

    status = status_fields(proc.pid)
    assert status["CapEff"] == status["CapBnd"] == status["CapPrm"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    for ns in ("pid", "mnt", "ipc", "uts"):
        ours, its, theirs = (os.readlink(f"/proc/{p}/ns/{ns}") for p in (os.getpid(), proc.pid, neighbour.pid))
        assert its != ours and its != theirs, ns
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{proc.pid}/environ").read_text().split("\0") if "=" in item
    )
    assert environ["HOME"] == "/var/lib/edgewise/data"
    assert os.readlink(f"/proc/{proc.pid}/cwd") == "/var/lib/edgewise/data"

    def inside(*command: str) -> subprocess.CompletedProcess[str]:
        """A command in the module's mount and UTS namespaces (as the test's root, capabilities and all)."""
        return subprocess.run(
            ["nsenter", "-t", str(proc.pid), "-m", "-u", *command], capture_output=True, text=True, check=False
        )

    assert inside("hostname").stdout.strip() == "iris"
    assert inside("cat", "/var/lib/edgewise/data/hello").stdout == "for iris"
    assert inside("touch", "/var/lib/edgewise/data/written").returncode == 0
    assert (mine.data_dir / "written").exists()
    assert inside("cat", "/etc/edgewise/module.json").stdout == (mine.rootfs / "etc/edgewise/module.json").read_text()
    for read_only in ("/image/new", "/var/lib/edgewise/models/new", "/etc/edgewise/new", "/new", "/dev/new"):
        denied = inside("touch", read_only)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, read_only
    assert inside("cat", str(other.data_dir / "secret")).returncode != 0  # the neighbour's folders are hidden
    assert inside("ls", str(other.rootfs)).returncode != 0
    assert inside("touch", "/tmp/private").returncode == 0
    assert not Path(f"/proc/{neighbour.pid}/root/tmp/private").exists()

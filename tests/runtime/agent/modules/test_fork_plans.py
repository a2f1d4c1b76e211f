"""What a launcher is told: fork plans of both sandboxes, the launcher's own command, and the start slots."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from edgewise.runtime.agent.drivers import BubblewrapSandbox, PlainSandbox
from edgewise.runtime.agent.drivers.bubblewrap import python_paths
from edgewise.runtime.agent.drivers.forking import ARGS_FD, ForkSpec, LauncherSpec, RootDir
from edgewise.runtime.agent.errors import ModuleError
from edgewise.runtime.agent.launcher import LauncherPool
from edgewise.runtime.agent.slots import StartSlots
from edgewise.runtime.scoring.cli import read_arguments

from tests.runtime.agent.modules.conftest import LaunchFactory, make_image
from tests.support import require_native_grpc


def test_a_plain_fork_is_the_command_it_replaces(make_launch: LaunchFactory, tmp_path: Path) -> None:
    launch = make_launch(sample_file=tmp_path / "samples.jsonl", sample_rate=0.5)
    command = PlainSandbox().command(launch)
    plan = PlainSandbox().fork_plan(launch, roots=())
    assert plan is not None
    spec, fork = plan
    assert list(fork.title) == command.argv and command.argv[-len(fork.args) :] == list(fork.args)
    assert dict(fork.env) == command.env and fork.cwd == str(command.cwd) and fork.isolation is None
    assert spec.sandbox == "none" and "HOME" not in dict(spec.env)  # HOME is each module's own
    assert dict(spec.env)["ORT_DISABLE_TELEMETRY"] == "1"
    assert ForkSpec.from_json(fork.to_json()) == fork
    # the module starts from its arguments as the scoring server reads them, without parsing them again
    assert fork.settings == read_arguments(list(fork.args))
    assert fork.settings["sample_rate"] == 0.5 and fork.settings["defer_listen"] is launch.defer_listen


def test_a_fork_with_arguments_the_server_rejects_parses_them_itself(
    make_launch: LaunchFactory, tmp_path: Path
) -> None:
    """The module's own parser then says what is wrong, in its log, as a server started as a program would."""
    rootfs, config = make_image(tmp_path / "image-bad")
    config["Cmd"] = ["--no-such-option"]
    plan = PlainSandbox().fork_plan(make_launch(rootfs=rootfs, image_config=config), roots=())
    assert plan is not None and plan[1].settings is None and "--no-such-option" in plan[1].args


def test_modules_with_equal_environments_share_a_launcher(make_launch: LaunchFactory, tmp_path: Path) -> None:
    one = PlainSandbox().fork_plan(make_launch(), roots=())
    two = PlainSandbox().fork_plan(make_launch(2, data_dir=tmp_path / "elsewhere"), roots=())
    other = PlainSandbox().fork_plan(make_launch(3, env={"OMP_NUM_THREADS": "2"}), roots=())
    assert one is not None and two is not None and other is not None
    assert one[0] == two[0] and one[1].env["HOME"] != two[1].env["HOME"]
    assert other[0] != one[0]  # native libraries read such variables as the launcher imports them


@pytest.mark.skipif(os.geteuid() != 0, reason="a sandboxed launcher needs the agent to run as root")
def test_a_bubblewrap_fork_binds_what_the_command_binds(make_launch: LaunchFactory, tmp_path: Path) -> None:
    launch = make_launch()
    sandbox = BubblewrapSandbox(executable="bwrap")
    roots = (RootDir(path=tmp_path, writable=True), RootDir(path=launch.admin_dir.parent, writable=True))
    plan = sandbox.fork_plan(launch, roots=roots)
    assert plan is not None
    spec, fork = plan
    command = sandbox.command(launch).argv
    assert list(fork.title) == command[command.index("--") + 1 :]  # what runs inside bwrap, the same way
    assert fork.cwd == "/var/lib/edgewise/data" and fork.env["HOME"] == "/var/lib/edgewise/data"
    iso = fork.isolation
    assert iso is not None and iso.hostname == "iris" and iso.cover == tuple(str(r.path) for r in roots)
    binds = {(b.source, b.target, b.writable) for b in iso.binds}
    # the agent's interpreter and source tree come back at their own paths when a fresh /tmp would hide them
    under_tmp = {(str(p), str(p), False) for p in python_paths() if str(p).startswith("/tmp/")}
    assert binds == {
        (str(launch.rootfs), "/image", False),
        (str(launch.rootfs / "var/lib/edgewise/models"), "/var/lib/edgewise/models", False),
        (str(launch.data_dir), "/var/lib/edgewise/data", True),
        (str(launch.admin_dir), str(launch.admin_dir), True),
        *under_tmp,
    }
    assert iso.config_file == str(launch.rootfs / "etc/edgewise/module.json")
    assert spec.roots == roots and ForkSpec.from_json(fork.to_json()) == fork

    launcher = sandbox.launcher_command(spec, control_fd=7)
    assert launcher.argv[:4] == ["bwrap", "--args", ARGS_FD, "--"] and "--control-fd" in launcher.argv
    layout = launcher.fd_args
    for root in roots:
        assert ["--bind", str(root.path), str(root.path)] == layout[layout.index(str(root.path)) - 1 :][:3]
    assert "--unshare-pid" not in layout and "--cap-drop" not in layout  # each module makes and drops its own
    assert str(tmp_path) not in " ".join(launcher.argv)  # the layout stays off the command line


def test_a_bubblewrap_fork_needs_its_folders_in_the_roots(make_launch: LaunchFactory, tmp_path: Path) -> None:
    launch = make_launch()
    sandbox = BubblewrapSandbox(executable="bwrap")
    assert sandbox.fork_plan(launch, roots=(RootDir(path=tmp_path, writable=True),)) is None  # admin dir outside
    assert sandbox.fork_plan(launch, roots=()) is None
    python = Path(os.__file__).parent
    assert sandbox.fork_plan(launch, roots=(RootDir(path=python, writable=False),)) is None  # would hide Python
    bad = make_launch(2)
    (bad.rootfs / "var/lib/edgewise/models").rename(bad.rootfs / "elsewhere")
    with pytest.raises(ModuleError, match="no model repository"):
        sandbox.fork_plan(bad, roots=(RootDir(path=tmp_path, writable=True),))


def test_start_slots_take_turns() -> None:
    slots = StartSlots(size=1, hold=60.0)
    order: list[str] = []

    async def job(name: str, gate: asyncio.Event) -> None:
        async with slots.slot():
            order.append(f"{name} in")
            await gate.wait()
            order.append(f"{name} out")

    async def main() -> None:
        first, second = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(job("a", first))
        b = asyncio.create_task(job("b", second))
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == ["a in"]
        first.set()
        second.set()
        await asyncio.gather(a, b)

    asyncio.run(main())
    assert order == ["a in", "a out", "b in", "b out"]


def test_a_start_that_holds_a_slot_takes_no_second_one_for_its_inner_steps() -> None:
    """The executor holds a slot around a whole start, and the verified start inside asks again: that must
    not wait for a second slot (with one slot it would wait forever), nor give the first one back early."""
    slots = StartSlots(size=1, hold=60.0)
    order: list[str] = []

    async def start(name: str) -> None:
        async with slots.slot():
            order.append(f"{name} in")
            async with slots.slot():
                await asyncio.sleep(0)
                order.append(f"{name} inner")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(start("a"), start("b")), timeout=30)

    asyncio.run(main())
    assert order == ["a in", "a inner", "a out", "b in", "b inner", "b out"]


def test_a_slot_held_too_long_is_passed_on_and_a_cancelled_wait_loses_nothing() -> None:
    slots = StartSlots(size=1, hold=0.05)

    async def main() -> None:
        slow, inside = asyncio.Event(), asyncio.Event()

        async def hold_forever() -> None:
            async with slots.slot():
                await slow.wait()

        async def enter() -> None:
            async with slots.slot():
                inside.set()

        holder = asyncio.create_task(hold_forever())
        await asyncio.sleep(0)
        waiting = asyncio.create_task(enter())
        await asyncio.wait_for(inside.wait(), timeout=30)  # the slow start's slot was passed on
        await waiting
        gone = asyncio.create_task(enter())
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        slow.set()
        await holder
        inside.clear()
        await asyncio.wait_for(enter(), timeout=30)
        assert inside.is_set()

    asyncio.run(main())


def test_start_slots_are_shared_by_event_loops_of_several_threads() -> None:
    slots = StartSlots(size=1, hold=60.0)
    inside = 0
    most = 0
    lock = threading.Lock()

    async def job() -> None:
        nonlocal inside, most
        async with slots.slot():
            with lock:
                inside += 1
                most = max(most, inside)
            await asyncio.sleep(0.01)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=lambda: asyncio.run(asyncio.wait_for(job(), 60))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert most == 1 and inside == 0


def test_a_pool_forks_only_what_it_can_fork_safely(make_launch: LaunchFactory) -> None:
    pool = LauncherPool()
    assert pool.plan(PlainSandbox(), make_launch()) is not None
    assert pool.plan(PlainSandbox(), make_launch(2, env={"ORT_DISABLE_TELEMETRY": "0"})) is None
    pool.close()
    assert pool.plan(PlainSandbox(), make_launch(3)) is None
    assert LauncherSpec.of(sandbox="none", env={"HOME": "/x", "B": "2", "A": "1"}).env == (("A", "1"), ("B", "2"))


def test_modules_get_the_compiled_grpc_transport_instead_of_compiling_it(
    make_launch: LaunchFactory, tmp_path: Path
) -> None:
    from edgewise.runtime.agent.drivers.base import TRANSPORT_LIBRARY_ENV
    from edgewise.runtime.scoring.h2grpc import native

    require_native_grpc()
    assert TRANSPORT_LIBRARY_ENV == native.LIBRARY_ENV
    library = native.load().library
    launch = make_launch()
    assert PlainSandbox().command(launch).env[TRANSPORT_LIBRARY_ENV] == str(library)
    argv = BubblewrapSandbox(executable="bwrap").command(launch).argv
    binds = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--ro-bind", str(library), str(library)) in binds  # a sandboxed module can read it at that path
    spec = LauncherSpec.of(sandbox="bubblewrap", env={}, roots=(RootDir(path=tmp_path, writable=True),))
    layout = BubblewrapSandbox(executable="bwrap").launcher_command(spec, control_fd=3).fd_args
    assert ("--ro-bind", str(library), str(library)) in list(zip(layout, layout[1:], layout[2:], strict=False))

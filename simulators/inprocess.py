"""Many devices in one process: one `Agent` (the daemon's composition root) per device, on a few event loops.

Each agent is built from its own `AgentConfig` and state folder and runs its real link, reconciler,
supervisor and telemetry loops; only the interpreter, an event loop thread (one per dozen devices, at most
eight: a real device's agent has a loop of its own, and a single loop for a hundred agents would serialise
the file writes each of them waits for) and the module launcher are shared (one
launcher forks the modules of every device, as on a gateway hosting many device identities; its sandbox shows
the fleet's work folder, and each module still sees only its own folders). The agents' threads share one CPU
by default (`DeviceSettings.agent_cpus`): they take turns at the interpreter lock anyway, and on two CPUs each
hand-over is a cross-CPU wake-up (the agents took a quarter to a half more CPU time in `bench/fleet.py`); the launcher
and the modules run on every CPU (see `edgewise.runtime.agent.cpus`). Image caches are not shared,
because an agent keeps its images inside its own state folder. Stopping a device is the daemon's
clean stop (a last report, then "offline"); to take a device off the network use its link proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from dataclasses import dataclass, field, replace

from edgewise.runtime.agent.config import AgentConfig, parse_connection_string
from edgewise.runtime.agent.daemon import Agent
from edgewise.runtime.agent.drivers.forking import RootDir
from edgewise.runtime.agent.launcher import LauncherPool
from edgewise.runtime.agent.state import private_sockets_dir
from edgewise.simulators._loop import LoopThread
from edgewise.simulators.fleet import Fleet

log = logging.getLogger("edgewise.simulators.fleet")
STOP_TIMEOUT = 30.0
DEVICES_PER_LOOP = 12
MAX_LOOPS = 8
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident memory of this process, from /proc/self/statm."""
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * _PAGE


def agent_cpus(count: int) -> frozenset[int] | None:
    """The last `count` of the CPUs this process may use, for the agents' threads (None: no narrowing)."""
    allowed = sorted(os.sched_getaffinity(0))
    if count <= 0 or count >= len(allowed):
        return None
    return frozenset(allowed[-count:])


@dataclass
class _Member:
    agent: Agent
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class InProcessFleet(Fleet):
    """Agents of every device on a few event loop threads (each with an executor big enough for its links)."""

    def _prepare(self) -> None:
        count = max(1, min(MAX_LOOPS, math.ceil(len(self.devices) / DEVICES_PER_LOOP)))
        per_loop = math.ceil(len(self.devices) / count)
        # Each link hands its blocking connect and teardown to the default executor; a real device has one
        # of its own, so a shared one gets a few threads per device rather than the usual handful.
        cpus = agent_cpus(self.settings.agent_cpus)
        self.loops = [
            LoopThread(name=f"fleet-agents-{i}", workers=max(8, 2 * per_loop + 4), cpus=cpus) for i in range(count)
        ]
        self._loop_of = {d.device_id: self.loops[i % count] for i, d in enumerate(self.devices)}
        self.launchers: LauncherPool | None = None
        if self.settings.launcher:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            roots = (
                RootDir(path=self.work_dir.absolute(), writable=True),
                RootDir(path=private_sockets_dir(self.settings.runtime_dir), writable=True),
            )
            self.launchers = LauncherPool(
                roots=roots, idle_timeout=self.settings.launcher_idle, start_slots=self.settings.start_slots or None
            )
        self._members: dict[str, _Member] = {}
        self.failures: dict[str, BaseException] = {}  # device → the error its agent stopped with

    def agent(self, device_id: str) -> Agent:
        """The device's running `Agent` (read-only use: e.g. `agent.link.connected`)."""
        self._check(device_id)
        return self._members[device_id].agent

    def config(self, device_id: str) -> AgentConfig:
        return AgentConfig(
            connection=parse_connection_string(self.connection_string(device_id)),
            # one process for every identity, as on a gateway: their links run on the event loops, not a thread each
            settings=replace(self.settings.agent_settings(state_dir=self.state_dir(device_id)), link_thread=False),
        )

    def _start_devices(self) -> None:
        for device_id in self.device_ids:
            self.start_device(device_id)

    def _close_devices(self) -> None:
        if all(loop.loop.is_closed() for loop in self.loops):
            return
        try:
            stopping = []
            for loop in self.loops:
                running = [d for d in self._members if self._loop_of[d] is loop and self.running(d)]
                stopping.append(asyncio.run_coroutine_threadsafe(self._stop_many(running), loop.loop))
            for future in stopping:
                future.result(STOP_TIMEOUT + 30)
        finally:
            for loop in self.loops:
                loop.close()
            if self.launchers is not None:
                self.launchers.close()

    def start_device(self, device_id: str) -> None:
        """Build a fresh `Agent` from the device's config and state folder and run it on the fleet's loop."""
        self._check(device_id)
        if self.running(device_id):
            raise RuntimeError(f"the agent of {device_id} is running already")
        self.state_dir(device_id).mkdir(parents=True, exist_ok=True)
        member = _Member(agent=Agent(config=self.config(device_id), launchers=self.launchers))
        self._members[device_id] = member
        self.failures.pop(device_id, None)
        self._loop_of[device_id].run(self._launch(device_id, member), timeout=30)

    async def _launch(self, device_id: str, member: _Member) -> None:
        member.task = asyncio.create_task(member.agent.run(member.stop), name=f"agent-{device_id}")
        member.task.add_done_callback(lambda task: self._ended(device_id, task))

    def _ended(self, device_id: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            assert error is not None
            self.failures[device_id] = error
            log.error("the agent of %s stopped with an error: %s", device_id, error)

    def stop_device(self, device_id: str) -> None:
        self._check(device_id)
        if self.running(device_id):
            self._loop_of[device_id].run(self._stop_many([device_id]), timeout=STOP_TIMEOUT + 10)

    async def _stop_many(self, ids: list[str]) -> None:
        tasks = []
        for device_id in ids:
            member = self._members[device_id]
            member.stop.set()
            if member.task is not None:
                tasks.append(member.task)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        for task in pending:  # a stop that hangs must not hang the fleet
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*pending, return_exceptions=True)

    def running(self, device_id: str) -> bool:
        self._check(device_id)
        member = self._members.get(device_id)
        return member is not None and member.task is not None and not member.task.done()

    def connected(self) -> list[str]:
        """The devices whose link is up (CONNACK, subscriptions and "online" acknowledged)."""
        return [d for d, m in self._members.items() if self.running(d) and m.agent.link.connected]

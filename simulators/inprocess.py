"""Many devices in one process: one `Agent` (the daemon's composition root) per device on one event loop.

Each agent is built from its own `AgentConfig` and state folder and runs its real link, reconciler,
supervisor and telemetry loops; only the interpreter and the event loop are shared. Image caches are not
shared, because an agent keeps its images inside its own state folder. Stopping a device is the daemon's
clean stop (a last report, then "offline"); to take a device off the network use its link proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field

from edgewise.runtime.agent.config import AgentConfig, parse_connection_string
from edgewise.runtime.agent.daemon import Agent
from edgewise.simulators._loop import LoopThread
from edgewise.simulators.fleet import Fleet

log = logging.getLogger("edgewise.simulators.fleet")
STOP_TIMEOUT = 30.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident memory of this process, from /proc/self/statm."""
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * _PAGE


@dataclass
class _Member:
    agent: Agent
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class InProcessFleet(Fleet):
    """Agents of every device on one event loop thread (with an executor big enough for all their links)."""

    def _prepare(self) -> None:
        # Each link hands its blocking connect and teardown to the default executor; a real device has one
        # of its own, so the shared one gets a few threads per device rather than the usual handful.
        self.loop = LoopThread(name="fleet-agents", workers=max(8, 2 * len(self.devices) + 4))
        self._members: dict[str, _Member] = {}
        self.failures: dict[str, BaseException] = {}  # device → the error its agent stopped with

    def agent(self, device_id: str) -> Agent:
        """The device's running `Agent` (read-only use: e.g. `agent.link.connected`)."""
        self._check(device_id)
        return self._members[device_id].agent

    def config(self, device_id: str) -> AgentConfig:
        return AgentConfig(
            connection=parse_connection_string(self.connection_string(device_id)),
            settings=self.settings.agent_settings(state_dir=self.state_dir(device_id)),
        )

    def _start_devices(self) -> None:
        for device_id in self.device_ids:
            self.start_device(device_id)

    def _close_devices(self) -> None:
        if self.loop.loop.is_closed():
            return
        try:
            running = [d for d in self._members if self.running(d)]
            self.loop.run(self._stop_many(running), timeout=STOP_TIMEOUT + 30)
        finally:
            self.loop.close()

    def start_device(self, device_id: str) -> None:
        """Build a fresh `Agent` from the device's config and state folder and run it on the fleet's loop."""
        self._check(device_id)
        if self.running(device_id):
            raise RuntimeError(f"the agent of {device_id} is running already")
        self.state_dir(device_id).mkdir(parents=True, exist_ok=True)
        member = _Member(agent=Agent(config=self.config(device_id)))
        self._members[device_id] = member
        self.failures.pop(device_id, None)
        self.loop.run(self._launch(device_id, member), timeout=30)

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
            self.loop.run(self._stop_many([device_id]), timeout=STOP_TIMEOUT + 10)

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

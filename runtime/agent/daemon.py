"""The composition root: builds every part of the agent from its config and runs them until a signal.

Start-up order matters: the state directory is read and the modules that still run are adopted, then the
agent converges on the saved manifest at once, whether or not the broker can be reached (the link connects
in the background). On SIGTERM/SIGINT the loops stop, a last report goes out and the link says "offline";
the modules keep running and are adopted at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edgewise.runtime.agent import handover
from edgewise.runtime.agent.config import AgentConfig
from edgewise.runtime.agent.drivers import choose_sandbox
from edgewise.runtime.agent.drivers.forking import RootDir
from edgewise.runtime.agent.executor import Executor
from edgewise.runtime.agent.images import ImageStore, RegistryCredentials
from edgewise.runtime.agent.launcher import LauncherPool
from edgewise.runtime.agent.link.mqtt import Message, MqttLink
from edgewise.runtime.agent.link.reporter import Reporter
from edgewise.runtime.agent.link.topics import DeviceTopics
from edgewise.runtime.agent.methods import Methods
from edgewise.runtime.agent.metrics import AgentMetrics
from edgewise.runtime.agent.model import Manifest, RuntimeStatus, TelemetrySettings
from edgewise.runtime.agent.planner import PlanSettings
from edgewise.runtime.agent.reconciler import Reconciler, utc
from edgewise.runtime.agent.state import StateDir
from edgewise.runtime.agent.supervisor import Supervisor
from edgewise.runtime.agent.telemetry.collect import ModuleTap, TelemetryCollector
from edgewise.runtime.agent.telemetry.sender import TelemetrySender
from edgewise.runtime.agent.telemetry.spool import TelemetrySpool

log = logging.getLogger("edgewise.agent")

REPORT_ON_STOP_TIMEOUT = 5.0


def agent_version() -> str:
    import edgewise

    return edgewise.__version__


@dataclass
class _Telemetry:
    settings: TelemetrySettings


class Agent:
    """All parts of one running agent, wired together."""

    def __init__(self, *, config: AgentConfig, launchers: LauncherPool | None = None) -> None:
        """`launchers`: a pool shared with other agents in this process (which then owns it); by default the
        agent has its own, showing a sandboxed launcher its modules and images folders."""
        connection, settings = config.connection, config.settings
        self.config = config
        self.topics = DeviceTopics(connection.device_id)
        self.state = StateDir(root=settings.state_dir, runtime_dir=settings.runtime_dir)
        self.metrics = AgentMetrics(state_dir=self.state.root)
        self.store = ImageStore(
            root=self.state.images_dir,
            budget_bytes=settings.disk_budget_bytes,
            credentials=RegistryCredentials(
                username=connection.registry_username or connection.device_id,
                password=connection.registry_password or connection.secret,
            ),
            registry_url=connection.registry,
        )
        self.sandbox = choose_sandbox(settings.sandbox)
        self._own_launchers: LauncherPool | None = None
        if launchers is None and settings.launcher:
            roots = (
                RootDir(path=self.state.modules_dir, writable=True),
                RootDir(path=self.state.images_dir, writable=False),
                RootDir(path=self.state.sockets_dir, writable=True),
            )
            launchers = self._own_launchers = LauncherPool(
                roots=roots, idle_timeout=settings.launcher_idle, start_slots=settings.start_slots or None
            )
        self.launchers = launchers if settings.launcher else None
        self.supervisor = Supervisor(sandbox=self.sandbox, stop_grace=settings.stop_grace, launchers=self.launchers)
        defaults = TelemetrySettings()
        self.telemetry = _Telemetry(settings=defaults)
        self.spool = TelemetrySpool(
            path=self.state.telemetry_db, max_bytes=defaults.max_bytes, time_to_live=defaults.time_to_live
        )
        self.link = MqttLink(
            connection=connection,
            settings=settings,
            topics=self.topics,
            subscriptions=[self.topics.desired, self.topics.commands],
        )
        self.sender = TelemetrySender(
            spool=self.spool,
            link=self.link,
            topics=self.topics,
            device_id=connection.device_id,
            batch_max_records=defaults.batch_max_records,
        )
        self.collector = TelemetryCollector(spool=self.spool, state_dir=self.state.root)
        self.reporter = Reporter(link=self.link, topics=self.topics)
        self.executor = Executor(state=self.state, store=self.store, supervisor=self.supervisor, metrics=self.metrics)
        self.reconciler = Reconciler(
            state=self.state,
            executor=self.executor,
            supervisor=self.supervisor,
            store=self.store,
            device_id=connection.device_id,
            public_key=connection.workspace_key,
            agent_info={
                "version": agent_version(),
                "sandbox": self.sandbox.name,
                "startTimeUtc": utc(time.time()),
                "stateDir": str(self.state.root),
            },
            reporter=self.reporter,
            spool=self.spool,
            metrics=self.metrics,
            plan_settings=PlanSettings(cooloff_unit=settings.restart_cooloff),
            on_manifest=self._apply_telemetry_settings,
        )
        self.methods = Methods(control=self.reconciler, state=self.state)
        self._tasks: list[asyncio.Task[None]] = []
        self._replies: set[asyncio.Task[None]] = set()

    def _apply_telemetry_settings(self, manifest: Manifest) -> None:
        t = manifest.telemetry
        self.telemetry.settings = t
        self.spool.configure(max_bytes=t.max_bytes, time_to_live=t.time_to_live)
        self.sender.configure(batch_max_records=t.batch_max_records)

    # -- life cycle -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; the modules are left running."""
        settings = self.config.settings
        if handover.enable_request_migration():
            log.info("TCP request migration is on: connections queued on an old version move to the new one")
        else:
            log.info(
                "TCP request migration is not available (needs net.ipv4.tcp_migrate_req); updates still "
                "hand over, but connections waiting in the old listener's queue may be reset"
            )
        self.reconciler.restore()
        await self.link.start()
        await self.reconciler.reconcile()
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("messages", self._messages),
            ("reconcile", lambda: self.reconciler.run(interval=settings.reconcile_interval)),
            ("health", self._health),
            ("telemetry", self._collect),
            ("sender", self.sender.run),
        ]
        self._tasks = [asyncio.create_task(_guarded(name, factory), name=name) for name, factory in loops]
        try:
            await stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        for task in [*self._tasks, *self._replies]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._replies, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REPORT_ON_STOP_TIMEOUT):
                await self.reporter.report(self.reconciler.reported_state())
        await self.link.stop()
        self.spool.close()
        if self._own_launchers is not None:
            await asyncio.to_thread(self._own_launchers.close)
        log.info("stopped; %d module(s) left running", len(self.reconciler.processes))

    # -- loops ------------------------------------------------------------------------------------

    async def _messages(self) -> None:
        async for message in self.link.messages():
            await self._dispatch(message)

    async def _dispatch(self, message: Message) -> None:
        if message.topic == self.topics.desired:
            if message.payload:
                self.reconciler.offer(message.payload)
            return
        name = self.topics.command_name(message.topic)
        if name is None:
            return
        task = asyncio.create_task(self._answer(name, message.payload), name=f"method-{name}")
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _answer(self, name: str, payload: bytes) -> None:
        answer = await self.methods.handle(name, payload)
        if answer is None:
            return
        try:
            await self.link.publish(self.topics.response(answer.request_id), answer.payload())
        except Exception as exc:  # the caller times out; nothing else to do
            log.warning("could not answer direct method %s (%s): %s", name, answer.request_id, exc)

    async def _health(self) -> None:
        interval = self.config.settings.health_interval
        first = random.uniform(0.0, interval)  # agents started together probe at different times
        await asyncio.sleep(first)
        since = first
        while True:
            if await self.reconciler.check_health(interval=since):
                self.reconciler.trigger()
            await asyncio.sleep(interval)
            since = interval

    async def _collect(self) -> None:
        # the first collection after a random part of the interval: agents started together send apart
        await asyncio.sleep(random.uniform(0.0, self.telemetry.settings.interval or 10.0))
        while True:
            taps = [
                ModuleTap(name=name, admin_dir=process.admin_dir, sample_file=self.state.sample_file(name))
                for name, process in sorted(self.reconciler.processes.items())
                if self.reconciler.records.get(name) is not None
                and self.reconciler.records[name].status == RuntimeStatus.RUNNING
            ]
            if await self.collector.collect_once(taps):
                self.sender.wake()
            await asyncio.sleep(self.telemetry.settings.interval or 10.0)


async def _guarded(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Run a loop forever; an unexpected error is logged and the loop starts again after a pause."""
    while True:
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the %s loop failed; restarting it", name)
            await asyncio.sleep(1.0)


async def serve(config: AgentConfig) -> None:
    """Build the agent, announce it, run it until SIGTERM or SIGINT."""
    agent = Agent(config=config)
    settings = config.settings
    print(
        f"edgewise-agent {config.connection.device_id}: state {agent.state.root}, sandbox {agent.sandbox.name}, "
        f"broker {config.connection.broker_url}",
        file=sys.stderr,
        flush=True,
    )
    if settings.metrics_port is not None:
        port = agent.metrics.serve(host=settings.metrics_host, port=settings.metrics_port)
        print(f"edgewise-agent metrics on http://{settings.metrics_host}:{port}/metrics", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        agent.metrics.close()

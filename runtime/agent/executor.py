"""Run a plan: every command is tried, a failure is recorded against its module and the next one runs.

The executor is the only place that changes module records: each change is queued for saving at once and
is on disk before the next process is started or stopped, and before the run returns, so a crash in the
middle of a plan leaves records that describe exactly what runs (the writes themselves happen on a worker
thread, off the event loop). Images are pulled (in a worker thread: pulls block; a cached one is just looked
up) before anything starts; a module whose image could not be pulled is left as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

from edgewise.runtime.agent import handover, restart
from edgewise.runtime.agent.commands import (
    Command,
    MarkModule,
    PullImage,
    RemoveModule,
    ResetRestartCount,
    StartModule,
    StopModule,
    UpdateModule,
)
from edgewise.runtime.agent.drivers.base import LaunchSpec
from edgewise.runtime.agent.errors import AgentError, ImageError, RegistryUnavailableError
from edgewise.runtime.agent.images import ImageStore, UnpackedImage, parse_reference
from edgewise.runtime.agent.metrics import AgentMetrics
from edgewise.runtime.agent.model import ModuleSpec, RuntimeStatus
from edgewise.runtime.agent.state import ModuleRecord, Rollback, StateDir, same_deployment, spec_document
from edgewise.runtime.agent.supervisor import ModuleProcess, Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one command did to one module."""

    module: str
    step: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class _PullFailure:
    transient: bool
    message: str


class Executor:
    """Runs commands against the supervisor, the image store and the state directory."""

    def __init__(
        self,
        *,
        state: StateDir,
        store: ImageStore,
        supervisor: Supervisor,
        metrics: AgentMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._store = store
        self._supervisor = supervisor
        self._metrics = metrics
        self._clock = clock

    async def run(
        self,
        commands: Sequence[Command],
        *,
        records: MutableMapping[str, ModuleRecord],
        processes: MutableMapping[str, ModuleProcess],
        sample_rate: float = 0.0,
    ) -> list[Outcome]:
        """Run `commands` in order, updating `records` and `processes` in place; never raises for one module."""
        pulls = [c for c in commands if isinstance(c, PullImage)]
        others = [c for c in commands if not isinstance(c, PullImage)]
        images: dict[str, UnpackedImage] = {}
        failed: dict[str, _PullFailure] = {}
        outcomes: list[Outcome] = []
        for pull in pulls:
            outcomes.append(await self._pull(pull, images, failed))
        run = _Run(self, records, processes, images, failed, sample_rate)
        for command in others:
            log.info("%s", command.describe())
            try:
                detail = await run.execute(command)
            except Exception as exc:  # one module's trouble must not stop the others
                if not isinstance(exc, (AgentError, OSError)):
                    log.exception("%s failed unexpectedly", command.describe())
                else:
                    log.warning("%s failed: %s", command.describe(), exc)
                outcomes.append(Outcome(module=command.module, step=command.describe(), ok=False, detail=str(exc)))
                continue
            ok = detail is None
            outcomes.append(Outcome(module=command.module, step=command.describe(), ok=ok, detail=detail or ""))
        failure = await self._state.saved_or_error()
        if failure is not None:
            modules = sorted({c.module for c in others})
            outcomes.extend(Outcome(module=m, step="save its record", ok=False, detail=str(failure)) for m in modules)
        return outcomes

    async def _pull(
        self, pull: PullImage, images: dict[str, UnpackedImage], failed: dict[str, _PullFailure]
    ) -> Outcome:
        step = pull.describe()
        cached = self._cached(pull.image)
        if cached is not None:  # the usual case, found by reading one small file: no worker thread for it
            images[pull.image] = cached
            return Outcome(module=pull.module, step=step, ok=True)
        try:
            images[pull.image] = await asyncio.to_thread(self._store.ensure, pull.image)
        except RegistryUnavailableError as exc:
            failed[pull.module] = _PullFailure(transient=True, message=f"waiting for the registry: {exc}")
        except ImageError as exc:
            failed[pull.module] = _PullFailure(transient=False, message=f"image {pull.image} unusable: {exc}")
        except OSError as exc:
            failed[pull.module] = _PullFailure(transient=True, message=f"image {pull.image}: {exc}")
        if pull.module in failed:
            log.warning("%s failed: %s", step, failed[pull.module].message)
            return Outcome(module=pull.module, step=step, ok=False, detail=failed[pull.module].message)
        return Outcome(module=pull.module, step=step, ok=True)

    def _cached(self, image: str) -> UnpackedImage | None:
        try:
            return self._store.cached(parse_reference(image).digest)
        except ImageError:  # `ensure` says what is wrong with the reference
            return None


class _Run:
    """The mutable context of one plan run."""

    def __init__(
        self,
        executor: Executor,
        records: MutableMapping[str, ModuleRecord],
        processes: MutableMapping[str, ModuleProcess],
        images: dict[str, UnpackedImage],
        failed: dict[str, _PullFailure],
        sample_rate: float,
    ) -> None:
        self.x = executor
        self.records = records
        self.processes = processes
        self.images = images
        self.failed = failed
        self.sample_rate = sample_rate

    def record(self, name: str) -> ModuleRecord:
        return self.records.get(name) or ModuleRecord(name=name)

    def save(self, record: ModuleRecord) -> None:
        self.records[record.name] = record
        self.x._state.queue_record(record)

    async def settle(self) -> None:
        """Wait until every record saved so far is on disk: called before a process is started or stopped."""
        await self.x._state.saved()

    def count(self, counter: str, module: str) -> None:
        if self.x._metrics is not None:
            getattr(self.x._metrics, counter).labels(module=module).inc()

    async def execute(self, command: Command) -> str | None:
        """Run one command; returns None on success or why it did not succeed."""
        if isinstance(command, StartModule):
            return await self.start(command)
        if isinstance(command, UpdateModule):
            return await self.update(command)
        if isinstance(command, StopModule):
            await self.stop(command)
        elif isinstance(command, RemoveModule):
            await self.remove(command.module)
        elif isinstance(command, MarkModule):
            self.mark(command)
        elif isinstance(command, ResetRestartCount):
            self.save(self.record(command.module).with_changes(restart_count=0))
        return None

    async def image(self, spec: ModuleSpec) -> UnpackedImage:
        found = self.images.get(spec.image) or self.x._store.cached(spec.digest)
        if found is None:
            found = await asyncio.to_thread(self.x._store.ensure, spec.image)
        return found

    def launch(self, spec: ModuleSpec, generation: int, image: UnpackedImage) -> LaunchSpec:
        state = self.x._state
        return LaunchSpec(
            module=spec.name,
            generation=generation,
            rootfs=image.rootfs,
            image_config=image.config,
            settings=spec.settings,
            env=spec.env,
            data_dir=state.data_dir(spec.name),
            admin_dir=state.new_admin_dir(spec.name, generation),
            log_path=state.log_path(spec.name),
            sample_file=state.sample_file(spec.name),
            sample_rate=self.sample_rate,
            module_type=spec.type.value,
        )

    async def start(self, command: StartModule) -> str | None:
        name, spec = command.module, command.spec
        record = self.record(name)
        document = spec_document(spec)
        pull = self.failed.get(name)
        if pull is not None:
            if name in self.processes:
                self.save(record.with_changes(description=pull.message))
            elif pull.transient:
                self.save(
                    record.with_changes(
                        status=RuntimeStatus.BACKOFF,
                        description=pull.message,
                        manifest_version=command.manifest_version,
                    )
                )
            else:
                self.count("module_failures", name)
                self.save(
                    record.with_changes(
                        status=RuntimeStatus.FAILED,
                        description=pull.message,
                        spec=document,
                        image=spec.image,
                        digest=spec.digest,
                        manifest_version=command.manifest_version,
                    )
                )
            return pull.message
        image = await self.image(spec)
        old = self.processes.get(name)
        if command.stop_first and old is not None:
            await self.settle()
            await self.x._supervisor.stop(old)
            self.processes.pop(name, None)
            self.count("module_stops", name)
        # the rest of a start takes its turn with the other modules starting (see `slots.StartSlots`)
        async with self.x._supervisor.start_slot():
            restarts = (0 if command.fresh else record.restart_count) + (1 if command.restart else 0)
            rollback = record.rollback if same_deployment(record.spec, document) else None
            generation = record.generation + 1
            self.save(record.with_changes(generation=generation, manifest_version=command.manifest_version))
            await self.settle()  # a generation is never used twice, even after a crash
            record = self.record(name)
            launch = self.launch(spec, generation, image)
            if command.restart:
                self.count("module_restarts", name)
            try:
                process = await handover.start_verified(supervisor=self.x._supervisor, launch=launch)
            except AgentError as exc:
                now = self.x._clock()
                self.count("module_failures", name)
                decision = restart.after_failed_start(spec.restart_policy, exc)
                self.save(
                    record.with_changes(
                        status=RuntimeStatus.FAILED if decision.action == restart.STOP else RuntimeStatus.BACKOFF,
                        pid=None,
                        start_ticks=None,
                        started_at=None,
                        spec=document,
                        image=spec.image,
                        digest=image.digest,
                        restart_count=restarts,
                        last_start=now,
                        last_exit=now,
                        exit_code=None,
                        description=decision.reason,
                        rollback=rollback,
                    )
                )
                self.x._state.clean_admin_dirs(name, keep=())
                return str(exc)
            self.processes[name] = process
            self.count("module_starts", name)
            self.save(self._running(record, spec, image, process, restarts=restarts, rollback=rollback))
            if generation > 1:  # a first generation has no earlier ones (a removed module's folder went with it)
                self.x._state.clean_admin_dirs(name, keep={process.generation})
            return None

    async def update(self, command: UpdateModule) -> str | None:
        name, spec = command.module, command.spec
        record = self.record(name)
        pull = self.failed.get(name)
        if pull is not None:
            if pull.transient:
                self.save(record.with_changes(description=pull.message))
            else:
                self.count("module_failures", name)
                self.save(
                    record.with_changes(
                        description=f"kept {record.digest}: {pull.message}",
                        rollback=Rollback(
                            from_digest=spec.digest, reason=pull.message, manifest_version=command.manifest_version
                        ),
                    )
                )
            return pull.message
        image = await self.image(spec)
        generation = record.generation + 1
        self.save(record.with_changes(generation=generation))
        await self.settle()
        record = self.record(name)
        launch = self.launch(spec, generation, image)
        old = self.processes.get(name)
        try:
            process = await handover.replace(supervisor=self.x._supervisor, old=old, launch=launch)
        except AgentError as exc:
            self.count("module_failures", name)
            reason = str(exc)
            self.save(
                record.with_changes(
                    description=f"kept {record.digest}: the new version failed: {reason}",
                    manifest_version=command.manifest_version,
                    rollback=Rollback(
                        from_digest=image.digest, reason=reason, manifest_version=command.manifest_version
                    ),
                )
            )
            self.x._state.clean_admin_dirs(name, keep={old.generation} if old is not None else ())
            return reason
        self.processes[name] = process
        self.count("module_starts", name)
        if old is not None:
            self.count("module_stops", name)
        self.save(
            self._running(
                record.with_changes(manifest_version=command.manifest_version),
                spec,
                image,
                process,
                restarts=0,
                rollback=None,
            )
        )
        self.x._state.clean_admin_dirs(name, keep={process.generation})
        return None

    def _running(
        self,
        record: ModuleRecord,
        spec: ModuleSpec,
        image: UnpackedImage,
        process: ModuleProcess,
        *,
        restarts: int,
        rollback: Rollback | None,
    ) -> ModuleRecord:
        return record.with_changes(
            status=RuntimeStatus.RUNNING,
            pid=process.pid,
            start_ticks=process.start_ticks,
            started_at=process.started_at,
            generation=process.generation,
            spec=spec_document(spec),
            image=spec.image,
            digest=image.digest,
            restart_count=restarts,
            last_start=process.started_at,
            exit_code=None,
            description="running",
            rollback=rollback,
        )

    async def stop(self, command: StopModule) -> None:
        name = command.module
        process = self.processes.pop(name, None)
        code: int | None = None
        if process is not None:
            await self.settle()
            code = await self.x._supervisor.stop(process)
            self.count("module_stops", name)
        if command.failure:
            self.count("module_failures", name)
        record = self.record(name)
        self.save(
            record.with_changes(
                status=command.status,
                pid=None,
                start_ticks=None,
                started_at=None,
                exit_code=code,
                last_exit=self.x._clock() if process is not None else record.last_exit,
                description=command.reason,
                manifest_version=command.manifest_version,
            )
        )
        self.x._state.clean_admin_dirs(name, keep=())

    async def remove(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            await self.settle()
            await self.x._supervisor.stop(process)
            self.count("module_stops", name)
        self.records.pop(name, None)
        self.x._state.queue_module_removal(name)
        if self.x._metrics is not None:
            self.x._metrics.forget_module(name)

    def mark(self, command: MarkModule) -> None:
        name = command.module
        record = self.record(name).with_changes(
            status=command.status, description=command.description, manifest_version=command.manifest_version
        )
        if command.exited:
            self.processes.pop(name, None)
            record = record.with_changes(
                pid=None, start_ticks=None, started_at=None, last_exit=self.x._clock(), exit_code=command.exit_code
            )
            self.x._state.clean_admin_dirs(name, keep=())
        if command.failure:
            self.count("module_failures", name)
        self.save(record)

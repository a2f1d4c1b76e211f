"""One locked pass: read the desired manifest, observe the modules, plan, execute, save, report.

Passes are triggered by a new accepted manifest, a module exit or failed liveness probes, a restart
request and a timer; they never overlap (an asyncio.Lock), and each reads desired and observed state
afresh so that one failure cannot hide the other. The pass always ends with a report; the reporter
publishes it only when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from edgewise.runtime.agent import health
from edgewise.runtime.agent.errors import AgentError, ManifestError
from edgewise.runtime.agent.executor import Executor
from edgewise.runtime.agent.images import ImageStore
from edgewise.runtime.agent.link.reporter import Reporter
from edgewise.runtime.agent.manifest import parse_manifest
from edgewise.runtime.agent.metrics import AgentMetrics
from edgewise.runtime.agent.model import DesiredStatus, DesiredStatusCode, Manifest, RuntimeStatus
from edgewise.runtime.agent.planner import Observed, PlanSettings, plan
from edgewise.runtime.agent.signing import PublicKey
from edgewise.runtime.agent.state import ModuleRecord, StateDir, same_deployment, spec_document
from edgewise.runtime.agent.supervisor import ModuleProcess, Supervisor
from edgewise.runtime.agent.telemetry.spool import TelemetrySpool

log = logging.getLogger(__name__)

UNHEALTHY_AFTER = 3  # consecutive failed liveness probes before a running module counts as unhealthy


def utc(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Reconciler:
    """Owns the accepted manifest, the module records and the processes the agent supervises."""

    def __init__(
        self,
        *,
        state: StateDir,
        executor: Executor,
        supervisor: Supervisor,
        store: ImageStore | None,
        device_id: str,
        public_key: PublicKey,
        agent_info: Mapping[str, Any],
        reporter: Reporter | None = None,
        spool: TelemetrySpool | None = None,
        metrics: AgentMetrics | None = None,
        plan_settings: PlanSettings | None = None,
        on_manifest: Callable[[Manifest], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._executor = executor
        self._supervisor = supervisor
        self._store = store
        self._device_id = device_id
        self._public_key = public_key
        self._agent_info = dict(agent_info)
        self._reporter = reporter
        self._spool = spool
        self._metrics = metrics
        self._plan_settings = plan_settings or PlanSettings()
        self._on_manifest = on_manifest
        self._clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.accepted: Manifest | None = None
        self.rejected: dict[str, Any] | None = None
        self.records: dict[str, ModuleRecord] = {}
        self.processes: dict[str, ModuleProcess] = {}
        self._exit_codes: dict[str, int | None] = {}
        self._probe_failures: dict[str, tuple[int, int]] = {}  # module -> (pid, consecutive failures)
        self._restart_requests: set[str] = set()
        self._accepted_at: float | None = None
        # the images of the manifest accepted before the current one stay cached: a rollback, or a deployment
        # that comes back, then starts without a pull
        self._previous_digests: set[str] = set()
        self._last_seen: dict[str, float] = {}

    # -- start-up ---------------------------------------------------------------------------------

    def restore(self) -> None:
        """Read the state directory: re-verify the manifest, load records, adopt processes still running."""
        self.accepted = self._state.load_manifest(device_id=self._device_id, public_key=self._public_key)
        if self.accepted is not None:
            log.info("converging on the saved manifest version %d", self.accepted.version)
            if self._on_manifest is not None:
                self._on_manifest(self.accepted)
        self.records = self._state.load_records()
        for name, record in self.records.items():
            if record.pid is None or record.start_ticks is None or record.started_at is None:
                continue
            process = self._supervisor.adopt(
                pid=record.pid,
                start_ticks=record.start_ticks,
                started_at=record.started_at,
                generation=record.generation,
                admin_dir=self._state.admin_dir(name, record.generation),
            )
            if process is None:
                log.info("module %s (pid %d) is no longer running", name, record.pid)
                self._exit_codes[name] = None
            else:
                log.info("adopted module %s (pid %d)", name, process.pid)
                self.processes[name] = process
        for name in self.records:
            running = self.processes.get(name)
            self._state.clean_admin_dirs(name, keep={running.generation} if running is not None else ())

    # -- desired state ----------------------------------------------------------------------------

    def offer(self, payload: bytes) -> Manifest | None:
        """Accept a desired-manifest message (saved before it is applied) or record why it is refused."""
        last = self.accepted.version if self.accepted is not None else None
        try:
            manifest = parse_manifest(
                payload, device_id=self._device_id, public_key=self._public_key, last_version=last
            )
        except ManifestError as exc:
            document = _document_of(payload)
            version = _version_of(document)
            if exc.code == "stale" and self.accepted is not None and document == dict(self.accepted.raw):
                log.debug("manifest version %s is the one applied; nothing to do", version)
                return None
            log.warning(
                "refused manifest%s: %s (%s)", f" version {version}" if version is not None else "", exc, exc.code
            )
            self.rejected = {"version": version, "code": exc.code, "description": str(exc), "atUtc": utc(self._clock())}
            self.trigger()
            return None
        self._state.queue_manifest(payload)  # on disk before anything is started or stopped for it
        if self.accepted is not None:
            self._previous_digests = {spec.digest for spec in self.accepted.modules.values()}
        self.accepted = manifest
        self.rejected = None
        self._accepted_at = self._clock()
        log.info("accepted manifest version %d (%d modules)", manifest.version, len(manifest.modules))
        if self._on_manifest is not None:
            self._on_manifest(manifest)
        self.trigger()
        return manifest

    # -- passes -----------------------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for a pass as soon as possible (coalesced with any already asked for)."""
        self._wake.set()

    async def run(self, *, interval: float) -> None:
        """Forever: a pass when triggered, or every `interval` seconds (the first timed one after a random part
        of it: agents started together, on a gateway or after a power cut, then do not all pass at once)."""
        timeout = random.uniform(0.0, interval)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            timeout = interval
            self._wake.clear()
            await self.reconcile()

    async def reconcile(self) -> dict[str, Any]:
        """One pass; returns the reported state it produced."""
        async with self._lock:
            desired = self.accepted
            observed = await self._observe()
            commands = plan(desired=desired, observed=observed, now=self._clock(), settings=self._plan_settings)
            for name in self._restart_requests & set(observed):
                self._restart_requests.discard(name)
            if commands:
                sample_rate = desired.telemetry.sample_rate if desired is not None else 0.0
                outcomes = await self._executor.run(
                    commands, records=self.records, processes=self.processes, sample_rate=sample_rate
                )
                failed = [o for o in outcomes if not o.ok]
                if failed:
                    log.warning(
                        "%d of %d steps failed: %s",
                        len(failed),
                        len(outcomes),
                        "; ".join(f"{o.module}: {o.detail}" for o in failed),
                    )
                for name in [n for n in self._exit_codes if n not in self.processes]:
                    self._exit_codes.pop(name, None)
                await self._collect_garbage()
            await self._state.saved_or_error()  # what the report says is on disk first; it is sent either way
            self._observe_deployment()
            report = self.reported_state()
        if self._metrics is not None and self._spool is not None:
            telemetry = report["telemetry"]
            self._metrics.observe_telemetry(
                last_sequence=telemetry["lastSequence"], pending=telemetry["spooled"], dropped=telemetry["dropped"]
            )
        if self._reporter is not None:
            await self._reporter.report(report)
        return report

    async def _observe(self) -> dict[str, Observed]:
        observed: dict[str, Observed] = {}
        for name, record in self.records.items():
            process = self.processes.get(name)
            exit_code = self._exit_codes.get(name)
            alive = False
            if process is not None:
                exited, code = self._supervisor.exit_status(process)
                if exited:
                    # The recorded process is gone, but helpers in its sandbox may still hold its ports.
                    try:
                        await self._supervisor.stop(process)
                    except AgentError as exc:
                        log.warning("could not clean up after module %s: %s", name, exc)
                    self.processes.pop(name, None)
                    exit_code = code
                else:
                    alive = True
            failures = self._probe_failures.get(name)
            unhealthy = (
                alive
                and process is not None
                and failures is not None
                and failures[0] == process.pid
                and failures[1] >= UNHEALTHY_AFTER
            )
            if unhealthy:
                self._probe_failures.pop(name, None)
            observed[name] = Observed(
                record=record,
                alive=alive,
                exit_code=exit_code,
                unhealthy=unhealthy,
                restart_requested=name in self._restart_requests,
            )
        return observed

    async def _collect_garbage(self) -> None:
        if self._store is None:
            return
        keep = {record.digest for record in self.records.values() if record.digest} | self._previous_digests
        if self.accepted is not None:
            keep |= {spec.digest for spec in self.accepted.modules.values()}
        if self._store.is_clean(keep=keep):  # the usual pass: nothing to collect, no worker thread needed
            return
        try:
            freed = await asyncio.to_thread(self._store.collect_garbage, keep=keep)
        except OSError as exc:
            log.warning("image garbage collection failed: %s", exc)
            return
        if freed:
            log.info("freed %d bytes of unused images", freed)

    def _observe_deployment(self) -> None:
        if self._accepted_at is None or self._metrics is None:
            return
        if self.apply_status()["code"] != DesiredStatusCode.APPLYING:
            self._metrics.deployment_seconds.observe(max(0.0, self._clock() - self._accepted_at))
            self._accepted_at = None

    # -- health -----------------------------------------------------------------------------------

    async def check_health(self, *, interval: float) -> bool:
        """Poll exits and liveness; True when a pass should run (a module exited or became unhealthy).

        A module that started within the last interval is not probed yet: its start proved it live and ready
        (and warm) a moment ago, and a deployment to many devices should not pay for every check twice.
        """
        needed = False
        now = self._clock()
        for name, process in list(self.processes.items()):
            exited, code = self._supervisor.exit_status(process)
            if exited:
                log.info("module %s (pid %d) exited with %s", name, process.pid, code)
                self._exit_codes[name] = code
                needed = True
                continue
            if 0.0 <= now - process.started_at < interval and name not in self._probe_failures:
                result = health.Probe(live=True, ready=True, detail="started within the last interval")
            else:
                result = await health.probe(process.admin_dir)
            pid, failures = self._probe_failures.get(name, (process.pid, 0))
            if pid != process.pid:
                failures = 0
            if result.live:
                self._probe_failures.pop(name, None)
                if self._metrics is not None and self._is_running(name):
                    self._metrics.module_running_seconds.labels(module=name).inc(interval)
            else:
                failures += 1
                self._probe_failures[name] = (process.pid, failures)
                log.info("module %s is not live (%d/%d): %s", name, failures, UNHEALTHY_AFTER, result.detail)
                if failures >= UNHEALTHY_AFTER:
                    needed = True
        return needed

    def _is_running(self, name: str) -> bool:
        record = self.records.get(name)
        return record is not None and record.status == RuntimeStatus.RUNNING

    # -- direct-method helpers --------------------------------------------------------------------

    def knows(self, module: str) -> bool:
        return module in self.records or (self.accepted is not None and module in self.accepted.modules)

    async def restart_module(self, module: str) -> ModuleRecord | None:
        """Start a new process of `module` now (a manual restart also clears a `failed` state)."""
        self._restart_requests.add(module)
        await self.reconcile()
        return self.records.get(module)

    # -- reported state ---------------------------------------------------------------------------

    def desired_status(self) -> dict[str, Any]:
        """`lastDesiredStatus`: 400 while the latest manifest received was refused, else how far the applied got."""
        if self.rejected is not None:
            version = self.rejected["version"]
            what = f"manifest version {version}" if version is not None else "a manifest"
            return {
                "code": int(DesiredStatusCode.REJECTED),
                "description": f"refused {what} ({self.rejected['code']}): {self.rejected['description']}",
            }
        return self.apply_status()

    def apply_status(self) -> dict[str, Any]:
        """How far the accepted manifest is applied (200, 202, 409 or 500)."""
        accepted = self.accepted
        if accepted is None:
            return {"code": int(DesiredStatusCode.OK), "description": "no manifest accepted yet"}
        pending: list[str] = []
        kept: list[str] = []
        failed: list[str] = []
        running = 0
        for name, spec in sorted(accepted.modules.items()):
            if spec.status != DesiredStatus.RUNNING:
                continue
            running += 1
            record = self.records.get(name)
            if record is None:
                pending.append(name)
            elif record.rollback is not None and record.rollback.manifest_version >= accepted.version:
                kept.append(name)
            elif not same_deployment(record.spec, spec_document(spec)):
                pending.append(name)
            elif record.status == RuntimeStatus.FAILED:
                failed.append(name)
            elif record.status == RuntimeStatus.UNKNOWN:
                pending.append(name)
        if failed and len(failed) == running:
            return {"code": int(DesiredStatusCode.FAILED), "description": f"not applied: {', '.join(failed)} failed"}
        if kept or failed:
            parts = ([f"kept previous version of {', '.join(kept)}"] if kept else []) + (
                [f"{', '.join(failed)} failed"] if failed else []
            )
            return {"code": int(DesiredStatusCode.PARTIAL), "description": "applied except: " + "; ".join(parts)}
        if pending:
            return {"code": int(DesiredStatusCode.APPLYING), "description": f"applying: {', '.join(pending)}"}
        return {"code": int(DesiredStatusCode.OK), "description": "applied"}

    def reported_state(self) -> dict[str, Any]:
        """The reported state, in the shape of docs/agent.md."""
        modules = {name: self._module_report(record) for name, record in sorted(self.records.items())}
        telemetry: dict[str, Any] = {"lastSequence": 0, "spooled": 0, "dropped": {"ttl": 0, "maxBytes": 0}}
        if self._spool is not None:
            telemetry = {
                "lastSequence": self._spool.last_sequence(),
                "spooled": self._spool.pending_count(),
                "dropped": self._spool.dropped(),
            }
        return {
            "lastDesiredVersion": self.accepted.version if self.accepted is not None else None,
            "lastDesiredStatus": self.desired_status(),
            "rejected": self.rejected,
            "agent": dict(self._agent_info),
            "modules": modules,
            "telemetry": telemetry,
        }

    @staticmethod
    def _module_report(record: ModuleRecord) -> dict[str, Any]:
        endpoints: dict[str, str] = {}
        if record.spec is not None:
            settings = record.spec["settings"]
            endpoints = {
                "http": f"http://{settings['host']}:{settings['httpPort']}",
                "grpc": f"{settings['host']}:{settings['grpcPort']}",
            }
        return {
            "runtimeStatus": record.status.value,
            "statusDescription": record.description,
            "exitCode": record.exit_code,
            "restartCount": record.restart_count,
            "lastStartTimeUtc": utc(record.last_start),
            "lastExitTimeUtc": utc(record.last_exit),
            "imageDigest": record.digest,
            "pid": record.pid,
            "endpoints": endpoints,
            "rollback": record.rollback.report() if record.rollback is not None else None,
        }


def _document_of(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None


def _version_of(document: Any) -> int | None:
    """The `version` a refused manifest claims, if it can be read at all (for the report only)."""
    version = document.get("version") if isinstance(document, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None

"""Desired manifest, observed modules and the clock → the commands that converge them (pure, no I/O).

Rules, per module:
- not in the manifest: removed (stopped, record and folders deleted);
- desired `stopped`: stopped if it runs, otherwise marked stopped;
- its spec changed: the new version is pulled and started (or replaces the running one without a gap),
  unless that version already failed under this manifest version: then the old one keeps running
  (`rollback` in its record) until a newer manifest arrives;
- it exited, or failed three liveness probes: the restart policy decides restart now, back off, stop or fail
  (a module the policy leaves down is `failed` unless it ended with code 0);
- `failed` or `stopped` by policy: left alone until a newer manifest (or a manual restart);
- it runs unchanged: left alone; its restart count starts over once it has been stable long enough.
Every image of a plan is pulled before anything starts, so a slow registry cannot leave half a deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
from edgewise.runtime.agent.model import DesiredStatus, Manifest, ModuleSpec, RuntimeStatus
from edgewise.runtime.agent.restart import decide_restart, should_reset_count
from edgewise.runtime.agent.state import ModuleRecord, same_deployment, spec_document, spec_from_document


@dataclass(frozen=True, kw_only=True)
class Observed:
    """One module as the agent sees it now."""

    record: ModuleRecord
    alive: bool  # a process of this record runs
    exit_code: int | None = None  # when it is no longer alive, how it ended (None: unknown)
    unhealthy: bool = False  # alive, but failed its last consecutive liveness probes
    restart_requested: bool = False  # a `restart` direct method asks for a new process


@dataclass(frozen=True, kw_only=True)
class PlanSettings:
    cooloff_unit: float = 10.0
    cooloff_cap: float = 300.0
    stable_after: float = 600.0


def plan(
    *,
    desired: Manifest | None,
    observed: Mapping[str, Observed],
    now: float,
    settings: PlanSettings | None = None,
) -> list[Command]:
    """The commands that bring `observed` to `desired`; nothing accepted yet (None) changes nothing."""
    if desired is None:
        return []
    settings = settings or PlanSettings()
    pulls: list[Command] = []
    steps: list[Command] = []
    for name in sorted(set(observed) - set(desired.modules)):
        steps.append(RemoveModule(module=name))
    for name in sorted(desired.modules):
        spec = desired.modules[name]
        for command in _plan_module(spec, observed.get(name), desired.version, now, settings):
            (pulls if isinstance(command, PullImage) else steps).append(command)
    return pulls + steps


def _plan_module(
    spec: ModuleSpec, obs: Observed | None, version: int, now: float, settings: PlanSettings
) -> list[Command]:
    name = spec.name
    record = obs.record if obs is not None else None
    alive = obs is not None and obs.alive
    if spec.status == DesiredStatus.STOPPED:
        if alive:
            return [
                StopModule(
                    module=name,
                    status=RuntimeStatus.STOPPED,
                    reason="desired status is stopped",
                    manifest_version=version,
                )
            ]
        if record is None or record.status != RuntimeStatus.STOPPED:
            return [
                MarkModule(
                    module=name,
                    status=RuntimeStatus.STOPPED,
                    description="desired status is stopped",
                    manifest_version=version,
                )
            ]
        return []

    if record is None:
        return _fresh(spec, version, "new module")
    target = spec_document(spec)
    blocked = record.rollback is not None and record.rollback.manifest_version >= version
    changed = not same_deployment(record.spec, target)
    # The version to keep alive: the desired one, or the previous one while the desired one is rolled back.
    current = spec_from_document(name, record.spec) if (blocked and record.spec is not None) else spec
    assert obs is not None

    if obs.restart_requested:
        reason = "restart requested"
        if changed and not blocked:
            return [PullImage(module=name, image=spec.image), *_start(spec, version, reason, stop_first=alive)]
        return [
            PullImage(module=name, image=current.image),
            StartModule(
                module=name, spec=current, manifest_version=version, reason=reason, fresh=True, stop_first=alive
            ),
        ]

    if alive:
        if changed and not blocked:
            return [
                PullImage(module=name, image=spec.image),
                UpdateModule(module=name, spec=spec, manifest_version=version),
            ]
        if obs.unhealthy:
            return _after_exit(
                current, record, version, now, settings, exit_code=None, unhealthy=True, exited_at=now, alive=True
            )
        steps: list[Command] = []
        if record.status != RuntimeStatus.RUNNING:
            steps.append(
                MarkModule(module=name, status=RuntimeStatus.RUNNING, description="running", manifest_version=version)
            )
        if (
            record.restart_count > 0
            and record.started_at is not None
            and should_reset_count(running_since=record.started_at, now=now, stable_after=settings.stable_after)
        ):
            steps.append(ResetRestartCount(module=name))
        return steps

    if changed and not blocked:
        return _fresh(spec, version, "new version" if record.spec is not None else "new module")
    newer = record.manifest_version is None or record.manifest_version < version
    if record.status in (RuntimeStatus.RUNNING, RuntimeStatus.UNKNOWN):
        return _after_exit(
            current,
            record,
            version,
            now,
            settings,
            exit_code=obs.exit_code,
            unhealthy=False,
            exited_at=now,
            alive=False,
        )
    if record.status == RuntimeStatus.BACKOFF:
        return _after_exit(
            current,
            record,
            version,
            now,
            settings,
            exit_code=record.exit_code,
            unhealthy=False,
            exited_at=record.last_exit if record.last_exit is not None else now,
            alive=False,
            already_recorded=True,
        )
    if newer:  # failed, or stopped (by policy or an earlier manifest): a newer manifest tries again
        return [
            PullImage(module=name, image=current.image),
            StartModule(module=name, spec=current, manifest_version=version, reason="newer manifest", fresh=True),
        ]
    return []


def _fresh(spec: ModuleSpec, version: int, reason: str) -> list[Command]:
    return [PullImage(module=spec.name, image=spec.image), *_start(spec, version, reason)]


def _start(spec: ModuleSpec, version: int, reason: str, *, stop_first: bool = False) -> list[Command]:
    return [
        StartModule(
            module=spec.name, spec=spec, manifest_version=version, reason=reason, fresh=True, stop_first=stop_first
        )
    ]


def _after_exit(
    spec: ModuleSpec,
    record: ModuleRecord,
    version: int,
    now: float,
    settings: PlanSettings,
    *,
    exit_code: int | None,
    unhealthy: bool,
    exited_at: float,
    alive: bool,
    already_recorded: bool = False,
) -> list[Command]:
    """Apply the restart policy to a module that exited (or runs but is unhealthy)."""
    name = spec.name
    decision = decide_restart(
        policy=spec.restart_policy,
        exit_code=exit_code,
        unhealthy=unhealthy,
        restart_count=record.restart_count,
        max_restarts=spec.settings.max_restarts,
        exited_at=exited_at,
        now=now,
        cooloff_unit=settings.cooloff_unit,
        cooloff_cap=settings.cooloff_cap,
    )
    what = "failed its liveness probes" if unhealthy else _exit_words(exit_code)
    failure = unhealthy or exit_code != 0
    status = {
        "restart": RuntimeStatus.BACKOFF,
        "backoff": RuntimeStatus.BACKOFF,
        # as IoT Edge reports it: a module the policy leaves down is failed unless it ended cleanly
        "stop": RuntimeStatus.FAILED if failure else RuntimeStatus.STOPPED,
        "fail": RuntimeStatus.FAILED,
    }.get(decision.action, RuntimeStatus.FAILED)
    steps: list[Command] = []
    if decision.action == "restart":
        if not alive and not already_recorded:
            steps.append(
                MarkModule(
                    module=name,
                    status=status,
                    description=f"{what}; restarting",
                    exited=True,
                    exit_code=exit_code,
                    manifest_version=version,
                    failure=failure,
                )
            )
        steps.append(PullImage(module=name, image=spec.image))
        steps.append(
            StartModule(
                module=name,
                spec=spec,
                manifest_version=version,
                reason=f"{what}; restarting",
                restart=True,
                stop_first=alive,
            )
        )
        return steps
    if decision.action == "backoff" and already_recorded:
        return []  # still waiting out the cool-off
    description = f"{what}; restarting in {decision.delay:.0f}s" if decision.action == "backoff" else decision.reason
    if alive:
        return [StopModule(module=name, status=status, reason=description, manifest_version=version, failure=True)]
    if already_recorded and record.status == status:
        return []
    return [
        MarkModule(
            module=name,
            status=status,
            description=description,
            exited=not already_recorded,
            exit_code=exit_code,
            manifest_version=version,
            failure=failure and not already_recorded,
        )
    ]


def _exit_words(exit_code: int | None) -> str:
    if exit_code is None:
        return "exited"
    if exit_code < 0:
        return f"killed by signal {-exit_code}"
    return f"exited with code {exit_code}"

"""The planner as a table: desired manifest and observed modules in, commands out (pure, no processes)."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest
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
from edgewise.runtime.agent.model import (
    DesiredStatus,
    Manifest,
    ModuleSettings,
    ModuleSpec,
    ModuleType,
    RestartPolicy,
    RuntimeStatus,
    TelemetrySettings,
)
from edgewise.runtime.agent.planner import Observed, PlanSettings, plan
from edgewise.runtime.agent.state import ModuleRecord, Rollback, spec_document

NOW = 1_800_000_000.0
OLD = "sha256:" + "0a" * 32
NEW = "sha256:" + "0b" * 32
SETTINGS = PlanSettings(cooloff_unit=10.0, cooloff_cap=300.0, stable_after=600.0)


def spec(name: str = "iris", digest: str = NEW, **changes: Any) -> ModuleSpec:
    base = ModuleSpec(
        name=name,
        type=ModuleType.OCI,
        image=f"127.0.0.1:5000/models/{name}@{digest}",
        status=DesiredStatus.RUNNING,
        restart_policy=RestartPolicy.ALWAYS,
        env=MappingProxyType({}),
        settings=ModuleSettings(http_port=8000, grpc_port=8001, max_restarts=3),
    )
    return replace(base, **changes)


def manifest(*specs: ModuleSpec, version: int = 2) -> Manifest:
    return Manifest(
        device_id="cam-7", version=version, modules={s.name: s for s in specs}, telemetry=TelemetrySettings()
    )


def record(running: ModuleSpec | None, **changes: Any) -> ModuleRecord:
    base = ModuleRecord(
        name=running.name if running else "iris",
        generation=1,
        pid=4242,
        start_ticks=100,
        started_at=NOW - 60,
        image=running.image if running else None,
        digest=running.digest if running else None,
        spec=spec_document(running) if running else None,
        manifest_version=1,
        last_start=NOW - 60,
        status=RuntimeStatus.RUNNING,
        description="running",
    )
    return replace(base, **changes)


def observed(rec: ModuleRecord, *, alive: bool = True, **changes: Any) -> dict[str, Observed]:
    return {rec.name: Observed(record=rec, alive=alive, **changes)}


def kinds(commands: list[Command]) -> list[str]:
    return [type(c).__name__ for c in commands]


def test_nothing_accepted_changes_nothing() -> None:
    assert plan(desired=None, observed=observed(record(spec())), now=NOW) == []


def test_new_module_is_pulled_then_started() -> None:
    commands = plan(desired=manifest(spec()), observed={}, now=NOW, settings=SETTINGS)
    assert commands == [
        PullImage(module="iris", image=spec().image),
        StartModule(module="iris", spec=spec(), manifest_version=2, reason="new module", fresh=True),
    ]


def test_every_pull_comes_before_any_start() -> None:
    desired = manifest(spec("a"), spec("b", settings=ModuleSettings(http_port=9000, grpc_port=9001)))
    assert kinds(plan(desired=desired, observed={}, now=NOW)) == [
        "PullImage",
        "PullImage",
        "StartModule",
        "StartModule",
    ]


def test_running_unchanged_module_is_left_alone() -> None:
    running = spec()
    assert plan(desired=manifest(running), observed=observed(record(running)), now=NOW, settings=SETTINGS) == []


def test_defaults_spelled_out_or_not_are_the_same_spec() -> None:
    # An explicit default in the new manifest must not cause an update.
    running = spec()
    same = spec(settings=ModuleSettings(http_port=8000, grpc_port=8001, max_restarts=3, host="127.0.0.1"))
    assert plan(desired=manifest(same), observed=observed(record(running)), now=NOW) == []


@pytest.mark.parametrize(
    "change",
    [
        {"digest": NEW},
        {"env": MappingProxyType({"OMP_NUM_THREADS": "2"})},
        {"settings": ModuleSettings(http_port=8000, grpc_port=8001, max_restarts=3, warmup=False)},
    ],
)
def test_changed_running_module_is_updated_in_place(change: dict[str, Any]) -> None:
    running = spec(digest=OLD)
    wanted = spec(**{"digest": OLD, **change})
    commands = plan(desired=manifest(wanted), observed=observed(record(running)), now=NOW)
    assert commands == [
        PullImage(module="iris", image=wanted.image),
        UpdateModule(module="iris", spec=wanted, manifest_version=2),
    ]


def test_adopted_module_is_marked_running() -> None:
    running = spec()
    commands = plan(
        desired=manifest(running), observed=observed(record(running, status=RuntimeStatus.UNKNOWN)), now=NOW
    )
    assert commands == [
        MarkModule(module="iris", status=RuntimeStatus.RUNNING, description="running", manifest_version=2)
    ]


def test_desired_stopped_stops_a_running_module() -> None:
    running = spec()
    commands = plan(desired=manifest(spec(status=DesiredStatus.STOPPED)), observed=observed(record(running)), now=NOW)
    assert kinds(commands) == ["StopModule"]
    assert isinstance(commands[0], StopModule) and commands[0].status == RuntimeStatus.STOPPED


def test_desired_stopped_and_not_running_is_only_recorded_once() -> None:
    stopped = spec(status=DesiredStatus.STOPPED)
    first = plan(desired=manifest(stopped), observed={}, now=NOW)
    assert kinds(first) == ["MarkModule"]
    done = record(stopped, pid=None, status=RuntimeStatus.STOPPED)
    assert plan(desired=manifest(stopped), observed=observed(done, alive=False), now=NOW) == []


def test_desired_running_again_after_stopped_starts() -> None:
    was = record(spec(), pid=None, status=RuntimeStatus.STOPPED, manifest_version=2)
    commands = plan(desired=manifest(spec(), version=3), observed=observed(was, alive=False), now=NOW)
    assert kinds(commands) == ["PullImage", "StartModule"]


def test_module_left_the_manifest_is_removed() -> None:
    gone = record(spec("old"))
    commands = plan(desired=manifest(spec()), observed={**observed(gone), **observed(record(spec()))}, now=NOW)
    assert commands == [RemoveModule(module="old")]


def test_failed_update_is_not_retried_for_the_same_manifest_version() -> None:
    running = spec(digest=OLD)
    rolled_back = record(running, rollback=Rollback(from_digest=NEW, reason="warm-up failed", manifest_version=2))
    assert plan(desired=manifest(spec(digest=NEW), version=2), observed=observed(rolled_back), now=NOW) == []


def test_failed_update_is_retried_by_a_newer_manifest() -> None:
    running = spec(digest=OLD)
    rolled_back = record(running, rollback=Rollback(from_digest=NEW, reason="warm-up failed", manifest_version=2))
    commands = plan(desired=manifest(spec(digest=NEW), version=3), observed=observed(rolled_back), now=NOW)
    assert kinds(commands) == ["PullImage", "UpdateModule"]


def test_rolled_back_module_that_crashes_restarts_its_old_version() -> None:
    old = spec(digest=OLD)
    rec = record(old, rollback=Rollback(from_digest=NEW, reason="x", manifest_version=2), restart_count=0)
    gone = rec.with_changes(status=RuntimeStatus.BACKOFF, pid=None, last_exit=NOW - 3600, exit_code=1)
    commands = plan(desired=manifest(spec(digest=NEW)), observed=observed(gone, alive=False), now=NOW)
    assert kinds(commands) == ["PullImage", "StartModule"]
    start = commands[1]
    assert isinstance(start, StartModule) and start.spec.digest == OLD and start.restart


# -- restart policy (restart.decide_restart inside the planner) ---------------------------------------------------


def test_exit_is_recorded_and_backs_off_first() -> None:
    running = spec()
    commands = plan(desired=manifest(running), observed=observed(record(running), alive=False, exit_code=1), now=NOW)
    assert len(commands) == 1
    mark = commands[0]
    assert isinstance(mark, MarkModule)
    assert (mark.status, mark.exited, mark.exit_code, mark.failure) == (RuntimeStatus.BACKOFF, True, 1, True)
    assert "restarting in 10s" in mark.description


def test_backoff_waits_then_restarts() -> None:
    running = spec()
    waiting = record(running, pid=None, status=RuntimeStatus.BACKOFF, last_exit=NOW - 5, exit_code=1, restart_count=1)
    # count 1: cool-off 20 s from the exit
    assert plan(desired=manifest(running), observed=observed(waiting, alive=False), now=NOW, settings=SETTINGS) == []
    later = plan(desired=manifest(running), observed=observed(waiting, alive=False), now=NOW + 16, settings=SETTINGS)
    assert kinds(later) == ["PullImage", "StartModule"]
    start = later[1]
    assert isinstance(start, StartModule) and start.restart and not start.fresh and not start.stop_first


def test_cooloff_unit_comes_from_the_settings() -> None:
    running = spec()
    waiting = record(running, pid=None, status=RuntimeStatus.BACKOFF, last_exit=NOW - 2, exit_code=1)
    fast = PlanSettings(cooloff_unit=1.0)
    assert kinds(plan(desired=manifest(running), observed=observed(waiting, alive=False), now=NOW, settings=fast)) == [
        "PullImage",
        "StartModule",
    ]


def test_too_many_restarts_fail_the_module() -> None:
    running = spec()
    waiting = record(running, pid=None, status=RuntimeStatus.BACKOFF, last_exit=NOW - 999, exit_code=1, restart_count=3)
    commands = plan(desired=manifest(running), observed=observed(waiting, alive=False), now=NOW)
    assert len(commands) == 1 and isinstance(commands[0], MarkModule)
    assert commands[0].status == RuntimeStatus.FAILED and "gave up" in commands[0].description


def test_failed_module_stays_failed_until_a_newer_manifest() -> None:
    running = spec()
    failed = record(running, pid=None, status=RuntimeStatus.FAILED, manifest_version=2)
    assert plan(desired=manifest(running, version=2), observed=observed(failed, alive=False), now=NOW) == []
    retry = plan(desired=manifest(running, version=3), observed=observed(failed, alive=False), now=NOW)
    assert kinds(retry) == ["PullImage", "StartModule"]
    assert isinstance(retry[1], StartModule) and retry[1].fresh


@pytest.mark.parametrize(
    ("policy", "exit_code", "status"),
    [
        (RestartPolicy.NEVER, 0, RuntimeStatus.STOPPED),
        (RestartPolicy.NEVER, 1, RuntimeStatus.FAILED),
        (RestartPolicy.NEVER, -9, RuntimeStatus.FAILED),
        (RestartPolicy.ON_FAILURE, 0, RuntimeStatus.STOPPED),
        (RestartPolicy.ON_FAILURE, 3, RuntimeStatus.BACKOFF),
        (RestartPolicy.ALWAYS, 0, RuntimeStatus.BACKOFF),
    ],
)
def test_restart_policy_decides_after_an_exit(policy: RestartPolicy, exit_code: int, status: RuntimeStatus) -> None:
    running = spec(restart_policy=policy)
    commands = plan(
        desired=manifest(running), observed=observed(record(running), alive=False, exit_code=exit_code), now=NOW
    )
    assert len(commands) == 1 and isinstance(commands[0], MarkModule)
    assert commands[0].status == status and commands[0].exit_code == exit_code


def test_stopped_by_policy_stays_stopped_for_the_same_manifest() -> None:
    running = spec(restart_policy=RestartPolicy.NEVER)
    stopped = record(running, pid=None, status=RuntimeStatus.STOPPED, manifest_version=2)
    assert plan(desired=manifest(running), observed=observed(stopped, alive=False), now=NOW) == []


def test_unhealthy_module_is_stopped_into_backoff() -> None:
    running = spec()
    commands = plan(desired=manifest(running), observed=observed(record(running), unhealthy=True), now=NOW)
    assert len(commands) == 1 and isinstance(commands[0], StopModule)
    assert commands[0].status == RuntimeStatus.BACKOFF and commands[0].failure


def test_unhealthy_module_under_policy_never_is_stopped_as_failed() -> None:
    running = spec(restart_policy=RestartPolicy.NEVER)
    commands = plan(desired=manifest(running), observed=observed(record(running), unhealthy=True), now=NOW)
    assert len(commands) == 1 and isinstance(commands[0], StopModule)
    assert commands[0].status == RuntimeStatus.FAILED and "restart policy is never" in commands[0].reason


def test_unhealthy_module_past_its_cooloff_is_replaced_by_a_new_process() -> None:
    running = spec()
    commands = plan(
        desired=manifest(running),
        observed=observed(record(running), unhealthy=True),
        now=NOW,
        settings=PlanSettings(cooloff_unit=0.0),
    )
    assert kinds(commands) == ["PullImage", "StartModule"]
    assert isinstance(commands[1], StartModule) and commands[1].stop_first and commands[1].restart


def test_restart_count_resets_once_stable() -> None:
    running = spec()
    stable = record(running, restart_count=2, started_at=NOW - 601)
    assert plan(desired=manifest(running), observed=observed(stable), now=NOW) == [ResetRestartCount(module="iris")]
    young = record(running, restart_count=2, started_at=NOW - 30)
    assert plan(desired=manifest(running), observed=observed(young), now=NOW) == []


def test_adopted_dead_module_counts_as_an_unknown_exit() -> None:
    running = spec(restart_policy=RestartPolicy.ON_FAILURE)
    commands = plan(desired=manifest(running), observed=observed(record(running), alive=False), now=NOW)
    assert isinstance(commands[0], MarkModule) and commands[0].status == RuntimeStatus.BACKOFF
    assert commands[0].exit_code is None


def test_restart_request_starts_a_new_process_and_clears_failed() -> None:
    running = spec()
    live = plan(desired=manifest(running), observed=observed(record(running), restart_requested=True), now=NOW)
    assert kinds(live) == ["PullImage", "StartModule"]
    assert isinstance(live[1], StartModule) and live[1].stop_first and live[1].fresh
    failed = record(running, pid=None, status=RuntimeStatus.FAILED, manifest_version=2, restart_count=3)
    dead = plan(desired=manifest(running), observed=observed(failed, alive=False, restart_requested=True), now=NOW)
    assert isinstance(dead[1], StartModule) and not dead[1].stop_first and dead[1].fresh


def test_new_version_while_crash_looping_starts_at_once() -> None:
    waiting = record(spec(digest=OLD), pid=None, status=RuntimeStatus.BACKOFF, last_exit=NOW, restart_count=2)
    commands = plan(desired=manifest(spec(digest=NEW)), observed=observed(waiting, alive=False), now=NOW)
    assert kinds(commands) == ["PullImage", "StartModule"]
    assert isinstance(commands[1], StartModule) and commands[1].fresh and commands[1].spec.digest == NEW

"""The restart policy as a pure function of how a module ended, its policy, its restart count and the clock.

IoT Edge's semantics: `always` restarts after any exit, `on-failure` only after a non-zero (or unknown) exit
code or a failed health check, `never` leaves the module stopped. Each restart waits out a cool-off of
`cooloff_unit * 2**restart_count` seconds (capped at `cooloff_cap`) counted from the exit; once the module has
been restarted `max_restarts` times it is given up on (`failed`) until its deployment changes or it ran stably
long enough for the count to be reset.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.runtime.agent.model import RestartPolicy

RESTART = "restart"  # start it again now
BACKOFF = "backoff"  # start it again after `delay` seconds
STOP = "stop"  # the policy says it stays stopped
FAIL = "fail"  # restarted too often: give up

_NEVER = "restart policy is never"


@dataclass(frozen=True, kw_only=True)
class RestartDecision:
    action: str  # "restart" (now), "backoff" (wait `delay`), "stop" (policy says no), "fail" (gave up)
    delay: float
    reason: str


def cooloff(restart_count: int, *, unit: float = 10.0, cap: float = 300.0) -> float:
    """Seconds to wait before restart number `restart_count + 1`."""
    return float(min(unit * 2.0 ** min(max(restart_count, 0), 64), cap))


def decide_restart(
    *,
    policy: RestartPolicy,
    exit_code: int | None,
    unhealthy: bool,
    restart_count: int,
    max_restarts: int,
    exited_at: float,
    now: float,
    cooloff_unit: float = 10.0,
    cooloff_cap: float = 300.0,
) -> RestartDecision:
    """What to do about a module that exited (or failed its health check) at `exited_at`.

    An unknown exit code (a module adopted after an agent restart) counts as a failure: a scoring server is
    meant to run until it is stopped.
    """
    how = "failed its health check" if unhealthy else _exit_text(exit_code)
    if policy is RestartPolicy.NEVER:
        return RestartDecision(action=STOP, delay=0.0, reason=f"{how}; {_NEVER}")
    failed = unhealthy or exit_code != 0
    if policy is RestartPolicy.ON_FAILURE and not failed:
        return RestartDecision(action=STOP, delay=0.0, reason=f"{how}; restart policy on-failure")
    if restart_count >= max_restarts:
        return RestartDecision(
            action=FAIL, delay=0.0, reason=f"{how}; gave up after {restart_count} restarts (maxRestarts {max_restarts})"
        )
    wait = cooloff(restart_count, unit=cooloff_unit, cap=cooloff_cap)
    remaining = exited_at + wait - now
    if remaining > 0:
        return RestartDecision(action=BACKOFF, delay=remaining, reason=f"{how}; restarting after a {wait:g}s cool-off")
    return RestartDecision(action=RESTART, delay=0.0, reason=f"{how}; restart {restart_count + 1} of {max_restarts}")


def after_failed_start(policy: RestartPolicy, error: object) -> RestartDecision:
    """A start that failed is a failure like a non-zero exit: `never` leaves the module down at once; under the
    other policies it backs off, and the planner times the restart from the record's exit time."""
    how = f"start failed: {error}"
    if policy is RestartPolicy.NEVER:
        return RestartDecision(action=STOP, delay=0.0, reason=f"{how}; {_NEVER}")
    return RestartDecision(action=BACKOFF, delay=0.0, reason=how)


def should_reset_count(*, running_since: float, now: float, stable_after: float = 600.0) -> bool:
    """A module that has run this long since its last start has its restart count reset (as IoT Edge does)."""
    return now - running_since >= stable_after


def _exit_text(exit_code: int | None) -> str:
    if exit_code is None:
        return "exited (code unknown)"
    if exit_code > 128:
        return f"exited with code {exit_code} (signal {exit_code - 128})"
    return f"exited with code {exit_code}"

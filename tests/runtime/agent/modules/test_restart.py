"""The restart policy, as a table: IoT Edge semantics, cool-off doubling from the exit time, giving up."""

from __future__ import annotations

import pytest
from edgewise.runtime.agent.model import RestartPolicy
from edgewise.runtime.agent.restart import cooloff, decide_restart, should_reset_count

ALWAYS, ON_FAILURE, NEVER = RestartPolicy.ALWAYS, RestartPolicy.ON_FAILURE, RestartPolicy.NEVER

# policy, exit code, unhealthy, restart count, seconds since the exit -> action, delay
CASES = [
    (ALWAYS, 0, False, 0, 10.0, "restart", 0.0),
    (ALWAYS, 1, False, 0, 10.0, "restart", 0.0),
    (ALWAYS, 0, False, 0, 0.0, "backoff", 10.0),
    (ALWAYS, 1, False, 0, 4.0, "backoff", 6.0),
    (ALWAYS, 1, False, 1, 10.0, "backoff", 10.0),  # second restart waits 20 s
    (ALWAYS, 1, False, 2, 40.0, "restart", 0.0),  # third waits 40 s
    (ALWAYS, 1, False, 4, 100.0, "backoff", 60.0),  # 160 s
    (ALWAYS, 1, False, 4, 200.0, "restart", 0.0),
    (ALWAYS, None, False, 0, 10.0, "restart", 0.0),  # adopted, code unknown
    (ALWAYS, 0, True, 0, 10.0, "restart", 0.0),
    (ALWAYS, 1, False, 5, 1000.0, "fail", 0.0),  # maxRestarts 5 reached
    (ALWAYS, 0, False, 7, 1000.0, "fail", 0.0),
    (ON_FAILURE, 0, False, 0, 10.0, "stop", 0.0),  # clean exit: stays stopped
    (ON_FAILURE, 0, False, 9, 10.0, "stop", 0.0),  # even past the restart budget: not a failure
    (ON_FAILURE, 1, False, 0, 10.0, "restart", 0.0),
    (ON_FAILURE, 137, False, 1, 5.0, "backoff", 15.0),
    (ON_FAILURE, None, False, 0, 10.0, "restart", 0.0),  # unknown code counts as a failure
    (ON_FAILURE, 0, True, 0, 10.0, "restart", 0.0),  # unhealthy counts as a failure
    (ON_FAILURE, 1, False, 5, 10.0, "fail", 0.0),
    (NEVER, 1, False, 0, 10.0, "stop", 0.0),
    (NEVER, 0, True, 0, 10.0, "stop", 0.0),
    (NEVER, 1, False, 9, 10.0, "stop", 0.0),
]


@pytest.mark.parametrize(("policy", "code", "unhealthy", "count", "since", "action", "delay"), CASES)
def test_decide_restart(
    policy: RestartPolicy, code: int | None, unhealthy: bool, count: int, since: float, action: str, delay: float
) -> None:
    decision = decide_restart(
        policy=policy, exit_code=code, unhealthy=unhealthy, restart_count=count, max_restarts=5,
        exited_at=1000.0, now=1000.0 + since,
    )  # fmt: skip
    assert (decision.action, decision.delay) == (action, pytest.approx(delay))
    assert decision.reason


def test_cooloff_doubles_and_is_capped() -> None:
    assert [cooloff(n) for n in range(7)] == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert cooloff(10_000) == 300.0  # no overflow for absurd counts
    assert cooloff(2, unit=1.0, cap=3.0) == 3.0


def test_cooloff_settings_are_used() -> None:
    decision = decide_restart(
        policy=ALWAYS, exit_code=1, unhealthy=False, restart_count=3, max_restarts=10,
        exited_at=0.0, now=1.0, cooloff_unit=0.5, cooloff_cap=2.0,
    )  # fmt: skip
    assert decision.action == "backoff" and decision.delay == pytest.approx(1.0)


def test_reasons_say_what_happened() -> None:
    gave_up = decide_restart(
        policy=ALWAYS, exit_code=139, unhealthy=False, restart_count=3, max_restarts=3, exited_at=0.0, now=0.0
    )
    assert gave_up.action == "fail" and "signal 11" in gave_up.reason and "3 restarts" in gave_up.reason
    unhealthy = decide_restart(
        policy=NEVER, exit_code=None, unhealthy=True, restart_count=0, max_restarts=3, exited_at=0.0, now=0.0
    )
    assert "health check" in unhealthy.reason and "never" in unhealthy.reason


@pytest.mark.parametrize(("running", "reset"), [(0.0, False), (599.9, False), (600.0, True), (5000.0, True)])
def test_should_reset_count(running: float, reset: bool) -> None:
    assert should_reset_count(running_since=100.0, now=100.0 + running) is reset

"""The agent under failures: killed mid-update, broker restarts, restarts without a broker, dying modules."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.runtime.agent.conftest import Broker
from tests.runtime.agent.e2e import procs
from tests.runtime.agent.e2e.checks import (
    describe_roots,
    one_server_per_module,
    serving_pid,
    wait_one_server_per_module,
)
from tests.runtime.agent.e2e.harness import wait_for
from tests.runtime.agent.e2e.images import ImageFactory
from tests.runtime.agent.e2e.load import ScoringLoad
from tests.runtime.agent.e2e.rig import MODULE, DeviceRig, is_running, module_state, status_code

pytestmark = pytest.mark.slow


def test_agent_killed_mid_update_converges_without_downtime(rig: DeviceRig, images: ImageFactory) -> None:
    v1, v2 = images.image(1), images.image(2)
    rig.deploy(v1)
    rig.wait_serving(v1)
    old_pid = serving_pid(rig)
    rootfs = rig.agent.state_dir / "images/rootfs" / v2.digest.replace(":", "-")
    with ScoringLoad(port=rig.http_port(), fresh_clients=1, keepalive_clients=1) as load:
        load.wait_answers(20)
        version = rig.publish({MODULE: rig.entry(v2)})

        def update_under_way() -> bool:
            reported = rig.observer.reported or {}
            return (
                rig.agent.accepted_version() == version
                or rootfs.exists()
                or (reported.get("lastDesiredVersion") == version and status_code(reported) == 202)
            )

        wait_for(update_under_way, timeout=30, interval=0.005, what=f"manifest v{version} to be accepted")
        rig.agent.kill()
        v2_answers_at_kill = load.versions()["2"]
        reported_at_kill = dict(rig.observer.reported or {})

        load.wait_answers(20, since=load.mark())  # the old version serves while no agent runs
        rig.agent.start()
        rig.wait_running(v2, version=version, timeout=60)
        load.wait_answers(30, since=load.mark(), version="2")
        wait_for(lambda: not procs.alive(old_pid), timeout=30, what=f"the old module process {old_pid} to exit")
        wait_one_server_per_module(rig, timeout=30)
        tail = load.mark()
        load.wait_answers(20, since=tail)
    assert v2_answers_at_kill == 0, "the agent was killed after the update had finished: the test proved nothing"
    assert not is_running(reported_at_kill, MODULE, v2.digest, version)
    assert load.failures == [], load.summary()
    assert set(load.versions(tail)) == {"2"}, load.summary()
    serving_pid(rig)
    assert one_server_per_module(rig), describe_roots(rig)


def test_broker_restart_reconnects_and_applies_a_later_manifest(
    rig: DeviceRig, broker: Broker, images: ImageFactory
) -> None:
    v1, v2 = images.image(1), images.image(2)
    rig.deploy(v1)
    rig.wait_serving(v1)
    rig.observer.wait(lambda: rig.observer.status == "online", timeout=10, what="status online")
    with ScoringLoad(port=rig.http_port(), fresh_clients=1, keepalive_clients=1) as load:
        broker.stop()
        mark = load.mark()
        load.wait_answers(30, since=mark)  # serving goes on without a broker
        broker.start()
        wait_for(lambda: rig.observer.connected, timeout=20, what="the observer to reconnect")
        reports_before = len(rig.observer.reported_history)
        version = rig.publish({MODULE: rig.entry(v2)})
        rig.wait_running(v2, version=version, timeout=60)
        load.wait_answers(20, since=load.mark(), version="2")
    assert len(rig.observer.reported_history) > reports_before
    rig.observer.wait(lambda: rig.observer.status == "online", timeout=20, what="status online after the restart")
    assert load.failures == [], load.summary()
    assert rig.agent.running
    serving_pid(rig)


def test_agent_restarted_without_broker_keeps_its_module(rig: DeviceRig, broker: Broker, images: ImageFactory) -> None:
    v1 = images.image(1)
    first = rig.deploy(v1)
    rig.wait_serving(v1)
    pid = serving_pid(rig)
    ticks = procs.start_ticks(pid)
    with ScoringLoad(port=rig.http_port(), fresh_clients=1, keepalive_clients=1) as load:
        broker.stop()
        rig.agent.kill()
        rig.agent.start()
        deadline = time.monotonic() + 5  # several reconcile passes and health probes, without a broker
        while time.monotonic() < deadline:
            assert rig.agent.running, rig.agent.log()[-3000:]
            time.sleep(0.2)
        assert procs.alive(pid) and procs.start_ticks(pid) == ticks, "the module was not kept"
        assert serving_pid(rig) == pid
        assert one_server_per_module(rig), describe_roots(rig)
        broker.start()
        state = rig.observer.wait_reported(
            lambda s: (
                s.get("agent", {}).get("startTimeUtc") != first["agent"]["startTimeUtc"]
                and module_state(s, MODULE).get("runtimeStatus") == "running"
            ),
            timeout=40,
            what="a report from the restarted agent",
        )
        load.wait_answers(20, since=load.mark())
    entry = module_state(state, MODULE)
    assert entry["pid"] == pid and entry["imageDigest"] == v1.digest, entry
    assert entry["restartCount"] == 0, entry
    assert state["lastDesiredVersion"] == first["lastDesiredVersion"]
    assert load.failures == [], load.summary()
    assert set(load.versions()) == {"1"}


def test_agent_restarts_a_dead_module_from_its_state_without_broker(
    rig: DeviceRig, broker: Broker, images: ImageFactory
) -> None:
    v1 = images.image(1)
    rig.deploy(v1)
    rig.wait_serving(v1)
    pid = serving_pid(rig)
    broker.stop()
    rig.agent.kill()
    procs.kill_trees([pid])
    wait_for(lambda: not procs.alive(pid), timeout=10, what=f"module process {pid} to die")
    rig.agent.start()
    answer = rig.wait_serving(v1, timeout=45)  # from the saved manifest alone
    assert answer.factor == v1.factor
    assert len(rig.agent.module_roots()) == 1, describe_roots(rig)
    broker.start()
    state = rig.observer.wait_reported(
        lambda s: (
            module_state(s, MODULE).get("runtimeStatus") == "running"
            and module_state(s, MODULE).get("pid") not in (None, pid)
        ),
        timeout=40,
        what="the restarted module reported",
    )
    assert module_state(state, MODULE)["imageDigest"] == v1.digest
    assert serving_pid(rig) == module_state(state, MODULE)["pid"]


def _restarted_once(pid: int) -> Callable[[dict[str, Any]], bool]:
    """The reported state shows the module running again, as another process, after one restart."""

    def check(state: dict[str, Any]) -> bool:
        module = module_state(state, MODULE)
        return (
            module.get("runtimeStatus") == "running"
            and module.get("pid") not in (None, pid)
            and module.get("restartCount") == 1
        )

    return check


def test_restart_policy_restarts_a_killed_module(rig: DeviceRig, images: ImageFactory) -> None:
    v1 = images.image(1)
    state = rig.deploy(v1, restart_policy="always")
    rig.wait_serving(v1)
    pid = serving_pid(rig)
    assert module_state(state, MODULE)["restartCount"] == 0
    os.kill(pid, signal.SIGKILL)
    state = rig.observer.wait_reported(_restarted_once(pid), timeout=45, what="the module restarted once")
    assert rig.wait_serving(v1).factor == v1.factor
    assert not procs.alive(pid)
    # Killing the reported process must not leave the scoring server it ran behind, still holding the port.
    wait_one_server_per_module(rig, timeout=20)
    assert serving_pid(rig) == module_state(state, MODULE)["pid"]


def test_a_module_that_stops_answering_is_replaced(rig: DeviceRig, images: ImageFactory) -> None:
    """Alive but frozen: its health checks fail until it counts as unhealthy, and the restart policy replaces it."""
    v1 = images.image(1)
    rig.deploy(v1, restart_policy="always")
    rig.wait_serving(v1)
    pid = serving_pid(rig)
    os.kill(pid, signal.SIGSTOP)  # it answers no request now, and its exit status stays unknown
    try:
        rig.observer.wait_reported(_restarted_once(pid), timeout=60, what="the frozen module replaced")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert rig.wait_serving(v1).factor == v1.factor
    wait_for(lambda: not procs.alive(pid), timeout=20, what="the frozen module gone")
    wait_one_server_per_module(rig, timeout=20)

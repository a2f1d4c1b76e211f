"""Desired status and restart policy `never`, on an agent without a sandbox (which it must say it is)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tests.runtime.agent.e2e.harness import FAST_FLAGS, wait_for
from tests.runtime.agent.e2e.images import ImageFactory
from tests.runtime.agent.e2e.load import try_infer
from tests.runtime.agent.e2e.rig import MODULE, DeviceRig, module_state

pytestmark = pytest.mark.slow


@pytest.fixture
def plain_rig(rig_factory: Callable[..., DeviceRig]) -> DeviceRig:
    """An agent told not to use bubblewrap."""
    device: DeviceRig = rig_factory("cam-plain", agent_flags=(*FAST_FLAGS, "--sandbox", "none"))
    return device


def test_stopped_and_running_again_without_a_sandbox(plain_rig: DeviceRig, images: ImageFactory) -> None:
    rig = plain_rig
    v1 = images.image(1)
    state = rig.deploy(v1)
    assert state["agent"]["sandbox"] == "none"
    rig.wait_serving(v1)
    pid = module_state(state, MODULE)["pid"]
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")  # no namespace of its own

    version = rig.publish({MODULE: rig.entry(v1, status="stopped")})
    rig.observer.wait_reported(
        lambda s: s.get("lastDesiredVersion") == version and module_state(s, MODULE).get("runtimeStatus") == "stopped",
        timeout=40,
        what="the module stopped on request",
    )
    wait_for(lambda: try_infer(rig.http_port()) is None, timeout=20, what="the public port to close")

    running = rig.deploy(v1)
    assert module_state(running, MODULE)["runtimeStatus"] == "running"
    assert rig.wait_serving(v1).factor == v1.factor


def test_restart_policy_never_leaves_a_killed_module_failed(plain_rig: DeviceRig, images: ImageFactory) -> None:
    rig = plain_rig
    v1 = images.image(1)
    state = rig.deploy(v1, restart_policy="never")
    rig.wait_serving(v1)
    os.kill(module_state(state, MODULE)["pid"], signal.SIGKILL)
    final = rig.observer.wait_reported(
        lambda s: module_state(s, MODULE).get("runtimeStatus") == "failed",
        timeout=30,
        what="the killed module left failed",
    )
    entry = module_state(final, MODULE)
    assert entry["exitCode"] == 128 + signal.SIGKILL
    assert entry["restartCount"] == 0
    wait_for(lambda: try_infer(rig.http_port()) is None, timeout=10, what="nothing serving the port")


def test_restart_policy_never_keeps_a_module_that_could_not_start_failed(
    plain_rig: DeviceRig, images: ImageFactory
) -> None:
    """Its port is taken: the report says failed with the cause, at once and for good (no backoff, no restart)."""
    rig = plain_rig
    v1 = images.image(1)
    with socket.create_server(("127.0.0.1", rig.http_port())):
        version = rig.publish({MODULE: rig.entry(v1, restart_policy="never")})

        def settled(state: Mapping[str, Any]) -> bool:
            return state.get("lastDesiredVersion") == version and module_state(state, MODULE).get("runtimeStatus") in (
                "failed",
                "backoff",
                "stopped",
            )

        first = module_state(rig.observer.wait_reported(settled, timeout=30, what="the start to fail"), MODULE)
        assert first["runtimeStatus"] == "failed", first
        assert "start failed" in first["statusDescription"] and "restart policy is never" in first["statusDescription"]
        time.sleep(3.5)  # three reconcile passes of FAST_FLAGS: none may restart it or change its status
        later = rig.module(MODULE)
        assert later["runtimeStatus"] == "failed" and later["restartCount"] == 0, later
        assert later["statusDescription"] == first["statusDescription"]


def test_a_deep_state_directory_still_serves(rig_factory: Callable[..., DeviceRig], images: ImageFactory) -> None:
    """Socket paths have a length limit: a module of a deeply nested state directory must run all the same."""
    rig = rig_factory("cam-" + "d" * 60)
    assert len(str(rig.agent.state_dir)) > 80
    v1 = images.image(1)
    rig.deploy(v1)
    assert rig.wait_serving(v1).factor == v1.factor


def test_unused_images_are_collected_but_the_previous_manifests_stay_cached(
    rig: DeviceRig, images: ImageFactory
) -> None:
    """Images no manifest uses are removed; those of the manifest before the current one stay for a rollback."""

    def unpacked(digest: str) -> bool:
        return (rig.agent.state_dir / "images" / "rootfs" / digest.replace(":", "-")).is_dir()

    v1, v2, v3 = images.image(1), images.image(2), images.image(3)
    rig.deploy(v1)
    rig.deploy(v2)
    assert unpacked(v1.digest) and unpacked(v2.digest)
    rig.deploy(v3)
    wait_for(lambda: not unpacked(v1.digest), timeout=20, what="the image no manifest uses any more removed")
    assert unpacked(v2.digest) and unpacked(v3.digest)

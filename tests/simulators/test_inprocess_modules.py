"""Device identities in one process running real modules: one module launcher forks the modules of all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgewise.runtime.agent.health import admin_request
from edgewise.runtime.agent.supervisor import read_stat
from edgewise.simulators import (
    DeviceSettings,
    FleetObserver,
    InProcessFleet,
    device_ids,
    kill_module_processes,
    register_devices,
    signed_manifest,
)

from tests.runtime.agent.conftest import Broker, Signer
from tests.runtime.agent.e2e.images import ImageFactory
from tests.simulators.test_process_fleet import module, running_module

pytestmark = pytest.mark.slow


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """Short enough for the modules' admin sockets to live in their state folders (a unix socket path holds at
    most 107 bytes; deeper, they move to a private folder under /tmp and start without the launcher)."""
    path = Path(tempfile.mkdtemp(prefix="ew-gw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_one_launcher_forks_the_modules_of_every_device(
    broker: Broker, signer: Signer, images: ImageFactory, observer: FleetObserver, work_dir: Path
) -> None:
    image = images.image(1)
    fleet = InProcessFleet(
        broker_port=broker.port,
        devices=register_devices(broker.manager, device_ids(3, prefix="gw")),
        workspace_key=signer.public_text,
        work_dir=work_dir,
        registry=f"http://{images.registry_host}",
        settings=DeviceSettings(keepalive=5.0),
    )
    with fleet:
        ids = fleet.device_ids
        observer.wait_status(ids, "online", timeout=30)
        modules = {"scale": module(image)}
        observer.publish_desired({d: signed_manifest(signer.key, device_id=d, version=1, modules=modules) for d in ids})
        observer.wait_applied(ids, 1, timeout=120)
        assert fleet.launchers is not None
        [launcher] = fleet.launchers.launchers()
        states = {d: observer.snapshot(d)[0] or {} for d in ids}
        pids = []
        for device, state in states.items():
            assert running_module(state, image), state
            pid = state["modules"]["scale"]["pid"]
            stat = read_stat(pid)
            assert stat is not None and stat.ppid == launcher.pid and stat.comm == "edgewise-score"
            admin = fleet.agent(device).reconciler.processes["scale"].admin_dir
            assert admin_request(admin, "GET", "/v2/health/ready")[0] == 200
            pids.append(pid)
        if states[ids[0]]["agent"]["sandbox"] == "bubblewrap":  # each in a mount namespace of its own
            assert len({os.readlink(f"/proc/{pid}/ns/mnt") for pid in pids}) == len(pids)
        everywhere = os.sched_getaffinity(0)
        if len(everywhere) > 1:  # the agents' threads share one CPU; the launcher and modules run on all
            assert all(os.sched_getaffinity(loop.native_id or 0) == {max(everywhere)} for loop in fleet.loops)
            assert all(os.sched_getaffinity(pid) == everywhere for pid in [launcher.pid or 0, *pids])
    assert all(kill_module_processes(fleet.state_dir(d)) == [] for d in ids)
    gone = read_stat(launcher.pid or 0)
    assert gone is None or gone.dead

"""Three `edgewise-agent` processes against a real Mosquitto and registry, each running a real module."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgewise.simulators import (
    DeviceSettings,
    FleetObserver,
    ProcessFleet,
    kill_module_processes,
    signed_manifest,
)

from tests.runtime.agent.conftest import Broker, Signer
from tests.runtime.agent.e2e.images import ImageFactory, PushedImage

pytestmark = pytest.mark.slow
SETTINGS = DeviceSettings(keepalive=2.0, reconnect_min=0.2, reconnect_max=1.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fleet(broker: Broker, signer: Signer, images: ImageFactory, tmp_path: Path) -> Iterator[ProcessFleet]:
    # Devices made through a registrar: each id gets its broker account as the fleet is built.
    with ProcessFleet(
        broker_port=broker.port,
        devices=broker.add_device,
        count=3,
        prefix="proc",
        workspace_key=signer.public_text,
        work_dir=tmp_path / "fleet",
        registry=f"http://{images.registry_host}",
        settings=SETTINGS,
        proxied=True,
    ) as running:
        yield running


def module(image: PushedImage) -> dict[str, Any]:
    return {
        "type": "oci",
        "image": image.reference,
        "status": "running",
        "restartPolicy": "always",
        "settings": {"httpPort": free_port(), "grpcPort": free_port(), "host": "127.0.0.1", "startupTimeoutSecs": 60},
    }


def running_module(state: dict[str, Any] | None, image: PushedImage) -> bool:
    entry = ((state or {}).get("modules") or {}).get("scale") or {}
    return entry.get("runtimeStatus") == "running" and entry.get("imageDigest") == image.digest


def test_each_process_runs_the_deployed_module_and_survives_kill_9(
    fleet: ProcessFleet, observer: FleetObserver, signer: Signer, images: ImageFactory
) -> None:
    image = images.image(1)
    ids = fleet.device_ids
    observer.wait_status(ids, "online", timeout=30)
    observer.publish_desired(
        {d: signed_manifest(signer.key, device_id=d, version=1, modules={"scale": module(image)}) for d in ids}
    )
    observer.wait_applied(ids, 1, timeout=120)
    for device in ids:
        state, _ = observer.snapshot(device)
        assert running_module(state, image), state
        assert state is not None and state["agent"]["stateDir"] == str(fleet.state_dir(device))

    victim = ids[0]
    fleet.kill_device(victim)
    observer.wait_status([victim], "offline", timeout=20)  # no clean stop: the broker published the will
    assert not fleet.running(victim)
    fleet.start_device(victim)
    observer.wait_status([victim], "online", timeout=30)
    observer.wait(
        lambda: running_module(observer.reported.get(victim), image) and fleet.agent(victim).starts == 2,
        timeout=30,
        what="the restarted agent to adopt its module",
    )
    assert all(fleet.proxy(d).stats().accepted >= 1 for d in ids)
    fleet.close()  # stops the agents and the modules they leave running by design
    assert all(kill_module_processes(fleet.state_dir(d)) == [] for d in ids)


def test_a_process_cut_off_the_network_catches_up_and_close_leaves_nothing_running(
    fleet: ProcessFleet, observer: FleetObserver, signer: Signer, tmp_path: Path
) -> None:
    ids = fleet.device_ids
    observer.wait_status(ids, "online", timeout=30)
    cut = ids[2]
    fleet.proxy(cut).cut()
    observer.wait_status([cut], "offline", timeout=20)
    observer.publish_desired({d: signed_manifest(signer.key, device_id=d, version=1) for d in ids})
    observer.wait_applied(ids[:2], 1, timeout=30)
    fleet.proxy(cut).restore()
    observer.wait_applied([cut], 1, timeout=30)

    fleet.pause_device(ids[1])  # frozen with its connection open: the keep-alive runs out
    observer.wait_status([ids[1]], "offline", timeout=20)
    fleet.resume_device(ids[1])
    observer.wait_status([ids[1]], "online", timeout=30)

    fleet.stop_device(ids[0])
    observer.wait_status([ids[0]], "offline", timeout=20)
    fleet.close()
    assert not any(fleet.running(d) for d in ids)
    assert all(kill_module_processes(fleet.state_dir(d)) == [] for d in ids)

"""Twenty agents in one process against a real Mosquitto: signed manifests, cut and stalled links, a broker
restart and a slow network, each observed only through what the agents publish."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from edgewise.runtime.agent.slotfile import SlotFile
from edgewise.runtime.agent.state import MANIFEST
from edgewise.simulators import (
    DeviceSettings,
    FleetObserver,
    InProcessFleet,
    device_ids,
    register_devices,
    restart_broker,
    signed_manifest,
)

from tests.runtime.agent.conftest import Broker, Signer

pytestmark = pytest.mark.slow
SIZE = 20
# keepalive 2 s: the broker gives up on a silent device after 3 s and publishes its will.
SETTINGS = DeviceSettings(keepalive=2.0, reconnect_min=0.2, reconnect_max=1.0, sandbox="none")


@pytest.fixture
def fleet(broker: Broker, signer: Signer, tmp_path: Path) -> Iterator[InProcessFleet]:
    devices = register_devices(broker.manager, device_ids(SIZE))
    with InProcessFleet(
        broker_port=broker.port,
        devices=devices,
        workspace_key=signer.public_text,
        work_dir=tmp_path / "fleet",
        settings=SETTINGS,
        proxied=True,
    ) as running:
        yield running
    assert not running.failures, running.failures


def publish(observer: FleetObserver, signer: Signer, ids: list[str], version: int) -> None:
    observer.publish_desired({d: signed_manifest(signer.key, device_id=d, version=version) for d in ids})


def test_every_device_applies_its_signed_manifest(
    fleet: InProcessFleet, observer: FleetObserver, signer: Signer
) -> None:
    observer.wait_status(fleet.device_ids, "online", timeout=60)
    publish(observer, signer, fleet.device_ids, 1)
    observer.wait_applied(fleet.device_ids, 1, timeout=60)
    for device in fleet.device_ids:
        state, _ = observer.snapshot(device)
        assert state is not None
        assert state["agent"]["stateDir"] == str(fleet.state_dir(device))
        assert state["modules"] == {}
        assert SlotFile(fleet.state_dir(device) / MANIFEST).read() is not None
    assert sorted(fleet.connected()) == fleet.device_ids


def test_a_cut_device_goes_offline_and_catches_up_when_restored(
    fleet: InProcessFleet, observer: FleetObserver, signer: Signer
) -> None:
    observer.wait_status(fleet.device_ids, "online", timeout=60)
    publish(observer, signer, fleet.device_ids, 1)
    observer.wait_applied(fleet.device_ids, 1, timeout=60)
    cut, others = fleet.device_ids[0], fleet.device_ids[1:]

    fleet.proxy(cut).cut()
    observer.wait_status([cut], "offline", timeout=20)  # the broker published its will
    publish(observer, signer, fleet.device_ids, 2)  # reaches the others now, the cut one only later
    observer.wait_applied(others, 2, timeout=60)
    state, status = observer.snapshot(cut)
    assert status == "offline"
    assert state is not None and state["lastDesiredVersion"] == 1

    fleet.proxy(cut).restore()
    observer.wait_status([cut], "online", timeout=30)
    observer.wait_applied([cut], 2, timeout=30)


def test_a_stalled_link_is_declared_offline_after_the_keepalive(
    fleet: InProcessFleet, observer: FleetObserver, signer: Signer
) -> None:
    observer.wait_status(fleet.device_ids, "online", timeout=60)
    stalled = fleet.device_ids[1]
    fleet.proxy(stalled).stall()
    # No connection closes: only the missing keep-alive makes the broker publish the will.
    observer.wait_status([stalled], "offline", timeout=20)
    assert fleet.proxy(stalled).stats().reset == 0
    publish(observer, signer, [stalled], 1)
    fleet.proxy(stalled).restore()
    observer.wait_status([stalled], "online", timeout=40)
    observer.wait_applied([stalled], 1, timeout=30)


def test_after_a_broker_restart_every_device_is_back_and_applies_a_new_manifest(
    fleet: InProcessFleet, observer: FleetObserver, signer: Signer, broker: Broker
) -> None:
    observer.wait_status(fleet.device_ids, "online", timeout=60)
    publish(observer, signer, fleet.device_ids, 1)
    observer.wait_applied(fleet.device_ids, 1, timeout=60)
    connects = observer.connects

    fleet.on_net(restart_broker(broker.manager, downtime=1.0), timeout=60)
    observer.wait(lambda: observer.connects > connects, timeout=30, what="the observer to reconnect")
    publish(observer, signer, fleet.device_ids, 2)
    observer.wait_applied(fleet.device_ids, 2, timeout=90)
    observer.wait_status(fleet.device_ids, "online", timeout=30)
    assert sorted(fleet.connected()) == fleet.device_ids
    for device in fleet.device_ids:
        assert fleet.proxy(device).stats().accepted >= 2, f"{device} never reconnected"


def test_a_slow_network_still_converges(fleet: InProcessFleet, observer: FleetObserver, signer: Signer) -> None:
    observer.wait_status(fleet.device_ids, "online", timeout=60)
    slow = fleet.device_ids[:5]
    for device in slow:
        fleet.proxy(device).delay(0.3)
        fleet.proxy(device).throttle(20_000)
    publish(observer, signer, fleet.device_ids, 1)
    observer.wait_applied(fleet.device_ids, 1, timeout=60)
    for device in slow:
        assert fleet.proxy(device).stats().reset == 0

"""Devices added through the workspace use only their own topics, and a removed device cannot connect: checked
with real paho clients against the broker `edgewise up` manages (Mosquitto, and the embedded one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from edgewise.cloud.broker import find_mosquitto
from edgewise.runtime.agent.config import Connection

from tests.cloud.broker.mqtt import Client
from tests.cloud.cli.cli import edgewise
from tests.cloud.devices.conftest import add_device, unique
from tests.cloud.service import WorkspaceProcess, start_workspace
from tests.support import wait_until

ROOT = "edgewise/v1/devices"
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


@pytest.fixture(scope="module", params=[pytest.param("mosquitto", marks=needs_mosquitto), "embedded"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcess]:
    started = start_workspace(tmp_path_factory.mktemp(request.param) / "data", "--broker", request.param)
    assert f"edgewise MQTT broker: {request.param if request.param == 'mosquitto' else 'embedded'}" in started.log()
    yield started
    started.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def connect(clients: list[Client], port: int, username: str, password: str) -> Client:
    client = Client(port, username, password)
    reason = client.connect()
    assert not reason.is_failure, f"{username} was refused: {reason}"
    clients.append(client)
    return client


def as_device(clients: list[Client], device: Connection) -> Client:
    return connect(clients, device.broker_port, device.device_id, device.secret)


def as_service(clients: list[Client], service: WorkspaceProcess, port: int) -> Client:
    password = (service.data_dir / "broker" / "service-password").read_text().strip()
    return connect(clients, port, "edgewise-service", password)


def login_refused(port: int, username: str, password: str) -> bool:
    client = Client(port, username, password)
    try:
        return bool(client.connect().is_failure)
    except OSError:
        return True  # a broker may close the connection instead of answering
    finally:
        client.close()


def test_a_device_cannot_read_another_devices_desired_state(service: WorkspaceProcess, clients: list[Client]) -> None:
    a, b = add_device(service, unique("a")), add_device(service, unique("b"))
    cloud = as_service(clients, service, a.broker_port)
    cloud.publish(f"{ROOT}/{b.device_id}/desired", b"manifest-of-b", retain=True)
    device = as_device(clients, a)
    device.subscribe(f"{ROOT}/{a.device_id}/desired")
    for foreign in (f"{ROOT}/{b.device_id}/desired", f"{ROOT}/+/desired", f"{ROOT}/#", "#"):
        device.subscribe(foreign)  # refused, or granted without delivering what the ACL forbids (Mosquitto)
    cloud.publish(f"{ROOT}/{b.device_id}/desired", b"newer-manifest-of-b", retain=True)
    cloud.publish(f"{ROOT}/{a.device_id}/desired", b"manifest-of-a", retain=True)
    before = device.received_before(f"{ROOT}/{a.device_id}/desired", b"manifest-of-a")
    assert [topic for topic, _, _ in before if b.device_id in topic] == []
    # B itself gets its retained desired state: the messages A did not see were there to be seen.
    other = as_device(clients, b)
    other.subscribe(f"{ROOT}/{b.device_id}/desired")
    assert other.expect(f"{ROOT}/{b.device_id}/desired")[1] == b"newer-manifest-of-b"


def test_a_device_cannot_write_another_devices_reported_state(service: WorkspaceProcess, clients: list[Client]) -> None:
    a, b = add_device(service, unique("a")), add_device(service, unique("b"))
    cloud = as_service(clients, service, a.broker_port)
    cloud.subscribe(f"{ROOT}/+/reported")
    device = as_device(clients, a)
    device.publish(f"{ROOT}/{b.device_id}/reported", b'{"forged": true}', retain=True)
    device.publish(f"{ROOT}/{a.device_id}/reported", b'{"lastDesiredVersion": 1}', retain=True)
    before = cloud.received_before(f"{ROOT}/{a.device_id}/reported", b'{"lastDesiredVersion": 1}')
    assert [topic for topic, _, _ in before if b.device_id in topic] == []
    # Nothing forged was retained for B either: a new subscriber sees only what B itself publishes.
    as_device(clients, b).publish(f"{ROOT}/{b.device_id}/reported", b'{"lastDesiredVersion": 0}', retain=True)
    late = as_service(clients, service, a.broker_port)
    late.subscribe(f"{ROOT}/{b.device_id}/reported")
    assert late.expect(f"{ROOT}/{b.device_id}/reported")[1] == b'{"lastDesiredVersion": 0}'


def test_a_removed_device_can_no_longer_connect(service: WorkspaceProcess, clients: list[Client]) -> None:
    device = add_device(service, unique("removed"))
    as_device(clients, device).close()
    edgewise("device", "remove", device.device_id, "--yes", env=service.env)
    assert login_refused(device.broker_port, device.device_id, device.secret)
    assert not login_refused(device.broker_port, "edgewise-service", _service_password(service))


def test_the_broker_closes_a_removed_devices_open_connection(service: WorkspaceProcess, clients: list[Client]) -> None:
    device = add_device(service, unique("connected"))
    connection = as_device(clients, device)
    with service.client() as client:
        client.remove_device(device.device_id)
    # The paho connection of the shared test helper; it notices the broker closing the socket.
    wait_until(lambda: not connection._client.is_connected(), what="the broker to close the removed connection")


def test_a_wrong_secret_or_no_account_is_refused(service: WorkspaceProcess) -> None:
    device = add_device(service, unique("wrong"))
    assert login_refused(device.broker_port, device.device_id, device.secret + "x")
    assert login_refused(device.broker_port, unique("never-added"), device.secret)


def _service_password(service: WorkspaceProcess) -> str:
    return (service.data_dir / "broker" / "service-password").read_text().strip()

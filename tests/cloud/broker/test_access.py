"""Both brokers enforce the same accounts and topic rules, checked with real paho clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from edgewise.cloud.broker import BrokerManager

from tests.cloud.broker.conftest import BrokerFactory, needs_mosquitto
from tests.cloud.broker.mqtt import Client, LoopThread, refused
from tests.support import wait_until

ROOT = "edgewise/v1"


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def connect(broker: BrokerManager, clients: list[Client], username: str | None, password: str | None) -> Client:
    client = Client(broker.port, username, password)
    reason = client.connect()
    assert not reason.is_failure, f"{username} was refused: {reason}"
    clients.append(client)
    return client


def service(broker: BrokerManager, clients: list[Client]) -> Client:
    creds = broker.service_credentials
    return connect(broker, clients, creds.username, creds.password)


def login_refused(broker: BrokerManager, username: str | None, password: str | None) -> bool:
    client = Client(broker.port, username, password)
    try:
        return bool(client.connect().is_failure)
    except (ConnectionError, OSError):
        return True  # some brokers close the connection instead of answering
    finally:
        client.close()


def test_service_account_publishes_and_subscribes_under_the_root(broker: BrokerManager, clients: list[Client]) -> None:
    listener = service(broker, clients)
    assert not refused(listener.subscribe(f"{ROOT}/#"))
    talker = service(broker, clients)
    talker.publish(f"{ROOT}/devices/d1/desired", b"manifest")
    talker.publish(f"{ROOT}/fleet/announcements", b"hello")
    assert listener.expect(f"{ROOT}/devices/d1/desired")[1] == b"manifest"
    assert listener.expect(f"{ROOT}/fleet/announcements")[1] == b"hello"


def test_device_uses_its_own_topics(broker: BrokerManager, clients: list[Client]) -> None:
    broker.add_device("d1", "pw-d1")
    cloud = service(broker, clients)
    cloud.subscribe(f"{ROOT}/devices/+/reported")
    device = connect(broker, clients, "d1", "pw-d1")
    assert not refused(device.subscribe(f"{ROOT}/devices/d1/#"))
    cloud.publish(f"{ROOT}/devices/d1/desired", b'{"version": 1}', retain=True)
    assert device.expect(f"{ROOT}/devices/d1/desired")[1] == b'{"version": 1}'
    device.publish(f"{ROOT}/devices/d1/reported", b"ok")
    assert cloud.expect(f"{ROOT}/devices/d1/reported")[1] == b"ok"


def test_device_is_refused_other_topics(broker: BrokerManager, clients: list[Client]) -> None:
    broker.add_device("d1", "pw-d1")
    broker.add_device("d2", "pw-d2")
    cloud = service(broker, clients)
    assert not refused(cloud.subscribe(f"{ROOT}/#"))
    device = connect(broker, clients, "d1", "pw-d1")
    granted = []
    for foreign in (f"{ROOT}/devices/d2/#", f"{ROOT}/devices/+/desired", "#", f"{ROOT}/#"):
        if not refused(device.subscribe(foreign)):
            granted.append(foreign)  # Mosquitto grants the filter but never delivers what the ACL forbids
    assert broker.kind != "embedded" or not granted
    device.publish(f"{ROOT}/devices/d2/reported", b"forged")
    device.publish("elsewhere/topic", b"outside")
    device.publish(f"{ROOT}/devices/d1/reported", b"marker")
    # Delivery keeps order per publisher: everything d1 got through arrived before its own marker.
    before = cloud.received_before(f"{ROOT}/devices/d1/reported", b"marker")
    assert all(payload not in (b"forged", b"outside") for _, payload, _ in before)
    # Nor does a device receive another device's messages, whatever it subscribed to.
    assert not refused(device.subscribe(f"{ROOT}/devices/d1/#"))
    cloud.publish(f"{ROOT}/devices/d2/desired", b"for-d2")
    cloud.publish(f"{ROOT}/devices/d1/desired", b"for-d1")
    before = device.received_before(f"{ROOT}/devices/d1/desired", b"for-d1")
    assert all(topic.startswith(f"{ROOT}/devices/d1/") for topic, _, _ in before)


def test_wrong_password_and_anonymous_are_refused(broker: BrokerManager) -> None:
    broker.add_device("d1", "pw-d1")
    assert login_refused(broker, "d1", "wrong")
    assert login_refused(broker, broker.service_credentials.username, "wrong")
    assert login_refused(broker, "nobody", "pw-d1")
    assert login_refused(broker, None, None)


def test_devices_added_and_removed_while_running(broker: BrokerManager, clients: list[Client]) -> None:
    assert login_refused(broker, "d3", "pw-d3")
    broker.add_device("d3", "pw-d3")
    device = connect(broker, clients, "d3", "pw-d3")
    assert not refused(device.subscribe(f"{ROOT}/devices/d3/#"))
    broker.add_device("d3", "new-pw")  # a new password replaces the old one
    wait_until(lambda: login_refused(broker, "d3", "pw-d3"), what="the old password to be refused")
    connect(broker, clients, "d3", "new-pw")
    assert broker.remove_device("d3")
    assert not broker.remove_device("d3")
    wait_until(lambda: login_refused(broker, "d3", "new-pw"), what="the removed device to be refused")


@needs_mosquitto
def test_retained_messages_survive_a_mosquitto_restart(
    start_broker: BrokerFactory, loop_thread: LoopThread, tmp_path: Path, clients: list[Client]
) -> None:
    data = tmp_path / "restart"
    first = start_broker("mosquitto", data)
    cloud = service(first, clients)
    cloud.publish(f"{ROOT}/devices/d1/desired", b'{"version": 7}', retain=True)
    cloud.close()
    clients.clear()
    loop_thread.run(first.stop())
    second = start_broker("mosquitto", data)
    reader = service(second, clients)
    reader.subscribe(f"{ROOT}/devices/d1/desired")
    _, payload, retained = reader.expect(f"{ROOT}/devices/d1/desired")
    assert (payload, retained) == (b'{"version": 7}', True)

"""The service's publisher against a real Mosquitto: a batch of retained manifests goes out in order and is
acknowledged as a whole; a broker that goes away fails the batch naming every topic it did not acknowledge,
and the next attempt, once the broker is back, publishes them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from edgewise.cloud.broker import BrokerManager
from edgewise.cloud.errors import ServiceUnavailableError
from edgewise.cloud.mqtt import Publisher, UnacknowledgedError, desired_topic

from tests.cloud.broker.conftest import BrokerFactory, needs_mosquitto
from tests.cloud.broker.mqtt import Client, LoopThread
from tests.runtime.agent.e2e.harness import wait_for

pytestmark = needs_mosquitto
ALL_DESIRED = "edgewise/v1/devices/+/desired"


def documents(count: int, version: int) -> dict[str, dict[str, Any]]:
    return {f"dev-{index:03d}": {"deviceId": f"dev-{index:03d}", "version": version} for index in range(count)}


def subscriber(broker: BrokerManager) -> Client:
    credentials = broker.service_credentials
    client = Client(broker.port, credentials.username, credentials.password)
    assert not client.connect().is_failure
    client.subscribe(ALL_DESIRED)
    return client


def retained(broker: BrokerManager, expected: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a new subscriber is given for each device of `expected` (waits until every device has its copy)."""
    client = subscriber(broker)
    try:
        seen: dict[str, Any] = {}
        while set(seen) != set(expected):
            topic, payload, was_retained = client.messages.get(timeout=20)
            assert was_retained
            seen[topic.split("/")[3]] = orjson.loads(payload)
        return seen
    finally:
        client.close()


@pytest.fixture
def mosquitto(start_broker: BrokerFactory) -> BrokerManager:
    return start_broker("mosquitto")


@pytest.fixture
def publisher(mosquitto: BrokerManager) -> Iterator[Publisher]:
    credentials = mosquitto.service_credentials
    started = Publisher(
        host=mosquitto.host,
        port=mosquitto.port,
        username=credentials.username,
        password=credentials.password,
        timeout=3.0,
    )
    started.start()
    yield started
    started.stop()


def test_a_batch_is_published_retained_and_in_order_per_device(mosquitto: BrokerManager, publisher: Publisher) -> None:
    live = subscriber(mosquitto)
    try:
        first, second = documents(40, version=1), documents(40, version=2)
        publisher.publish_desired_all(first)
        publisher.publish_desired_all(second)
        versions: dict[str, list[int]] = {}
        for _ in range(80):
            topic, payload, _ = live.messages.get(timeout=20)
            versions.setdefault(topic, []).append(orjson.loads(payload)["version"])
    finally:
        live.close()
    assert versions == {desired_topic(device): [1, 2] for device in first}
    assert retained(mosquitto, second) == second


def test_a_batch_the_broker_does_not_acknowledge_fails_and_the_next_attempt_publishes_it(
    mosquitto: BrokerManager, publisher: Publisher, loop_thread: LoopThread
) -> None:
    publisher.publish_desired_all(documents(20, version=1))
    loop_thread.run(mosquitto.stop())
    second = documents(20, version=2)
    with pytest.raises(UnacknowledgedError) as failed:
        publisher.publish_desired_all(second)
    assert isinstance(failed.value, ServiceUnavailableError)  # the API answers 503, as for any broker outage
    assert set(failed.value.topics) == {desired_topic(device) for device in second}
    assert "did not acknowledge 20 of 20" in str(failed.value) and desired_topic("dev-000") in str(failed.value)

    loop_thread.run(mosquitto.start())  # the same port and persistence file
    wait_for(lambda: publisher.connected, timeout=30, what="the publisher to reconnect")
    publisher.publish_desired_all(second)
    assert retained(mosquitto, second) == second


def test_clearing_a_manifest_removes_the_retained_copy(mosquitto: BrokerManager, publisher: Publisher) -> None:
    publisher.publish_desired_all(documents(3, version=5))
    publisher.clear_desired("dev-001")
    client = subscriber(mosquitto)
    try:
        marker = desired_topic("marker")
        publisher.publish(marker, b"end", retain=False)  # retained copies come before any live message
        before = client.received_before(marker, b"end")
    finally:
        client.close()
    assert sorted(topic for topic, _, was_retained in before if was_retained) == [
        desired_topic("dev-000"),
        desired_topic("dev-002"),
    ]

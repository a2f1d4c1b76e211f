"""Fixtures of the simulator tests: the agent tests' real Mosquitto and signing key, and a fleet observer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from edgewise.simulators import FleetObserver

from tests.runtime.agent.conftest import Broker, broker, signer
from tests.runtime.agent.e2e.conftest import e2e_registry, images

__all__ = ["broker", "e2e_registry", "images", "observer", "signer"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: an end-to-end test that takes more than a few seconds")


@pytest.fixture
def observer(broker: Broker) -> Iterator[FleetObserver]:
    """The workspace's view of every device on the test's broker, on the service account."""
    creds = broker.manager.service_credentials
    with FleetObserver(port=broker.port, username=creds.username, password=creds.password) as watcher:
        yield watcher

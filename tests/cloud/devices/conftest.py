"""Fixtures of the device tests: a real `edgewise up` with a managed Mosquitto, and devices added by the CLI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from edgewise.cloud.broker import find_mosquitto
from edgewise.runtime.agent.config import Connection, parse_connection_string

from tests.cloud.service import WorkspaceProcess, start_workspace


@pytest.fixture(scope="module")
def mosquitto_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcess]:
    """One service with a managed Mosquitto, shared by a test module: use unique device ids per test."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    service = start_workspace(tmp_path_factory.mktemp("devices") / "data", "--broker", "mosquitto")
    yield service
    service.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def add_device(service: WorkspaceProcess, device_id: str, *tags: str) -> Connection:
    """Add a device through the client (tests of the CLI itself call `edgewise device add`), and parse its
    connection string as the agent does."""
    with service.client() as client:
        added = client.add_device(device_id, tags=dict(tag.split("=", 1) for tag in tags))
    return parse_connection_string(added.connection_string)

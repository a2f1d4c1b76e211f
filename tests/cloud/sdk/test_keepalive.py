"""The client's kept-alive connection against a real service: reuse, a socket the server closed while idle,
and a service that went away."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from edgewise.cloud.client import Client
from edgewise.cloud.errors import ServiceUnavailableError

from tests.cloud.service import WorkspaceProcess
from tests.support import free_port

SERVER_KEEP_ALIVE_S = 5  # uvicorn's default: an idle connection is closed by the service after this


def test_calls_reuse_one_connection_and_survive_an_idle_close(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"keep-alive")
    with workspace.client() as client:
        first = client.register_model(name="keepalive-model", file=weights)
        socket_before = client._fast._conn.sock
        assert client.health()["status"] == "ok"
        assert client._fast._conn.sock is socket_before
        time.sleep(SERVER_KEEP_ALIVE_S + 1)
        # A POST is not repeated blindly: the closed socket must be noticed before the request is sent.
        second = client.register_model(name="keepalive-model", file=weights)
    assert second.version == first.version + 1
    with workspace.client() as client:
        assert [m.version for m in client.list_models(name="keepalive-model")] == [second.version, first.version]


def test_a_closed_port_is_service_unavailable() -> None:
    with Client(url=f"http://127.0.0.1:{free_port()}", token="x") as client, pytest.raises(ServiceUnavailableError):
        client.health()

"""A real `edgewise-agent` against a real `edgewise up`: the health records it collects from /proc reach the
store through the broker and the ingest, and its status and reported state show in `device show`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from edgewise.cloud.broker import SERVICE_USERNAME
from edgewise.runtime.agent.config import parse_connection_string
from edgewise.runtime.agent.signing import load_private_key, sign_document

from tests.cloud.broker.mqtt import Client
from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.service import WorkspaceProcess, start_workspace
from tests.cloud.telemetry.device import ROOT
from tests.runtime.agent.e2e.harness import AgentProcess, manifest_document
from tests.support import wait_until

TELEMETRY = {"intervalSecs": 1, "timeToLiveSecs": 3600, "maxBytes": 16 * 1024 * 1024, "sampleRate": 0.0}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[WorkspaceProcess]:
    started = start_workspace(tmp_path / "data", "--broker", "embedded")
    yield started
    started.stop()


def test_an_agents_health_telemetry_reaches_the_store(service: WorkspaceProcess, tmp_path: Path) -> None:
    device_id = f"agent-{uuid.uuid4().hex[:8]}"
    text = edgewise_json("device", "add", device_id, env=service.env)["connection_string"]
    port = parse_connection_string(text).broker_port
    # The connection string exactly as `device add` printed it: broker, secret, workspace key and registry.
    agent = AgentProcess(connection=text, state_dir=tmp_path / "state", log_path=tmp_path / "agent.log")
    version = int(time.time())  # newer than anything the workspace may have published for the new device
    key = load_private_key((service.data_dir / "keys" / "manifest-signing.key").read_bytes())
    manifest = sign_document(
        manifest_document(device_id=device_id, version=version, modules={}, telemetry=TELEMETRY), key
    )
    try:
        agent.start()
        _publish_desired(service, port, device_id, orjson.dumps(manifest))
        with service.client() as client:
            records = wait_until(
                lambda: client.device_telemetry(device_id, kind="health"), timeout=60, what="health records"
            )
            data = records[-1].data
            assert data["memoryTotalBytes"] > 0 and data["diskTotalBytes"] >= data["diskFreeBytes"] > 0
            assert 0 <= data["cpuPercent"] <= 100 * 1024
            device = wait_until(
                lambda: (d := client.get_device(device_id)).reported_version == version and d,
                timeout=30,
                what="the agent to report the manifest applied",
            )
            assert device.status == "online" and device.last_seen_at is not None
            health = next(d for d in client.fleet_health() if d.id == device_id)
            assert health.online and health.disk_free_bytes is not None and health.memory_total_bytes
        assert "online" in edgewise("device", "show", device_id, env=service.env).stdout
        agent.stop()
        with service.client() as client:
            wait_until(lambda: client.get_device(device_id).status == "offline", what="the agent's clean stop")
    finally:
        agent.cleanup()


def _publish_desired(service: WorkspaceProcess, port: int, device_id: str, payload: bytes) -> None:
    password = (service.data_dir / "broker" / "service-password").read_text().strip()
    cloud = Client(port, SERVICE_USERNAME, password)
    assert not cloud.connect().is_failure
    try:
        cloud.publish(f"{ROOT}/{device_id}/desired", payload, retain=True)
    finally:
        cloud.close()

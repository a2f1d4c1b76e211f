"""The MQTT ingest of a real `edgewise up`: a device added with the CLI speaks MQTT with its own credentials, and
its state and telemetry reach the store (without duplicates), `edgewise telemetry`, `device health` and
`device show`."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from edgewise.cloud.broker import SERVICE_USERNAME, find_mosquitto
from edgewise.cloud.ingest.records import INGEST_KEY
from edgewise.runtime.agent.config import parse_connection_string

from tests.cloud.broker.mqtt import Client
from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.service import WorkspaceProcess, start_workspace
from tests.cloud.telemetry.device import ROOT, DeviceClient, health, scoring
from tests.support import wait_until

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


@pytest.fixture(scope="module", params=[pytest.param("mosquitto", marks=needs_mosquitto), "embedded"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcess]:
    started = start_workspace(tmp_path_factory.mktemp(request.param) / "data", "--broker", request.param)
    yield started
    started.stop()


@pytest.fixture
def device(service: WorkspaceProcess) -> Iterator[DeviceClient]:
    device_id = f"cam-{uuid.uuid4().hex[:8]}"
    added = edgewise_json("device", "add", device_id, "--tag", "site=berlin", env=service.env)
    client = DeviceClient(parse_connection_string(added["connection_string"])).connect()
    yield client
    client.close()


def test_state_and_telemetry_reach_the_store_once(service: WorkspaceProcess, device: DeviceClient) -> None:
    device_id = device.device_id
    now = time.time()
    device.publish("status", b"online", retain=True)
    modules = {"iris": {"runtimeStatus": "running", "rollback": None, "endpoints": {}},
               "broken": {"runtimeStatus": "backoff", "statusDescription": "exit 1", "rollback": None}}  # fmt: skip
    device.report({"lastDesiredVersion": 0, "lastDesiredStatus": {"code": 200, "description": "applied"},
                   "modules": modules})  # fmt: skip
    device.telemetry([health(1, now - 5), health(2, now - 4), scoring(3, now - 4, "iris", 40, 2, 4.0)])
    device.telemetry([scoring(3, now - 4, "iris", 40, 2, 4.0), health(4, now - 3)], compress=False)
    device.telemetry(
        [health(7, now - 1, cpu=55.0, disk_free=2**30), health(6, now - 2)], dropped={"ttl": 3, "maxBytes": 0}
    )
    device.telemetry([health(5, now - 2.5)], dropped={"ttl": 3, "maxBytes": 0})

    with service.client() as client:
        stored = wait_until(
            lambda: len(records := client.device_telemetry(device_id)) == 7 and records,
            what="seven telemetry records in the store",
        )
        assert [r.seq for r in stored] == [1, 2, 3, 4, 5, 6, 7]
        shown = client.get_device(device_id)
        assert shown.status == "online" and shown.last_seen_at is not None
        assert shown.reported is not None and shown.reported["lastDesiredStatus"]["code"] == 200
        counters = wait_until(lambda: client.get_device(device_id).reported[INGEST_KEY], what="ingest counters")  # type: ignore[index]
        assert counters["duplicates"] == 1 and counters["records"] == 7
        assert counters["dropped"] == {"ttl": 3, "maxBytes": 0}

    listed = edgewise_json("telemetry", device_id, "--since", "10m", env=service.env)
    assert [r["seq"] for r in listed] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["seq"] for r in edgewise_json("telemetry", device_id, "--kind", "scoring", env=service.env)] == [3]
    assert [r["seq"] for r in edgewise_json("telemetry", device_id, "--limit", "2", env=service.env)] == [6, 7]
    table = edgewise("telemetry", device_id, "--name", "cpuPercent", env=service.env).stdout
    assert "cpuPercent" in table and "55.0" in table
    rates = edgewise("telemetry", device_id, "--name", "requestsPerSecond", env=service.env).stdout
    assert "requestsPerSecond" in rates and "4.0" in rates and "scoring" in rates and "health" not in rates

    fleet = {d["id"]: d for d in edgewise_json("device", "health", "--tag", "site=berlin", env=service.env)}
    mine = fleet[device_id]
    assert mine["online"] is True and mine["cpu_percent"] == 55.0 and mine["disk_free_bytes"] == 2**30
    assert mine["requests_per_second"] == 4.0 and mine["error_rate"] == pytest.approx(2 / 40)
    assert [m["module"] for m in mine["failing_modules"]] == ["broken"]
    summary = edgewise("device", "health", env=service.env).stdout
    assert device_id in summary and "broken (backoff)" in summary and "online" in summary


def test_device_show_follows_online_and_offline(service: WorkspaceProcess, device: DeviceClient) -> None:
    device.publish("status", b"online", retain=True)
    wait_until(
        lambda: "online" in edgewise("device", "show", device.device_id, env=service.env).stdout,
        what="device show to say online",
    )
    first_seen = edgewise_json("device", "show", device.device_id, env=service.env)["last_seen_at"]
    assert first_seen is not None
    device.publish("status", b"offline", retain=True)  # what the broker publishes as the device's last will
    wait_until(
        lambda: "offline" in edgewise("device", "show", device.device_id, env=service.env).stdout,
        what="device show to say offline",
    )
    assert edgewise_json("device", "show", device.device_id, env=service.env)["status"] == "offline"


def test_the_last_will_marks_a_vanished_device_offline(service: WorkspaceProcess, device: DeviceClient) -> None:
    device.publish("status", b"online", retain=True)
    with service.client() as client:
        wait_until(lambda: client.get_device(device.device_id).status == "online", what="the device online")
        connection = device._client.socket()
        assert isinstance(connection, socket.socket)
        connection.shutdown(socket.SHUT_RDWR)  # the link drops without a DISCONNECT: the broker sends the will
        wait_until(lambda: client.get_device(device.device_id).status == "offline", what="the will to arrive")


def test_messages_of_unknown_devices_and_bad_payloads_are_ignored(
    service: WorkspaceProcess, device: DeviceClient
) -> None:
    cloud = Client(device.connection.broker_port, SERVICE_USERNAME, _service_password(service))
    assert not cloud.connect().is_failure
    try:  # only the service account may publish on a topic of a device that does not exist
        cloud.publish(f"{ROOT}/ghost-{device.device_id}/telemetry", b'{"records": [{"seq": 1}]}')
        cloud.publish(f"{ROOT}/ghost-{device.device_id}/status", b"online", retain=True)
    finally:
        cloud.close()
    device.publish("telemetry", b"\x00not zlib")
    device.publish("status", b"sleeping")
    device.telemetry([{"seq": 0, "ts": 1.0, "kind": "health"}, health(1, time.time())])
    with service.client() as client:
        records = wait_until(lambda: client.device_telemetry(device.device_id), what="the one valid record")
        assert [r.seq for r in records] == [1]
        assert client.get_device(device.device_id).status is None
    assert "ignored a telemetry message" in service.log()


def test_ingest_rate(service: WorkspaceProcess, device: DeviceClient, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timing assertion: prints records per second from the first publish until the last record is
    stored, with the agent's batch size (5000 records, compressed)."""
    batch, batches = 5000, 20
    start = time.time()
    payloads = [[health(index * batch + i + 1, start + i * 0.001) for i in range(batch)] for index in range(batches)]
    began = time.perf_counter()
    for records in payloads:
        device.telemetry(records)
    with service.client() as client:
        wait_until(
            lambda: (
                client.device_telemetry(device.device_id, limit=1)[-1].seq == batch * batches
                if client.device_telemetry(device.device_id, limit=1)
                else False
            ),
            timeout=120,
            what="every record stored",
        )
        elapsed = time.perf_counter() - began
        counters = client.get_device(device.device_id).reported[INGEST_KEY]  # type: ignore[index]
    assert counters["records"] == batch * batches and counters["duplicates"] == 0
    with capsys.disabled():
        print(f"\n[{service.data_dir.parent.name}] MQTT ingest: {batch * batches / elapsed:,.0f} records/s")


def _service_password(service: WorkspaceProcess) -> str:
    return (service.data_dir / "broker" / "service-password").read_text().strip()

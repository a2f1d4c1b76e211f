"""The real `edgewise-agent` against a real Mosquitto: reported state, online/offline, refusals, ping."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.runtime.agent.signing import sign_document

from tests.cloud.broker.mqtt import Client
from tests.runtime.agent.conftest import Broker, Signer, topic
from tests.support import HOST, free_port

AGENT = shutil.which("edgewise-agent", path=str(Path(sys.executable).parent)) or "edgewise-agent"
DEVICE = "cam-core"
DEADLINE = 30.0


def manifest(version: int, signer_key: Ed25519PrivateKey) -> bytes:
    document = {
        "schemaVersion": "1",
        "deviceId": DEVICE,
        "version": version,
        "issuedAt": "2026-11-27T05:00:00Z",
        "modules": {},
        "telemetry": {"intervalSecs": 1, "maxBytes": 1_000_000},
    }
    return json.dumps(sign_document(document, signer_key)).encode()


class Inbox:
    """Every message the service client received, searchable in arrival order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: list[tuple[str, bytes, bool]] = []

    def wait(self, wanted: str, check: Any = lambda payload: True, *, after: int = 0) -> tuple[int, bytes]:
        """The first message on `wanted` at or after index `after` whose payload satisfies `check`."""
        end = time.monotonic() + DEADLINE
        index = after
        while True:
            while index < len(self.seen):
                name, payload, _ = self.seen[index]
                if name == wanted and check(payload):
                    return index, payload
                index += 1
            try:
                self.seen.append(self.client.messages.get(timeout=max(0.1, end - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no matching message on {wanted} within {DEADLINE}s; got {self.seen}")

    def reported(self, check: Any, *, after: int = 0) -> tuple[int, dict[str, Any]]:
        index, payload = self.wait(topic(DEVICE, "reported"), lambda p: check(json.loads(p)), after=after)
        return index, json.loads(payload)


def read_lines(process: subprocess.Popen[bytes]) -> queue.Queue[str]:
    """The process's output, line by line, read in a thread (so a test can wait with a timeout)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put(raw.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.fixture
def agent(broker: Broker, signer: Signer, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    secret = broker.add_device(DEVICE)
    connection = f"Broker={broker.url};DeviceId={DEVICE};Secret={secret};WorkspaceKey={signer.public_text}"
    metrics_port = free_port()
    log_path = tmp_path / "agent.log"
    env = {**os.environ, "EDGEWISE_CONNECTION_STRING": connection}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                AGENT,
                "--state-dir",
                str(tmp_path / "state"),
                "--sandbox",
                "none",
                "--metrics-port",
                str(metrics_port),
                "--reconcile-interval",
                "1",
                "--health-interval",
                "1",
                "--log-level",
                "debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield process, log_path, metrics_port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_agent_reports_refuses_forgeries_and_answers_ping(
    broker: Broker, signer: Signer, agent: tuple[subprocess.Popen[bytes], Path, int]
) -> None:
    process, log_path, metrics_port = agent
    service = broker.service_client()
    try:
        for name in ("reported", "status", "responses/+"):
            service.subscribe(topic(DEVICE, name))
        service.publish(topic(DEVICE, "desired"), manifest(3, signer.key), retain=True)

        inbox = Inbox(service)
        at, state = inbox.reported(lambda s: s["lastDesiredVersion"] == 3)
        assert state["lastDesiredStatus"] == {"code": 200, "description": "applied"}
        assert state["modules"] == {} and state["rejected"] is None
        assert state["agent"]["sandbox"] == "none" and state["agent"]["stateDir"].endswith("state")
        assert set(state["telemetry"]) == {"lastSequence", "spooled", "dropped"}
        inbox.wait(topic(DEVICE, "status"), lambda p: p == b"online")

        forged = manifest(4, Ed25519PrivateKey.generate())
        service.publish(topic(DEVICE, "desired"), forged, retain=True)
        at, refused = inbox.reported(lambda s: s["rejected"] is not None, after=at)
        assert refused["rejected"]["code"] == "bad-signature" and refused["rejected"]["version"] == 4
        assert refused["lastDesiredVersion"] == 3 and refused["lastDesiredStatus"]["code"] == 400

        service.publish(topic(DEVICE, "desired"), manifest(4, signer.key), retain=True)
        at, state = inbox.reported(lambda s: s["lastDesiredVersion"] == 4, after=at)
        assert state["rejected"] is None and state["lastDesiredStatus"]["code"] == 200

        service.publish(topic(DEVICE, "commands/ping"), json.dumps({"id": "p-1", "args": {}}).encode())
        _, payload = inbox.wait(topic(DEVICE, "responses/p-1"))
        answer = json.loads(payload)
        assert answer["status"] == 200 and answer["result"]["pong"] is True

        with urllib.request.urlopen(f"http://{HOST}:{metrics_port}/metrics", timeout=10) as response:
            assert b"edgewise_agent_memory_rss_bytes" in response.read()

        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE) == 0
        inbox.wait(topic(DEVICE, "status"), lambda p: p == b"offline", after=at)
    finally:
        service.close()
    log = log_path.read_text()
    assert f"edgewise-agent {DEVICE}: state " in log and "sandbox none, broker mqtt://" in log
    assert f"edgewise-agent metrics on http://127.0.0.1:{metrics_port}/metrics" in log
    assert "Traceback" not in log, log


def test_agent_converges_on_the_saved_manifest_without_a_broker(signer: Signer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "manifest.json").write_bytes(manifest(9, signer.key))
    connection = f"Broker=mqtt://{HOST}:{free_port()};DeviceId={DEVICE};Secret=s;WorkspaceKey={signer.public_text}"
    process = subprocess.Popen(
        [AGENT, "--connection-string", connection, "--state-dir", str(state), "--sandbox", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        lines = read_lines(process)
        first = lines.get(timeout=DEADLINE)
        assert first.startswith(f"edgewise-agent {DEVICE}: state {state}")
        while "converging on the saved manifest version 9" not in lines.get(timeout=DEADLINE):
            pass
        reported = json.loads((state / "manifest.json").read_bytes())
        assert reported["version"] == 9
        assert process.poll() is None  # keeps running (and retrying the broker) with nothing to report to
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE) == 0


def test_bad_configuration_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [AGENT, "--connection-string", "Broker=mqtt://127.0.0.1:1;DeviceId=x", "--state-dir", str(tmp_path)],
        capture_output=True,
        timeout=DEADLINE,
        env={k: v for k, v in os.environ.items() if k != "EDGEWISE_CONNECTION_STRING"},
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "missing" in lines[0]

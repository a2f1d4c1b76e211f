"""`python -m edgewise.simulators fleet`: agents from a file of connection strings, stopped by SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from edgewise.simulators import FleetObserver, connection_string, device_ids, register_devices

from tests.runtime.agent.conftest import Broker, Signer

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", [["--in-process"], []], ids=["in-process", "processes"])
def test_the_cli_runs_a_fleet_until_sigterm(
    broker: Broker, signer: Signer, observer: FleetObserver, tmp_path: Path, mode: list[str]
) -> None:
    devices = register_devices(broker.manager, device_ids(3, prefix="cli"))
    strings = tmp_path / "devices.txt"
    strings.write_text(
        "".join(
            connection_string(broker_port=1, device=d, workspace_key=signer.public_text, registry=None) + "\n"
            for d in devices
        )
    )
    argv = [sys.executable, "-m", "edgewise.simulators", "fleet", "--connection-strings", str(strings)]
    argv += ["--broker", broker.url, "--devices", "2", "--work-dir", str(tmp_path / "fleet"), "--sandbox", "none"]
    with (tmp_path / "cli.log").open("wb") as log:
        process = subprocess.Popen([*argv, *mode], stdout=log, stderr=subprocess.STDOUT)
    try:
        ids = [d.device_id for d in devices[:2]]
        observer.wait_status(ids, "online", timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (tmp_path / "cli.log").read_text()
        observer.wait_status(ids, "offline", timeout=20)  # each agent's clean stop
        assert devices[2].device_id not in observer.status
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

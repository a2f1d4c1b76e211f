"""The broker inside a real `edgewise up`, an external broker, and start failures."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest
from edgewise.cloud.broker import BrokerManager, parse_broker
from edgewise.cloud.errors import ServiceUnavailableError

from tests.cloud.broker.conftest import BrokerFactory, needs_mosquitto
from tests.cloud.broker.mqtt import Client, LoopThread
from tests.cloud.service import start_workspace
from tests.support import HOST, wait_until

_BROKER_LINE = re.compile(r"edgewise MQTT broker: (\S+) .*on mqtt://127\.0\.0\.1:(\d+)")


def _service_client(port: int, data_dir: Path) -> Client:
    password = (data_dir / "broker" / "service-password").read_text().strip()
    client = Client(port, "edgewise-service", password)
    assert not client.connect().is_failure
    return client


def test_edgewise_up_runs_the_embedded_broker(tmp_path: Path) -> None:
    data = tmp_path / "ws"
    service = start_workspace(data, "--broker", "embedded", "--mqtt-port", "0")
    try:
        match = _BROKER_LINE.search(service.log())
        assert match is not None, service.log()
        assert match[1] == "embedded"
        client = _service_client(int(match[2]), data)
        client.subscribe("edgewise/v1/#")
        client.publish("edgewise/v1/devices/d1/desired", b"{}")
        assert client.expect("edgewise/v1/devices/d1/desired")[1] == b"{}"
        client.close()
    finally:
        service.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_mosquitto
def test_a_killed_service_leaves_no_mosquitto_behind(tmp_path: Path) -> None:
    data = tmp_path / "ws"
    first = start_workspace(data, "--broker", "mosquitto", "--mqtt-port", "0")
    pid_file = data / "broker" / "mosquitto.pid"
    old_pid = int(pid_file.read_text())
    first.stop(sig=signal.SIGKILL)
    assert _alive(old_pid)  # the broker outlived the killed service...
    second = start_workspace(data, "--broker", "mosquitto", "--mqtt-port", "0")
    try:
        assert not _alive(old_pid)  # ...until the next start stopped it
        match = _BROKER_LINE.search(second.log())
        assert match is not None and match[1] == "mosquitto", second.log()
        _service_client(int(match[2]), data).close()
        new_pid = int(pid_file.read_text())
    finally:
        second.stop()
    wait_until(lambda: not _alive(new_pid), what="mosquitto to stop with the service")
    assert not pid_file.exists()


@needs_mosquitto
def test_mosquitto_on_a_busy_port_fails_with_the_port_and_log(tmp_path: Path, loop_thread: LoopThread) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        manager = BrokerManager(settings=parse_broker("mosquitto", host=HOST, port=port), data_dir=tmp_path)
        with pytest.raises(ServiceUnavailableError, match=rf"{port}.*mosquitto\.log"):
            loop_thread.run(manager.start())


def test_edgewise_up_exits_when_the_broker_cannot_start(tmp_path: Path) -> None:
    import subprocess

    from tests.cloud.service import EDGEWISE

    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        argv = [EDGEWISE, "up", "--data", str(tmp_path / "ws"), "--host", HOST, "--port", "0"]
        done = subprocess.run(
            [*argv, "--broker", "embedded", "--mqtt-port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "no_proxy": "*"},
        )
    assert done.returncode == 1
    assert f"{port}" in done.stderr and "--mqtt-port" in done.stderr
    assert "workspace live" not in done.stdout


def test_bad_broker_value_stops_edgewise_up(tmp_path: Path) -> None:
    import subprocess

    from tests.cloud.service import EDGEWISE

    done = subprocess.run(
        [EDGEWISE, "up", "--data", str(tmp_path / "ws"), "--port", "0", "--broker", "rabbit"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "auto, embedded, mosquitto or mqtt://host:port" in done.stderr


@pytest.mark.parametrize("kind", ["embedded", pytest.param("mosquitto", marks=needs_mosquitto)])
def test_external_broker_by_url(
    kind: str, start_broker: BrokerFactory, loop_thread: LoopThread, tmp_path: Path
) -> None:
    theirs = start_broker(kind, tmp_path / "theirs")
    creds = theirs.service_credentials
    url = f"mqtt://{creds.username}:{creds.password}@127.0.0.1:{theirs.port}"
    ours = BrokerManager(settings=parse_broker(url), data_dir=tmp_path / "ours")
    loop_thread.run(ours.start())
    assert ours.url == theirs.url and ours.service_credentials == creds
    assert "external" in ours.describe() and creds.password not in ours.describe()
    loop_thread.run(ours.stop())  # leaves their broker running
    client = Client(theirs.port, creds.username, creds.password)
    assert not client.connect().is_failure
    client.close()


def test_unreachable_external_broker_is_a_clear_error(tmp_path: Path, loop_thread: LoopThread) -> None:
    with socket.socket() as closed:
        closed.bind((HOST, 0))
        port = closed.getsockname()[1]  # bound but not listening: connections are refused
        manager = BrokerManager(settings=parse_broker(f"mqtt://127.0.0.1:{port}"), data_dir=tmp_path)
        with pytest.raises(ServiceUnavailableError, match=f"127.0.0.1:{port}"):
            loop_thread.run(manager.start())

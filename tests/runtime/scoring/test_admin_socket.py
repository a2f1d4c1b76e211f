"""The private admin sockets of edgewise-score, and deferred public listeners (`--defer-listen`)."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.runtime.scoring.builders import feed_fifo, fifo_model, identity_model
from tests.support import _SCORE, HOST, free_port, start_server, wait_until


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self.path))


def call(path: Path, method: str, url: str) -> tuple[int, bytes]:
    connection = UnixHTTP(path)
    try:
        connection.request(method, url)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def grpc_health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(answer.status)


def answers(path: Path) -> bool:
    try:
        return call(path, "GET", "/v2/admin/state")[0] == 200
    except OSError:
        return False


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def admin_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ews-", dir="/tmp")) / "admin"  # short: unix socket paths are limited
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    identity_model(tmp_path / "models" / "m" / "1" / "model.onnx", "FP32")
    return tmp_path / "models"


def test_admin_sockets_beside_public_ports(repo: Path, admin_dir: Path) -> None:
    server = start_server(repo, "--admin-socket-dir", str(admin_dir))
    try:
        assert call(admin_dir / "http.sock", "GET", "/v2/health/ready")[0] == 200
        assert grpc_health(f"unix:{admin_dir / 'grpc.sock'}") == health_pb2.HealthCheckResponse.SERVING
        status, body = call(admin_dir / "http.sock", "GET", "/v2/admin/state")
        state = json.loads(body)
        assert status == 200 and state["pid"] == server.process.pid and state["listening"]
        assert state["http_port"] == server.http_port and state["grpc_port"] == server.grpc_port
        # The admin routes exist on the admin socket only.
        with server.http() as client:
            assert client.post("/v2/admin/listen").status_code == 404
            assert client.get("/v2/admin/state").status_code == 404
            assert client.get("/v2/health/ready").status_code == 200
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert not (admin_dir / "http.sock").exists() and not (admin_dir / "grpc.sock").exists()


def test_defer_listen_opens_public_ports_on_request(repo: Path, admin_dir: Path, tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    argv = [_SCORE, "--model-repository", str(repo), "--host", HOST, "--http-port", str(http_port)]
    argv += ["--grpc-port", str(grpc_port), "--admin-socket-dir", str(admin_dir), "--defer-listen"]
    with (tmp_path / "log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: answers(admin_dir / "http.sock"), what="the admin socket")
        wait_until(lambda: call(admin_dir / "http.sock", "GET", "/v2/health/ready")[0] == 200, what="readiness")
        # Ready over the admin sockets, and still invisible to clients.
        assert not tcp_open(http_port) and not tcp_open(grpc_port)
        assert json.loads(call(admin_dir / "http.sock", "GET", "/v2/admin/state")[1])["listening"] is False
        assert call(admin_dir / "http.sock", "GET", "/v2/admin/listen")[0] == 405  # POST only

        status, body = call(admin_dir / "http.sock", "POST", "/v2/admin/listen")
        assert status == 200 and json.loads(body) == {"http_port": http_port, "grpc_port": grpc_port}
        assert tcp_open(http_port)
        assert grpc_health(f"{HOST}:{grpc_port}") == health_pb2.HealthCheckResponse.SERVING
        again = call(admin_dir / "http.sock", "POST", "/v2/admin/listen")
        assert again == (200, body)  # idempotent
        assert "edgewise-score live" in (tmp_path / "log").read_text()
    finally:
        process.terminate()
        process.wait(15)
    assert process.returncode == 0
    assert not tcp_open(http_port)


def test_listen_reports_a_port_it_cannot_bind(repo: Path, admin_dir: Path, tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind((HOST, 0))
    blocker.listen(1)  # without SO_REUSEPORT: the server cannot share it
    http_port = blocker.getsockname()[1]
    argv = [_SCORE, "--model-repository", str(repo), "--host", HOST, "--http-port", str(http_port)]
    argv += ["--grpc-port", str(free_port()), "--admin-socket-dir", str(admin_dir), "--defer-listen"]
    with (tmp_path / "log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: answers(admin_dir / "http.sock"), what="the admin socket")
        status, body = call(admin_dir / "http.sock", "POST", "/v2/admin/listen")
        assert status == 500 and "cannot open the public ports" in json.loads(body)["error"]
        assert process.poll() is None  # still up: the agent decides what to do
    finally:
        process.terminate()
        process.wait(15)
        blocker.close()


def test_state_waits_for_readiness_when_asked(admin_dir: Path, tmp_path: Path) -> None:
    """`state?wait_ready=S` is held while a model loads (here: until the test writes it into a named pipe)."""
    repo = tmp_path / "models"
    pipe = fifo_model(repo / "m" / "1" / "model.onnx")
    model = tmp_path / "model.onnx"
    identity_model(model, "FP32")
    argv = [_SCORE, "--model-repository", str(repo), "--host", HOST, "--http-port", "0", "--grpc-port", "0"]
    argv += ["--admin-socket-dir", str(admin_dir), "--defer-listen"]
    with (tmp_path / "log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: answers(admin_dir / "http.sock"), what="the admin socket")
        status, body = call(admin_dir / "http.sock", "GET", "/v2/admin/state?wait_ready=0.3")
        assert status == 200 and json.loads(body)["ready"] is False  # the wait ran out: not ready yet
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(call, admin_dir / "http.sock", "GET", "/v2/admin/state?wait_ready=25")
            with pytest.raises(concurrent.futures.TimeoutError):
                held.result(timeout=0.5)  # still held: the model has not arrived
            feed_fifo(pipe, model.read_bytes())
            status, body = held.result(timeout=30)
        assert status == 200 and json.loads(body)["ready"] is True
        # the answer carries the repository index, so a starting module's check is one request
        models = [{"name": "m", "version": "1", "state": "READY", "reason": "", "warmedUp": True}]
        assert json.loads(body)["models"] == models  # warmed up: the server ran it once before it was ready
        for bad in ("abc", "-1", "nan"):  # not a wait: answered at once
            assert call(admin_dir / "http.sock", "GET", f"/v2/admin/state?wait_ready={bad}")[0] == 200
    finally:
        process.terminate()
        process.wait(15)
    assert process.returncode == 0

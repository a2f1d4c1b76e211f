"""Helpers shared by the suite: run a real `edgewise-score` on 127.0.0.1 and wait for it.

Servers bind port 0 and the tests read the ports they got from the server's "live" log line. This avoids
races with other processes on the machine, and because the server listens with SO_REUSEPORT, it also keeps
a test server from silently sharing a port with another server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

# Only loopback traffic: never route a test client through a proxy from the environment.
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"

HOST = "127.0.0.1"
START_DEADLINE = 60.0  # seconds; generous for a small, busy CI machine
STOP_DEADLINE = 15.0
_LIVE_LINE = re.compile(r"edgewise-score live: gRPC on \S+:(\d+), HTTP on \S+:(\d+)")
_SCORE = shutil.which("edgewise-score", path=str(Path(sys.executable).parent)) or "edgewise-score"


def free_port() -> int:
    """A port nothing listens on right now (for the few tests that must name a port before starting)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until `predicate` returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class ServerProcess:
    """One running edgewise-score and how to reach it."""

    repo: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    grpc_port: int = 0
    http_port: int = 0
    args: list[str] = field(default_factory=list)

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"

    def http(self) -> httpx.Client:
        """A plain HTTP client for raw REST calls (tritonclient hides status codes and bodies)."""
        return httpx.Client(base_url=self.base_url, timeout=30.0, trust_env=False)

    def is_ready(self) -> bool:
        try:
            with self.http() as client:
                return client.get("/v2/health/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_live(self) -> None:
        """Wait for the "live" log line, which carries the ports the server bound."""
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            match = _LIVE_LINE.search(self.log())
            if match:
                self.grpc_port, self.http_port = int(match[1]), int(match[2])
                return
            if self.process.poll() is not None:
                pytest.fail(f"edgewise-score exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.02)
        pytest.fail(f"edgewise-score did not start listening within {START_DEADLINE}s:\n{self.log()}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            if self.process.poll() is not None:
                pytest.fail(f"edgewise-score exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        pytest.fail(f"edgewise-score did not become ready within {START_DEADLINE}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_DEADLINE)
        RUNNING.discard(self)

    def __hash__(self) -> int:
        return id(self)


RUNNING: set[ServerProcess] = set()  # for failure reports


def start_server(repo: Path, *args: str, log_path: Path | None = None, ready: bool = True) -> ServerProcess:
    """Start edgewise-score on `repo` with extra CLI `args`; wait for readiness unless `ready` is False."""
    log_path = log_path or repo.parent / f"{repo.name}-server.log"
    argv = [_SCORE, "--model-repository", str(repo), "--host", HOST, "--log-level", "info"]
    # Port 0 unless `args` names ports: argparse keeps the last value of an option.
    argv += ["--grpc-port", "0", "--http-port", "0", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(repo, log_path, process, args=list(args))
    RUNNING.add(server)
    try:
        server.wait_live()
        if ready:
            server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def write_config(model_dir: Path, **config: Any) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config))


def require_native_grpc() -> None:
    """Skip when the native gRPC transport cannot be built here (it needs gcc and libnghttp2-dev), with the reason;
    fail instead under EDGEWISE_REQUIRE_NATIVE_GRPC=1, as CI sets, so that a broken build is never a quiet skip."""
    from edgewise.runtime.scoring.h2grpc import native

    reason = native.available()
    if reason is None:
        return
    if os.environ.get("EDGEWISE_REQUIRE_NATIVE_GRPC") == "1":
        pytest.fail(f"the native gRPC transport must build here: {reason}")
    pytest.skip(f"the native gRPC transport is unavailable: {reason}")

"""Run a real `edgewise up` on 127.0.0.1 for the tests and wait for it to listen."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import HOST

if TYPE_CHECKING:
    from edgewise.cloud.client import Client

START_DEADLINE = 60.0
STOP_DEADLINE = 20.0
_LIVE_LINE = re.compile(r"edgewise workspace live on (http://\S+) ")
EDGEWISE = shutil.which("edgewise", path=str(Path(sys.executable).parent)) or "edgewise"


@dataclass
class WorkspaceProcess:
    """One running workspace service, its data directory and how to reach it."""

    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    url: str = ""
    log_offset: int = 0  # the log file is shared by restarts on one data directory

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        """The environment a CLI or SDK subprocess needs to reach this service."""
        return {**os.environ, "EDGEWISE_URL": self.url, "EDGEWISE_TOKEN": self.token, "no_proxy": "*"}

    def client(self) -> Client:
        from edgewise.cloud.client import Client

        return Client(url=self.url, token=self.token)

    def log(self) -> str:
        try:
            with self.log_path.open("rb") as source:
                source.seek(self.log_offset)
                return source.read().decode(errors="replace")
        except OSError:
            return "<no log>"

    def wait_live(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            match = _LIVE_LINE.search(self.log())
            if match:
                self.url = match[1]
                return
            if self.process.poll() is not None:
                pytest.fail(f"edgewise up exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        pytest.fail(f"edgewise up did not start within {START_DEADLINE}s:\n{self.log()}")

    def stop(self, *, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_DEADLINE)
        RUNNING_WORKSPACES.discard(self)

    def __hash__(self) -> int:
        return id(self)


RUNNING_WORKSPACES: set[WorkspaceProcess] = set()


def start_workspace(
    data_dir: Path, *args: str, port: int = 0, env: Mapping[str, str] | None = None
) -> WorkspaceProcess:
    """Start `edgewise up` on `data_dir` (extra CLI `args`), on `port` (0: any free port), `env` added to ours."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-service.log"
    # The broker also takes a free port unless `args` names one (the last value of an option wins).
    argv = [EDGEWISE, "up", "--data", str(data_dir), "--host", HOST, "--port", str(port), "--mqtt-port", "0", *args]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "no_proxy": "*", **(env or {})}
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=environment)
    service = WorkspaceProcess(data_dir, log_path, process, log_offset=offset)
    RUNNING_WORKSPACES.add(service)
    try:
        service.wait_live()
    except BaseException:
        service.stop()
        raise
    return service

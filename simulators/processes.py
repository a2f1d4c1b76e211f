"""A fleet of `edgewise-agent` processes: each device is a real daemon with its own config, state and log."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from edgewise.simulators.clock import wait_until
from edgewise.simulators.fleet import Fleet

AGENT = shutil.which("edgewise-agent", path=str(Path(sys.executable).parent)) or "edgewise-agent"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
_STARTED = ": state "  # the agent's start-up line: "edgewise-agent <id>: state <dir>, sandbox ..., broker ..."


class AgentProcess:
    """One device's `edgewise-agent`, started from its agent.toml in a session of its own."""

    def __init__(self, *, device_dir: Path, config: Path, log_level: str = "info") -> None:
        self.device_dir = device_dir
        self.config = config
        self.log_path = device_dir / "agent.log"
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._offset = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        """Start the process; `wait_started` waits for its start-up line."""
        if self.running:
            raise RuntimeError(f"the agent in {self.device_dir} is running already")
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1"}
        with self.log_path.open("ab") as log:
            log.write(f"----- start #{self.starts + 1}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [AGENT, "--config", str(self.config), "--log-level", self.log_level],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.starts += 1

    def wait_started(self, *, timeout: float = START_TIMEOUT) -> None:
        def started() -> bool:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"edgewise-agent exited with {code}; its log:\n{self.log()[-3000:]}")
            return _STARTED in self.log()[self._offset :]

        wait_until(started, timeout=timeout, what=f"the agent in {self.device_dir} to start")

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (the agent reports, says "offline", leaves modules running); SIGKILL after `timeout`."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.resume()  # a stopped process cannot act on SIGTERM
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the agent alone: no last report, the broker publishes its will; modules keep running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)

    def pause(self) -> None:
        """SIGSTOP: the agent is frozen with its connection open, as a hung device."""
        if self.running and self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running and self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class ProcessFleet(Fleet):
    """One `edgewise-agent` process per device."""

    log_level = "info"

    def _prepare(self) -> None:
        self.agents: dict[str, AgentProcess] = {}

    def agent(self, device_id: str) -> AgentProcess:
        self._check(device_id)
        return self.agents[device_id]

    def _start_devices(self) -> None:
        for device_id in self.device_ids:
            directory = self.device_dir(device_id)
            config = directory / "agent.toml"
            text = self.settings.config_toml(
                connection_string=self.connection_string(device_id), state_dir=self.state_dir(device_id)
            )
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the device's secret
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            self.agents[device_id] = AgentProcess(device_dir=directory, config=config, log_level=self.log_level)
        for agent in self.agents.values():
            agent.launch()
        for agent in self.agents.values():
            agent.wait_started()

    def _close_devices(self) -> None:
        for agent in self.agents.values():
            with contextlib.suppress(Exception):
                agent.stop(timeout=10.0)

    def start_device(self, device_id: str) -> None:
        agent = self.agent(device_id)
        agent.launch()
        agent.wait_started()

    def stop_device(self, device_id: str) -> None:
        self.agent(device_id).stop()

    def kill_device(self, device_id: str) -> None:
        self.agent(device_id).kill()

    def pause_device(self, device_id: str) -> None:
        self.agent(device_id).pause()

    def resume_device(self, device_id: str) -> None:
        self.agent(device_id).resume()

    def running(self, device_id: str) -> bool:
        return self.agent(device_id).running

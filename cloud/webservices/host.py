"""The workspace host as a device of its own: an `edgewise-agent` the service runs to serve web services.

The host is registered like any device (`edgewise-host`, tagged `role=webservice-host`), so web services are
plain deployments and go through the same signed manifests, image pulls and reports as the fleet. Its secret
is shown only once, so it is kept in `DATA/webservices/connection` (mode 0600); without that file the device
is removed and added again. The agent runs in a session of its own and is restarted with a growing pause when
it exits. Stopping the service stops the agent (SIGTERM) but not its modules: the next agent adopts them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from edgewise.cloud.devices import DeviceRegistry, connection_string
from edgewise.cloud.errors import NotFoundError, ServiceUnavailableError
from edgewise.cloud.names import WEBSERVICE_HOST_ID

log = logging.getLogger("edgewise.webservices")

HOST_DEVICE_ID = WEBSERVICE_HOST_ID
HOST_TAGS = {"role": "webservice-host"}
FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0
STABLE_RUN = 60.0  # an agent that ran this long before exiting restarts after the first pause again
STOP_TIMEOUT = 15.0


def agent_command() -> list[str]:
    """How to start `edgewise-agent` with this service's own Python."""
    found = shutil.which("edgewise-agent", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "edgewise.runtime.agent"]


def parse_connection(text: str) -> dict[str, str]:
    """The `Key=Value;...` pairs of a connection string (values may contain '=')."""
    pairs = (part.partition("=") for part in text.strip().split(";") if part)
    return {key: value for key, _, value in pairs}


class HostAgent:
    """Registers the host device when needed and keeps its agent process running."""

    def __init__(
        self,
        *,
        devices: DeviceRegistry,
        folder: Path,
        command: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.devices = devices
        self.folder = folder
        self.command = list(command) if command is not None else agent_command()
        self.extra_args = list(extra_args)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: str | None = None  # what the running agent was started with
        self._watcher: threading.Thread | None = None
        self._spawned_at = 0.0

    @property
    def connection_path(self) -> Path:
        return self.folder / "connection"

    @property
    def state_dir(self) -> Path:
        return self.folder / "agent"

    @property
    def log_path(self) -> Path:
        return self.folder / "agent.log"

    @property
    def pid_path(self) -> Path:
        return self.folder / "agent.pid"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Make sure the host device exists with known credentials and its agent runs. Blocking; idempotent."""
        with self._lock:
            if self._stopping.is_set():
                raise ServiceUnavailableError("the workspace service is stopping; try again once it is up")
            connection = self._current_connection(self._secret())
            if self.running and connection == self._connection:
                return
            if self.running:
                log.info("the host device's credentials changed; restarting its agent")
                self._terminate()
            self._spawn(connection)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="edgewise-host-agent", daemon=True)
                self._watcher.start()

    def stop(self) -> None:
        """SIGTERM the agent (its modules keep running) and stop restarting it."""
        self._stopping.set()
        with self._lock:
            self._terminate()
        if self._watcher is not None:
            self._watcher.join(STOP_TIMEOUT)
            self._watcher = None

    # -- credentials -----------------------------------------------------------------------------------------

    def _secret(self) -> str:
        """The host device's secret: from the connection file when it still logs in, else from a fresh device."""
        try:
            saved = parse_connection(self.connection_path.read_text())
        except OSError:
            saved = {}
        secret = saved.get("Secret", "")
        try:
            self.devices.get(HOST_DEVICE_ID)
            exists = True
        except NotFoundError:
            exists = False
        known = exists and secret and saved.get("DeviceId") == HOST_DEVICE_ID
        if known and self.devices.verify_login(HOST_DEVICE_ID, secret):
            return secret
        if exists:
            log.warning("the credentials of device %s are lost; registering it again", HOST_DEVICE_ID)
            self.devices.remove(HOST_DEVICE_ID)
        added = self.devices.add(HOST_DEVICE_ID, tags=HOST_TAGS)
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.connection_path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(added.connection_string + "\n")
        temporary.replace(self.connection_path)
        log.info("registered device %s for the web services of this host", HOST_DEVICE_ID)
        return parse_connection(added.connection_string)["Secret"]

    def _current_connection(self, secret: str) -> str:
        """The connection string with today's broker and registry addresses (ports may change between starts)."""
        return connection_string(
            broker_url=self.devices.broker_url,
            device_id=HOST_DEVICE_ID,
            secret=secret,
            workspace_key=self.devices.manifest_key.public_text,
            registry=self.devices.registry_url,
        )

    # -- the process -----------------------------------------------------------------------------------------

    def _spawn(self, connection: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        argv = [*self.command, "--state-dir", str(self.state_dir), "--sandbox", "auto", *self.extra_args]
        loopback = "127.0.0.1,localhost,::1"
        no_proxy = ",".join(filter(None, [os.environ.get("no_proxy", ""), loopback]))
        # The secret travels in the environment, which only this user can read (a command line is public).
        env = {
            **os.environ,
            "EDGEWISE_CONNECTION_STRING": connection,
            "PYTHONUNBUFFERED": "1",
            "no_proxy": no_proxy,
            "NO_PROXY": no_proxy,
        }
        with self.log_path.open("ab") as out:
            out.write(f"----- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {' '.join(argv)}\n".encode())
            out.flush()
            self._process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        self._connection = connection
        self._spawned_at = time.monotonic()
        self.pid_path.write_text(f"{self._process.pid} {_start_ticks(self._process.pid)}\n")
        log.info("started the host agent (pid %d, log %s)", self._process.pid, self.log_path)

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("the host agent did not stop within %gs; killing it", STOP_TIMEOUT)
                process.kill()
                process.wait(STOP_TIMEOUT)
        self._process = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def _stop_leftover(self) -> None:
        """An agent a killed service left behind would fight the new one over the state directory: stop it."""
        try:
            pid_text, ticks_text = self.pid_path.read_text().split()
            pid, ticks = int(pid_text), int(ticks_text)
        except (OSError, ValueError):
            return
        if _start_ticks(pid) != ticks or str(self.state_dir) not in _cmdline(pid):
            return
        log.warning("stopping the host agent a previous service left running (pid %d)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _start_ticks(pid) == ticks and time.monotonic() < deadline:
            time.sleep(0.1)
        if _start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _watch(self) -> None:
        """Restart the agent when it exits, pausing longer each time it exits soon after its start."""
        pause = FIRST_PAUSE
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            if process is None or process.poll() is None:
                self._stopping.wait(0.5)
                continue
            if time.monotonic() - self._spawned_at > STABLE_RUN:
                pause = FIRST_PAUSE
            log.warning("the host agent exited with %s; restarting it in %gs", process.returncode, pause)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, MAX_PAUSE)
            with self._lock:
                if self._stopping.is_set() or self._process is not process:
                    continue
                try:
                    self._spawn(self._current_connection(self._secret()))
                except Exception:  # the broker or store may be briefly unavailable: try again later
                    log.exception("could not restart the host agent")


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if fields[0] != "Z" else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

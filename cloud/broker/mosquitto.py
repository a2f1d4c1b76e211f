"""A Mosquitto process that the service starts, reloads when accounts change, and stops.

Everything lives in the broker folder of the data directory: the generated `mosquitto.conf`, the pid file
(so a later start can stop a broker left behind by a killed service), the persistence database (retained
desired and reported state survive restarts) and `mosquitto.log`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

from edgewise.cloud.errors import AuthenticationError, ServiceUnavailableError

from .accounts import Accounts, Credentials
from .probe import try_connect

CONFIG_FILE = "mosquitto.conf"
PID_FILE = "mosquitto.pid"
LOG_FILE = "mosquitto.log"
DB_FILE = "mosquitto.db"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

log = logging.getLogger("edgewise.broker")


class MosquittoBroker:
    """One managed Mosquitto listening on `host:port` (port 0: a free port picked at start)."""

    def __init__(self, *, binary: str, directory: Path, host: str, port: int, accounts: Accounts) -> None:
        self.binary = binary
        self.directory = directory
        self.host = host
        self.port = port
        self.accounts = accounts
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE

    @property
    def pid_path(self) -> Path:
        return self.directory / PID_FILE

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start Mosquitto and wait until it accepts the service account; raise with the port and log if not."""
        if self._process is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        stop_leftover(self.directory, binary=self.binary)
        port = self.port or _free_port(self.host)
        _check_port_free(self.host, port, log_path=self.log_path)
        self.config_path.write_text(self._config_text(port))
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the service, which stops the broker
            )
        self.pid_path.write_text(f"{self._process.pid}\n")
        self.port = port
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def reload(self) -> None:
        """Make Mosquitto re-read the password and ACL files (SIGHUP)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def wait_accepts(self, credentials: Credentials, *, timeout: float = 5.0) -> bool:
        """After a reload, wait until `credentials` are accepted; False if they still are not after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                try_connect(host=self.host, port=self.port, credentials=credentials, timeout=1.0)
                return True
            except (AuthenticationError, ServiceUnavailableError):
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop Mosquitto (SIGTERM lets it save retained messages; SIGKILL after a grace period)."""
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self._process.poll()
            if code is not None:
                raise ServiceUnavailableError(
                    f"mosquitto exited with code {code} while starting on {self.host}:{self.port}; "
                    f"see {self.log_path}{_tail(self.log_path)}"
                )
            try:
                try_connect(host=self.host, port=self.port, credentials=self.accounts.service_credentials, timeout=1)
                return
            except ServiceUnavailableError:
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError(
                        f"mosquitto did not accept connections on {self.host}:{self.port} within "
                        f"{START_TIMEOUT:g}s; see {self.log_path}"
                    ) from None
                time.sleep(0.05)
            except AuthenticationError as exc:
                raise ServiceUnavailableError(
                    f"the broker on {self.host}:{self.port} refused the service account ({exc}); see {self.log_path}"
                ) from exc

    def _config_text(self, port: int) -> str:
        lines = [
            "# Written by edgewise at every start; edits are overwritten.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.accounts.password_path}",
            f"acl_file {self.accounts.acl_path}",
            f"listener {port} {self.host}",
            "persistence true",
            f"persistence_location {self.directory}",
            f"persistence_file {DB_FILE}",
            "autosave_interval 30",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Mosquitto drops root for the "mosquitto" user unless told otherwise; that user could not read
            # the service's private files.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        return "\n".join(lines) + "\n"


def stop_leftover(directory: Path, *, binary: str = "mosquitto") -> int | None:
    """Stop a Mosquitto a killed service left running on this folder; return its pid, None if there was none.

    Only a process whose command line is that binary with this folder's config file is touched.
    """
    pid_path = directory / PID_FILE
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    config = str(directory / CONFIG_FILE)
    argv = _cmdline(pid)
    if argv is None or os.path.basename(argv[0]) != os.path.basename(binary) or config not in argv:
        pid_path.unlink(missing_ok=True)
        return None
    log.warning("stopping mosquitto (pid %d) left running by a previous instance on %s", pid, directory)
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        _signal(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + STOP_TIMEOUT:
            time.sleep(0.05)
    pid_path.unlink(missing_ok=True)
    return pid


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def _alive(pid: int) -> bool:
    """Running and not a zombie (a leftover is not our child, so someone else reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int, *, log_path: Path) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServiceUnavailableError(
                f"cannot start mosquitto on {host}:{port}: {exc.strerror}; pick another --mqtt-port "
                f"(0: any free port) or stop what uses it (broker log: {log_path})"
            ) from exc


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (":\n  " + "\n  ".join(text)) if text else ""

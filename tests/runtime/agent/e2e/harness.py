"""Drive a real `edgewise-agent` from outside: its process, its connection string, and the manifests it is sent.

Nothing here depends on pytest, so a benchmark can reuse it. Waiting helpers raise `TimeoutError` with what
was awaited and the last value seen.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edgewise.runtime.agent.slotfile import SlotFile
from edgewise.runtime.agent.state import MANIFEST

from tests.runtime.agent.e2e import procs

HOST = "127.0.0.1"
AGENT = shutil.which("edgewise-agent", path=str(Path(sys.executable).parent)) or "edgewise-agent"
T = TypeVar("T")

# Short cycles, so that a test sees restarts, reconciles and health probes within seconds.
FAST_FLAGS: tuple[str, ...] = ("--restart-cooloff", "0.2", "--reconcile-interval", "1", "--health-interval", "0.5")


def wait_for(predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def connection_string(
    *, broker_port: int, device_id: str, secret: str, workspace_key: str, registry: str | None
) -> str:
    parts = [
        f"Broker=mqtt://{HOST}:{broker_port}",
        f"DeviceId={device_id}",
        f"Secret={secret}",
        f"WorkspaceKey={workspace_key}",
    ]
    if registry:
        parts.append(f"Registry={registry}")
    return ";".join(parts)


class AgentProcess:
    """One `edgewise-agent` subprocess in its own session; stdout and stderr go to `log_path` (appended)."""

    def __init__(
        self,
        *,
        connection: str,
        state_dir: Path,
        log_path: Path,
        metrics_port: int | None = None,
        flags: Sequence[str] = FAST_FLAGS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.connection = connection
        self.state_dir = state_dir
        self.log_path = log_path
        self.metrics_port = metrics_port
        self.flags = tuple(flags)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # the modules' sockets: a folder of this agent's (a forked module's command line names it, not the state
        # directory), short enough for socket paths
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="ew-run-"))

    @property
    def argv(self) -> list[str]:
        argv = [AGENT, "--connection-string", self.connection, "--state-dir", str(self.state_dir)]
        argv += ["--runtime-dir", str(self.runtime_dir), *self.flags]
        if self.metrics_port is not None:
            argv += ["--metrics-port", str(self.metrics_port)]
        return argv

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, wait: float = 30.0) -> AgentProcess:
        """Start the agent and wait for its start-up line on stderr (or fail with its log)."""
        if self.running:
            raise RuntimeError("the agent is running already")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "no_proxy": HOST, "NO_PROXY": HOST, **self.env}
        with self.log_path.open("ab") as log:
            log.write(f"----- start #{self.starts + 1}: {' '.join(self.argv[:1] + self.argv[3:])}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.starts += 1

        def started() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"edgewise-agent exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            return "edgewise-agent " in self.log()[offset:] and ": state " in self.log()[offset:]

        wait_for(started, timeout=wait, what=f"edgewise-agent to log its start-up line:\n{self.log()[-2000:]}")
        return self

    def kill(self) -> None:
        """SIGKILL the agent alone (not its modules, which run in sessions of their own)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(15)

    def stop(self, *, timeout: float = 20.0) -> int | None:
        """SIGTERM (a clean stop; modules keep running); SIGKILL if it does not exit within `timeout`."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        return self.process.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"

    def module_logs(self) -> dict[str, str]:
        logs: dict[str, str] = {}
        for path in sorted((self.state_dir / "modules").glob("*/log")):
            logs[path.parent.name] = path.read_text(errors="replace")
        return logs

    def accepted_version(self) -> int | None:
        """The version of the saved manifest, the last one the agent accepted (None before the first)."""
        try:
            saved = SlotFile(self.state_dir / MANIFEST).read()
            return int(json.loads(saved)["version"]) if saved is not None else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def module_roots(self) -> set[int]:
        """Topmost processes that mention the state directory, other than the agent: one per module process tree."""
        return procs.process_roots(
            str(self.state_dir), str(self.runtime_dir), agent_pid=self.pid if self.running else None
        )

    def cleanup(self, extra_pids: Sequence[int] = ()) -> None:
        """Stop the agent and kill every module process it left running (they outlive the agent by design)."""
        self.stop(timeout=10.0)
        roots = procs.process_roots(str(self.state_dir), str(self.runtime_dir), agent_pid=None)
        procs.kill_trees(roots | {p for p in extra_pids if procs.alive(p)})
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


# ---- manifests -----------------------------------------------------------------------------------------------


def module_entry(
    *,
    image: str,
    http_port: int,
    grpc_port: int,
    status: str = "running",
    restart_policy: str = "always",
    startup_timeout: float = 45.0,
    **settings: Any,
) -> dict[str, Any]:
    """One module of a desired manifest; `settings` adds e.g. maxRestarts=3, warmup=True."""
    return {
        "type": "oci",
        "image": image,
        "status": status,
        "restartPolicy": restart_policy,
        "settings": {
            "httpPort": http_port,
            "grpcPort": grpc_port,
            "host": HOST,
            "startupTimeoutSecs": startup_timeout,
            **settings,
        },
    }


DEFAULT_TELEMETRY: dict[str, Any] = {
    "intervalSecs": 5,
    "timeToLiveSecs": 3600,
    "maxBytes": 16 * 1024 * 1024,
    "sampleRate": 0.0,
}


def manifest_document(
    *,
    device_id: str,
    version: int,
    modules: Mapping[str, Mapping[str, Any]],
    telemetry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An unsigned desired manifest (sign it with the workspace key before publishing)."""
    return {
        "schemaVersion": "1",
        "deviceId": device_id,
        "version": version,
        "issuedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modules": {name: dict(entry) for name, entry in modules.items()},
        "telemetry": dict(telemetry or DEFAULT_TELEMETRY),
    }

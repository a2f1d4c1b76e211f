"""A fleet of real agents against a real broker: who the devices are, how they reach the broker, and their life.

Two kinds of fleet share this base. `ProcessFleet` runs one `edgewise-agent` process per device, exactly as a
device would. `InProcessFleet` runs many `Agent`s (the daemon's own composition root, with its real link,
reconciler, supervisor and telemetry) on one event loop, for fleets of a hundred where a hundred interpreters
would not fit on a small machine. Either way every report a device sends comes from agent code; the fleet only
starts, stops and disconnects agents.

With `proxied=True` each device reaches the broker through its own `LinkProxy`, so its network can be cut,
stalled, delayed or throttled alone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from edgewise.cloud.broker import BrokerManager
from edgewise.runtime.agent.config import DEVICE_ID, AgentSettings
from edgewise.runtime.agent.state import read_record_documents
from edgewise.runtime.agent.supervisor import is_running
from edgewise.simulators._loop import LoopThread
from edgewise.simulators.faults import LinkProxy, check_loopback

T = TypeVar("T")
Registrar = Callable[[str], str]  # device id → its new secret (creates the broker account)


@dataclass(frozen=True, kw_only=True)
class DeviceCredentials:
    device_id: str
    secret: str

    def __post_init__(self) -> None:
        if not DEVICE_ID.match(self.device_id):
            raise ValueError(f"device id {self.device_id!r}: use letters, digits, '.', '_' and '-'")

    def __repr__(self) -> str:
        return f"DeviceCredentials(device_id={self.device_id!r}, secret='***')"


@dataclass(frozen=True, kw_only=True)
class DeviceSettings:
    """Agent settings every device of a fleet gets: short cycles, so faults and recoveries show within seconds."""

    keepalive: float = 5.0  # the broker publishes a silent device's will after 1.5 times this
    reconnect_min: float = 0.2
    reconnect_max: float = 2.0
    reconcile_interval: float = 2.0
    health_interval: float = 1.0
    restart_cooloff: float = 0.5
    stop_grace: float = 5.0
    sandbox: str = "auto"
    disk_budget_bytes: int = 1024**3
    launcher: bool = True  # fork modules from a module launcher (one shared by an in-process fleet)
    launcher_idle: float = 60.0
    start_slots: int = 0  # modules starting at once, per launcher pool (0: two per CPU)
    runtime_dir: Path | None = None  # the agents' runtime folder, for the modules' sockets (None: their default)
    # In-process fleets: how many CPUs the agents' threads share (0: every CPU the process may use). They hold the
    # interpreter lock in turn, so more CPUs add no speed, only a cross-CPU wake-up at each hand-over; the
    # launcher and the modules still run on every CPU.
    agent_cpus: int = 1

    def agent_settings(self, *, state_dir: Path) -> AgentSettings:
        return AgentSettings(
            state_dir=state_dir,
            launcher=self.launcher,
            launcher_idle=self.launcher_idle,
            start_slots=self.start_slots,
            disk_budget_bytes=self.disk_budget_bytes,
            sandbox=self.sandbox,
            keepalive=self.keepalive,
            reconnect_min=self.reconnect_min,
            reconnect_max=self.reconnect_max,
            reconcile_interval=self.reconcile_interval,
            health_interval=self.health_interval,
            stop_grace=self.stop_grace,
            restart_cooloff=self.restart_cooloff,
            runtime_dir=self.runtime_dir,
        )

    def config_toml(self, *, connection_string: str, state_dir: Path) -> str:
        """The agent.toml of a device process (the connection string stays out of its command line)."""
        values: dict[str, Any] = {
            "connection_string": connection_string,
            "state_dir": str(state_dir),
            "disk_budget_bytes": self.disk_budget_bytes,
            "sandbox": self.sandbox,
            "keepalive": float(self.keepalive),
            "reconnect_min": float(self.reconnect_min),
            "reconnect_max": float(self.reconnect_max),
            "reconcile_interval": float(self.reconcile_interval),
            "health_interval": float(self.health_interval),
            "stop_grace": float(self.stop_grace),
            "restart_cooloff": float(self.restart_cooloff),
            "launcher": self.launcher,
            "launcher_idle": float(self.launcher_idle),
            "start_slots": self.start_slots,
        }
        if self.runtime_dir is not None:
            values["runtime_dir"] = str(self.runtime_dir)
        return "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def device_ids(count: int, *, prefix: str = "sim") -> list[str]:
    """`sim-000`, `sim-001`, …: ids that sort in creation order."""
    width = max(3, len(str(count - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def register_devices(manager: BrokerManager, ids: Sequence[str]) -> list[DeviceCredentials]:
    """Create broker accounts for `ids` with fresh secrets, reloading the broker once for all of them.

    Blocking (file writes and waiting for the broker to accept the last account): call it off an event loop.
    """
    devices = [DeviceCredentials(device_id=d, secret=secrets.token_urlsafe(18)) for d in ids]
    for device in devices[:-1]:
        manager.accounts.add_device(device.device_id, device.secret)
    if devices:
        manager.add_device(devices[-1].device_id, devices[-1].secret)  # reloads and waits for the broker
    return devices


def resolve_devices(
    devices: Sequence[DeviceCredentials] | Registrar, *, count: int | None = None, prefix: str = "sim"
) -> list[DeviceCredentials]:
    """A list of credentials as given, or `count` new devices made by calling the registrar for each id."""
    if callable(devices):
        if count is None:
            raise ValueError("a registrar needs a device count")
        return [DeviceCredentials(device_id=d, secret=devices(d)) for d in device_ids(count, prefix=prefix)]
    listed = list(devices)
    if count is not None and count != len(listed):
        raise ValueError(f"{count} devices asked for but {len(listed)} credentials given")
    if len({d.device_id for d in listed}) != len(listed):
        raise ValueError("device ids in a fleet must be unique")
    return listed


def connection_string(
    *, broker_port: int, device: DeviceCredentials, workspace_key: str, registry: str | None, host: str = "127.0.0.1"
) -> str:
    parts = [
        f"Broker=mqtt://{check_loopback(host)}:{broker_port}",
        f"DeviceId={device.device_id}",
        f"Secret={device.secret}",
        f"WorkspaceKey={workspace_key}",
    ]
    if registry:
        parts.append(f"Registry={registry}")
    return ";".join(parts)


class Fleet(ABC):
    """N devices, their state folders, connection strings and (optionally) one link proxy each.

    `devices` is a list of credentials, or a registrar (device id → new secret) called for `count` ids
    `{prefix}-000`, `{prefix}-001`, ….

    Synchronous to use: the proxies (and, for in-process fleets, the agents) run on an event loop thread of
    the fleet's own. Use it as a context manager, or call `start()` and `close()`.
    """

    def __init__(
        self,
        *,
        broker_port: int,
        devices: Sequence[DeviceCredentials] | Registrar,
        workspace_key: str,
        work_dir: Path,
        registry: str | None = None,
        settings: DeviceSettings | None = None,
        proxied: bool = False,
        broker_host: str = "127.0.0.1",
        count: int | None = None,
        prefix: str = "sim",
    ) -> None:
        self.broker_host = check_loopback(broker_host)
        self.broker_port = broker_port
        self.devices = resolve_devices(devices, count=count, prefix=prefix)
        self.workspace_key = workspace_key
        self.work_dir = work_dir
        self.registry = registry
        self.settings = settings or DeviceSettings()
        self.proxied = proxied
        self.net = LoopThread(name="fleet-net")
        self._proxies: dict[str, LinkProxy] = {}
        self._by_id = {d.device_id: d for d in self.devices}
        self._started = False
        self._prepare()

    # -- what the devices are ------------------------------------------------------------------

    @property
    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.devices]

    def device_dir(self, device_id: str) -> Path:
        self._check(device_id)
        return self.work_dir / device_id

    def state_dir(self, device_id: str) -> Path:
        return self.device_dir(device_id) / "state"

    def proxy(self, device_id: str) -> LinkProxy:
        """The device's link proxy (only with `proxied=True`)."""
        self._check(device_id)
        if device_id not in self._proxies:
            raise LookupError(f"device {device_id} has no link proxy; make the fleet with proxied=True")
        return self._proxies[device_id]

    def connection_string(self, device_id: str) -> str:
        """What the device is given: the broker's port, or its proxy's when proxied."""
        device = self._device(device_id)
        port = self._proxies[device_id].port if self.proxied else self.broker_port
        return connection_string(
            broker_port=port,
            device=device,
            workspace_key=self.workspace_key,
            registry=self.registry,
            host=self.broker_host,
        )

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._started:
            return self
        self._started = True
        try:
            if self.proxied:
                for device in self.devices:
                    proxy = LinkProxy(target_port=self.broker_port, target_host=self.broker_host)
                    self._proxies[device.device_id] = self.net.run(proxy.start(), timeout=30)
            for device in self.devices:
                self.device_dir(device.device_id).mkdir(parents=True, exist_ok=True)
            self._start_devices()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every agent, clean up what they left running, close the proxies. Safe to call twice."""
        try:
            self._close_devices()
            for device in self.devices:
                kill_module_processes(self.state_dir(device.device_id))
        finally:
            for proxy in self._proxies.values():
                if not self.net.loop.is_closed():
                    self.net.run(proxy.close(), timeout=30)
            self.net.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_net(self, coroutine: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run a coroutine (e.g. `faults.restart_broker`) on the fleet's network loop."""
        return self.net.run(coroutine, timeout=timeout)

    @abstractmethod
    def _prepare(self) -> None:
        """Set up what a kind of fleet keeps per device (called at the end of construction)."""

    @abstractmethod
    def _start_devices(self) -> None: ...

    @abstractmethod
    def _close_devices(self) -> None: ...

    @abstractmethod
    def start_device(self, device_id: str) -> None:
        """Start the device's agent again after `stop_device`."""

    @abstractmethod
    def stop_device(self, device_id: str) -> None:
        """A clean stop: the agent reports, says "offline" and leaves its modules running."""

    @abstractmethod
    def running(self, device_id: str) -> bool: ...

    def restart_device(self, device_id: str) -> None:
        self.stop_device(device_id)
        self.start_device(device_id)

    # -- helpers -------------------------------------------------------------------------------

    def _device(self, device_id: str) -> DeviceCredentials:
        device = self._by_id.get(device_id)
        if device is not None:
            return device
        raise LookupError(f"device {device_id!r} is not in this fleet")

    def _check(self, device_id: str) -> None:
        self._device(device_id)


def kill_module_processes(state_dir: Path, *, wait: float = 10.0) -> list[int]:
    """SIGKILL the process groups of every process whose command line names `state_dir` or that a module record
    there names (the modules an agent left running: they live in sessions of their own by design) and wait until
    they are gone. Returns the pids found."""
    found = sorted(set(_processes_naming(str(state_dir).encode())) | set(_recorded_processes(state_dir)))
    for pid in found:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while found and time.monotonic() < deadline:
        left = set(_processes_naming(str(state_dir).encode())) | set(_recorded_processes(state_dir))
        if not set(found) & left:
            break
        time.sleep(0.05)
    return found


def _recorded_processes(state_dir: Path) -> list[int]:
    """The live processes the module records in `state_dir` name (checked by start time: pids are reused)."""
    pids: list[int] = []
    try:
        records = read_record_documents(state_dir)
    except (OSError, ValueError):
        return pids
    for record in records.values():
        pid, ticks = (record.get("pid"), record.get("startTicks")) if isinstance(record, dict) else (None, None)
        if isinstance(pid, int) and isinstance(ticks, int) and is_running(pid, ticks):
            pids.append(pid)
    return pids


def _processes_naming(needle: bytes) -> list[int]:
    """Live processes (not zombies, whose command line reads empty) with `needle` in their command line."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids

"""The agent's configuration: a connection string (what `edgewise device add` prints) plus local settings.

Connection string: `;`-separated `Key=Value` pairs, keys case-insensitive:

    Broker=mqtt://127.0.0.1:1883;DeviceId=cam-7;Secret=...;WorkspaceKey=ed25519:...;Registry=http://127.0.0.1:8080

`Broker` is `mqtt://host[:port]` (default port 1883) or `mqtts://` (TLS, default 8883). `Registry` is the base
URL images are pulled from when their reference names that host (http:// for a plain-HTTP registry);
`RegistryUsername`/`RegistryPassword` default to the device id and secret.

A config file (TOML) holds `connection_string` or the same fields in snake_case, and the local settings below;
command-line flags override it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgewise.runtime.agent.errors import ConfigError
from edgewise.runtime.agent.signing import PublicKey, load_public_key

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_KEYS = {
    "broker": "broker",
    "deviceid": "device_id",
    "secret": "secret",
    "workspacekey": "workspace_key",
    "registry": "registry",
    "registryusername": "registry_username",
    "registrypassword": "registry_password",
}


@dataclass(frozen=True, kw_only=True)
class Connection:
    """What a connection string says: where the broker and registry are, who the device is, whom to trust."""

    device_id: str
    secret: str
    broker_host: str
    broker_port: int
    broker_tls: bool
    workspace_key: PublicKey
    workspace_key_text: str
    registry: str | None = None
    registry_username: str | None = None
    registry_password: str | None = None

    @property
    def broker_url(self) -> str:
        return f"{'mqtts' if self.broker_tls else 'mqtt'}://{self.broker_host}:{self.broker_port}"


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """Local settings of one agent (the config file's other keys, or command-line flags)."""

    state_dir: Path = Path("/var/lib/edgewise-agent")
    # where the modules' private sockets go (None: $XDG_RUNTIME_DIR, else /run for root, else the temporary
    # folder); a RAM file system keeps a module start from writing to the device's storage (state.py)
    runtime_dir: Path | None = None
    disk_budget_bytes: int = 4 * 1024**3  # unpacked images and cached blobs together
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # Prometheus endpoint of the agent itself; None: off
    sandbox: str = "auto"  # auto | bubblewrap | none
    keepalive: float = 30.0  # MQTT keep-alive seconds
    reconnect_min: float = 0.5  # first reconnect delay; doubles with jitter up to reconnect_max
    reconnect_max: float = 60.0
    reconcile_interval: float = 5.0  # seconds between periodic reconcile passes (events trigger one at once)
    health_interval: float = 5.0  # seconds between module liveness probes
    stop_grace: float = 10.0  # seconds a module gets between SIGTERM and SIGKILL
    restart_cooloff: float = 10.0  # the restart back-off unit, doubled per restart and capped at 300 s
    launcher: bool = True  # fork modules from a process that imported the scoring server once (see launcher.py)
    launcher_idle: float = 60.0  # seconds a launcher with no module running is kept
    start_slots: int = 0  # modules that may be starting at once (0: two per CPU); see slots.StartSlots
    # paho's network loop in a thread of its own (a device); off, on the agent's event loop (a process that hosts
    # many device identities, which would otherwise run a thread per identity); see link/mqtt.py
    link_thread: bool = True


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    connection: Connection
    settings: AgentSettings


def parse_connection_string(text: str) -> Connection:
    """Parse a connection string; a ConfigError names the missing or bad field."""
    values: dict[str, str] = {}
    for part in text.strip().split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"connection string part {part.strip()!r} is not Key=Value")
        name = _KEYS.get(key.strip().lower())
        if name is None:
            raise ConfigError(f"connection string key {key.strip()!r} is unknown; known: {', '.join(_KEYS)}")
        values[name] = value.strip()
    return connection_from_fields(values)


def connection_from_fields(values: dict[str, Any]) -> Connection:
    missing = [k for k in ("broker", "device_id", "secret", "workspace_key") if not values.get(k)]
    if missing:
        raise ConfigError(f"the connection is missing {', '.join(missing)}")
    device_id = str(values["device_id"])
    if not DEVICE_ID.match(device_id):
        raise ConfigError(f"DeviceId {device_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    broker = urlsplit(str(values["broker"]))
    if broker.scheme not in ("mqtt", "mqtts") or not broker.hostname:
        raise ConfigError(f"Broker {values['broker']!r} must be mqtt://host[:port] or mqtts://host[:port]")
    tls = broker.scheme == "mqtts"
    registry = values.get("registry") or None
    if registry is not None and urlsplit(str(registry)).scheme not in ("http", "https"):
        raise ConfigError(f"Registry {registry!r} must be an http:// or https:// URL")
    key_text = str(values["workspace_key"])
    return Connection(
        device_id=device_id,
        secret=str(values["secret"]),
        broker_host=broker.hostname,
        broker_port=broker.port or (8883 if tls else 1883),
        broker_tls=tls,
        workspace_key=load_public_key(key_text),
        workspace_key_text=key_text,
        registry=str(registry).rstrip("/") if registry else None,
        registry_username=values.get("registry_username") or None,
        registry_password=values.get("registry_password") or None,
    )


def load_config(
    *, connection_string: str | None = None, config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> AgentConfig:
    """Combine a config file, a connection string and flag overrides (in rising precedence)."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
    text = connection_string or data.pop("connection_string", None) or os.environ.get("EDGEWISE_CONNECTION_STRING")
    if text:
        connection = parse_connection_string(str(text))
    else:
        connection = connection_from_fields({name: data.get(name) for name in _KEYS.values()})
    for name in _KEYS.values():
        data.pop(name, None)
    known = {f.name for f in fields(AgentSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file keys {', '.join(unknown)} are unknown; known: {', '.join(sorted(known))}")
    given: dict[str, Any] = {k: Path(v) if k in ("state_dir", "runtime_dir") else v for k, v in data.items()}
    settings = AgentSettings(**given)
    if overrides:
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if settings.sandbox not in ("auto", "bubblewrap", "none"):
        raise ConfigError(f"sandbox {settings.sandbox!r} must be auto, bubblewrap or none")
    return AgentConfig(connection=connection, settings=settings)

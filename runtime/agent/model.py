"""The agent's vocabulary: the desired manifest, module specs, lifecycle enums and the reported shape.

The manifest follows IoT Edge's `$edgeAgent` desired properties (see docs/agent.md for the JSON); these
classes are its validated, typed form. `manifest.py` parses and verifies the JSON into them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SCHEMA_VERSION = "1"


class ModuleType(enum.StrEnum):
    OCI = "oci"
    FPGA = "fpga"


class DesiredStatus(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class RestartPolicy(enum.StrEnum):
    """When a module that exited is started again (IoT Edge's values, minus on-unhealthy)."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"  # only after a non-zero exit or a failed health check
    NEVER = "never"


class RuntimeStatus(enum.StrEnum):
    """What a module is doing now, as reported in `modules.{name}.runtimeStatus`."""

    UNKNOWN = "unknown"  # not yet observed (e.g. just after the agent started)
    BACKOFF = "backoff"  # exited; waiting out the restart cool-off
    RUNNING = "running"
    STOPPED = "stopped"  # stopped on purpose, or ended cleanly and the policy says not to restart
    FAILED = "failed"  # gave up (restart count exhausted), or failed and the policy says not to restart


class DesiredStatusCode(enum.IntEnum):
    """`lastDesiredStatus.code`, after IoT Edge's agent codes."""

    OK = 200  # the last accepted manifest is applied
    APPLYING = 202  # accepted, steps still running
    REJECTED = 400  # the manifest was not accepted (malformed, unsigned, badly signed, stale)
    PARTIAL = 409  # applied except some modules, which kept or rolled back to their previous version
    FAILED = 500  # could not be applied at all


@dataclass(frozen=True, kw_only=True)
class ModuleSettings:
    """Where and how a scoring module serves. Ports are shared across versions (SO_REUSEPORT)."""

    http_port: int
    grpc_port: int
    host: str = "127.0.0.1"
    max_restarts: int = 5  # restarts before the module is `failed`
    startup_timeout: float = 60.0  # seconds a new version has to pass its health check
    warmup: bool = True  # send one inference with zero inputs before declaring a version healthy
    metrics: bool = True  # run the module with --metrics so its Prometheus figures can be scraped


@dataclass(frozen=True, kw_only=True)
class ModuleSpec:
    """One module of the desired manifest."""

    name: str
    type: ModuleType
    image: str  # "host[:port]/repository@sha256:<hex>": always by digest
    status: DesiredStatus = DesiredStatus.RUNNING
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    settings: ModuleSettings

    @property
    def digest(self) -> str:
        """The image manifest digest the reference pins."""
        return self.image.rsplit("@", 1)[1]

    def same_deployment(self, other: ModuleSpec) -> bool:
        """Whether `other` can keep running as is for this spec (only the desired status may differ)."""
        return (
            self.type == other.type
            and self.image == other.image
            and dict(self.env) == dict(other.env)
            and self.settings == other.settings
        )


@dataclass(frozen=True, kw_only=True)
class TelemetrySettings:
    """How telemetry is produced and how much of it the on-disk spool keeps while offline."""

    time_to_live: float = 7 * 24 * 3600.0  # seconds a spooled record is kept (manifest: timeToLiveSecs)
    max_bytes: int = 64 * 1024 * 1024  # spool size bound (manifest: maxBytes)
    interval: float = 10.0  # seconds between health and scoring-statistics records (intervalSecs)
    sample_rate: float = 0.0  # fraction of inference requests whose inputs/outputs are sampled (sampleRate)
    batch_max_records: int = 5000  # records per MQTT message at most (batchMaxRecords)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A verified desired manifest. `raw` is the JSON document as received (kept for the state directory)."""

    device_id: str
    version: int
    modules: Mapping[str, ModuleSpec]
    telemetry: TelemetrySettings
    issued_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

"""The telemetry's records, shared by the store, the HTTP API and the client (no SQLAlchemy, no paho here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgewise.cloud.store.records import _Record

# The device's `reported` document carries what the workspace itself counted about the device's telemetry under
# this key (a name no agent produces): stored records, duplicates, invalid records, the device's drop counters.
INGEST_KEY = "$ingest"

R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class TelemetryRecord(_Record):
    """One record as the device produced it (docs/agent.md), with the time the workspace stored it."""

    device_id: str
    seq: int
    ts: float
    received_at: float
    kind: str
    module: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TelemetryRecord:
        return _from_dict(cls, data)


@dataclass(frozen=True, kw_only=True)
class InsertResult:
    """What one telemetry message changed: records stored, records already stored, records refused."""

    inserted: int
    duplicates: int
    invalid: int = 0


@dataclass(frozen=True, kw_only=True)
class DeviceHealth(_Record):
    """One device's line in the fleet summary.

    `failing_modules` come from the reported state (a module failed, backing off, or rolled back); CPU, memory
    and disk from the newest `health` record; request and error rates from each module's newest `scoring`
    record (`error_rate`: failed requests / requests in that interval, None without requests).
    """

    id: str
    status: str | None = None
    online: bool = False
    last_seen_at: float | None = None
    desired_version: int | None = None
    reported_version: int | None = None
    failing_modules: list[dict[str, Any]] = field(default_factory=list)
    health_at: float | None = None
    cpu_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    scoring_at: float | None = None
    requests_per_second: float | None = None
    error_rate: float | None = None
    unavailable_modules: list[str] = field(default_factory=list)
    telemetry_records: int = 0
    duplicates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceHealth:
        return _from_dict(cls, data)


def _from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
    # Built by hand: the generic builder reads every `status` and `kind` field as the runs' enums.
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})

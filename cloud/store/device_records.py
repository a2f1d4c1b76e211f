"""The device registry's records, shared by the service, the HTTP API and the client."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgewise.cloud.store.records import _Record

DEVICE_STATUSES = ("online", "offline")


@dataclass(frozen=True, kw_only=True)
class Device(_Record):
    """A registered device: its tags, and what it last said about itself (None until it has said anything).

    `status` is the device's own `status` topic (online/offline), `reported` its last `reported` document,
    `desired_version` the version of the last manifest the workspace published for it.
    """

    id: str
    created_at: float
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    last_seen_at: float | None = None
    reported: dict[str, Any] | None = None
    desired_version: int | None = None

    @property
    def reported_version(self) -> int | None:
        """The manifest version the device last reported as applied or attempted."""
        value = (self.reported or {}).get("lastDesiredVersion")
        return value if isinstance(value, int) else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Device:
        # Built by hand: the generic builder reads every `status` field as a RunStatus.
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, kw_only=True)
class NewDevice:
    """A device just added, with the connection string that carries its secret (shown this once only)."""

    device: Device
    connection_string: str

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device.to_dict(), "connection_string": self.connection_string}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NewDevice:
        return cls(device=Device.from_dict(data["device"]), connection_string=str(data["connection_string"]))

    def __repr__(self) -> str:
        return f"NewDevice(device={self.device!r}, connection_string='***')"

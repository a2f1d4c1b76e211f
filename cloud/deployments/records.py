"""The deployment controller's records: a deployment, and one device's progress through it."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from edgewise.cloud.store.records import _Record


class _Plain(_Record):
    """Records whose fields are all plain JSON values (their `status` is not a run status)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{key: value for key, value in data.items() if key in names})


class DeploymentStatus(enum.StrEnum):
    ROLLING_OUT = "rolling-out"  # a staged rollout is releasing batches
    ACTIVE = "active"  # every targeted device has it (or is being given it)
    ROLLED_BACK = "rolled-back"  # too many devices failed: the modules were taken back off every device


class DeviceState(enum.StrEnum):
    PENDING = "pending"  # targeted, waiting for its batch of a staged rollout
    TARGETED = "targeted"  # the manifest that includes it was published
    APPLIED = "applied"  # the device applied that manifest (lastDesiredVersion caught up)
    SUCCEEDED = "succeeded"  # the module runs the deployment's image
    FAILED = "failed"  # the module failed, rolled back, or the manifest was refused
    ROLLED_BACK = "rolled-back"  # the deployment was taken off the device again by an automatic rollback
    OVERRIDDEN = "overridden"  # released, but a deployment of higher priority (or newer) supplies its module


# States in which the deployment is released to the device: its manifest is computed with it (an overridden
# one is there to take its module back when the deployment that overrides it goes).
RELEASED = frozenset(
    {DeviceState.TARGETED, DeviceState.APPLIED, DeviceState.SUCCEEDED, DeviceState.FAILED, DeviceState.OVERRIDDEN}
)
# States in which nothing more happens to the deployment on that device until something changes.
SETTLED = frozenset({DeviceState.SUCCEEDED, DeviceState.FAILED, DeviceState.ROLLED_BACK, DeviceState.OVERRIDDEN})


@dataclass(frozen=True, kw_only=True)
class Deployment(_Plain):
    """One image deployed as a module to a device or to every device whose tags match a condition."""

    name: str
    image_name: str
    image_version: int
    manifest_digest: str
    image: str  # the module's image reference by digest, HOST:PORT/NAME@sha256:...
    device_id: str | None = None
    target: str | None = None
    priority: int = 0
    module: str
    module_type: str = "oci"  # the image's kind: oci, or fpga for an FPGA image
    env: dict[str, str] = field(default_factory=dict)
    restart_policy: str = "always"
    settings: dict[str, Any] = field(default_factory=dict)  # httpPort/grpcPort when given
    batch_size: int | None = None
    batch_percent: float | None = None
    max_failures: int | None = None
    status: str = DeploymentStatus.ACTIVE.value
    reason: str | None = None
    created_at: float
    serial: int = 0  # creation order, the tie-break between equal priorities (newest wins)


@dataclass(frozen=True, kw_only=True)
class DeviceRollout(_Plain):
    """Where one targeted device stands in a deployment."""

    deployment: str
    device_id: str
    state: str
    reason: str | None = None
    batch: int | None = None
    version: int | None = None  # the device's manifest version that first included the deployment
    updated_at: float


@dataclass(frozen=True, kw_only=True)
class DeploymentReport(_Record):
    """A deployment with its per-device states and the IoT Hub-style counts."""

    deployment: Deployment
    devices: list[DeviceRollout] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # targeted, applied, succeeded, failed

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            deployment=Deployment.from_dict(data["deployment"]),
            devices=[DeviceRollout.from_dict(item) for item in data.get("devices", [])],
            counts=dict(data.get("counts", {})),
        )

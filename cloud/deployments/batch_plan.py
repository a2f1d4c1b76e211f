"""What a publication does to one device, decided from a snapshot of its rollout rows (pure, no I/O).

The device's manifest carries the deployments released to it. When that differs from the manifest it was last
sent, a new version is needed; either way its rows move: a deployment whose module another one overrides says
which, and a row gets the version of the first manifest that carried its deployment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgewise.cloud.deployments import manifests
from edgewise.cloud.deployments.records import RELEASED, Deployment, DeviceRollout, DeviceState


@dataclass(frozen=True, kw_only=True)
class RowChange:
    """A new state (and reason) for one device's row of one deployment."""

    deployment: str
    device_id: str
    state: str
    reason: str | None = None
    version: int | None = None  # the first manifest version that carried the deployment; kept once set
    drop_version: bool = False  # the manifest no longer carries it: the next one that does sets the version


@dataclass(frozen=True, kw_only=True)
class DevicePlan:
    """One device's manifest as the deployments released to it ask for it."""

    device_id: str
    released: tuple[Deployment, ...]
    draft: Mapping[str, Any]  # the unsigned manifest, its version still to be given
    latest: Mapping[str, Any] | None  # the manifest last stored for the device
    losers: Mapping[str, str]  # deployment -> the deployment that overrides its module

    @property
    def changed(self) -> bool:
        """Whether the device needs a new manifest version (the latest one asks for something else)."""
        return not manifests.same_content(self.latest, self.draft)

    @property
    def latest_version(self) -> int:
        return int(self.latest["version"]) if self.latest is not None else 0

    def manifest(self, version: int) -> dict[str, Any]:
        """The unsigned manifest under `version`."""
        return {**self.draft, "version": version}

    def row_changes(self, rows: Sequence[DeviceRollout], version: int) -> list[RowChange]:
        """How the device's rows move now that manifest `version` carries (or keeps carrying) its deployments."""
        by_name = {row.deployment: row for row in rows}
        changes: list[RowChange] = []
        for deployment in self.released:
            winner = self.losers.get(deployment.name)
            if winner is not None:
                reason = f"module {deployment.module} comes from deployment {winner} (higher priority or newer)"
                changes.append(self._change(deployment, DeviceState.OVERRIDDEN, reason=reason, drop_version=True))
            elif by_name[deployment.name].version is None:
                changes.append(self._change(deployment, DeviceState.TARGETED, version=version))
        return changes

    def _change(
        self,
        deployment: Deployment,
        state: DeviceState,
        *,
        reason: str | None = None,
        version: int | None = None,
        drop_version: bool = False,
    ) -> RowChange:
        return RowChange(
            deployment=deployment.name,
            device_id=self.device_id,
            state=state.value,
            reason=reason,
            version=version,
            drop_version=drop_version,
        )


def plan_device(
    *,
    device_id: str,
    rows: Sequence[DeviceRollout],
    deployments: Mapping[str, Deployment],
    latest: Mapping[str, Any] | None,
    telemetry: Mapping[str, Any],
) -> DevicePlan | None:
    """The device's plan; None when it never had a manifest and still has nothing to run (none is sent)."""
    released = tuple(
        deployments[row.deployment] for row in rows if row.state in RELEASED and row.deployment in deployments
    )
    draft = manifests.build_manifest(device_id=device_id, version=0, deployments=released, telemetry=telemetry)
    if latest is None and not draft["modules"]:
        return None
    return DevicePlan(
        device_id=device_id,
        released=released,
        draft=draft,
        latest=latest,
        losers=manifests.resolve(released).losers,
    )

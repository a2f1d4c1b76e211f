"""The deployment controller: target conditions, per-device manifests, rollout status. The controller itself
(`edgewise.cloud.deployments.controller`) is imported by the service's composition root."""

from __future__ import annotations

from .conditions import Condition, parse_condition
from .manifests import assign_ports, build_manifest, resolve
from .records import Deployment, DeploymentReport, DeploymentStatus, DeviceRollout, DeviceState
from .status import device_state

__all__ = [
    "Condition",
    "Deployment",
    "DeploymentReport",
    "DeploymentStatus",
    "DeviceRollout",
    "DeviceState",
    "assign_ports",
    "build_manifest",
    "device_state",
    "parse_condition",
    "resolve",
]

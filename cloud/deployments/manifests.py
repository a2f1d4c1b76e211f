"""Each device's desired manifest from the deployments that reach it: pure functions, no I/O.

Per module name the deployment with the highest priority wins; equal priorities go to the newest deployment.
Ports come from the deployment when it names them, else from a per-device hash of the module name into
`PORT_RANGE`, moved on past ports another module of the device already uses, so they stay stable as other
modules come and go and never clash on one device.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgewise.cloud.deployments.records import Deployment
from edgewise.runtime.agent.model import SCHEMA_VERSION

PORT_RANGE = (20000, 29999)  # inclusive; assigned ports come in pairs (http, http + 1 for gRPC)

DEFAULT_TELEMETRY: dict[str, Any] = {
    "timeToLiveSecs": 7 * 24 * 3600,
    "maxBytes": 64 * 1024 * 1024,
    "intervalSecs": 10,
    "sampleRate": 0.0,
    "batchMaxRecords": 5000,
}


@dataclass(frozen=True, kw_only=True)
class Resolution:
    """Which deployment won each module of a device, and which lost to it."""

    winners: dict[str, Deployment]  # module name -> deployment
    losers: dict[str, str]  # deployment name -> the deployment that overrides it


def resolve(deployments: Iterable[Deployment]) -> Resolution:
    """Pick the winning deployment per module: highest priority, then newest (`serial`), then name."""
    ranked = sorted(deployments, key=lambda d: (d.priority, d.serial, d.created_at, d.name), reverse=True)
    winners: dict[str, Deployment] = {}
    losers: dict[str, str] = {}
    for deployment in ranked:
        if deployment.module in winners:
            losers[deployment.name] = winners[deployment.module].name
        else:
            winners[deployment.module] = deployment
    return Resolution(winners=winners, losers=losers)


def assign_ports(device_id: str, modules: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """(httpPort, grpcPort) per module: the given ones, else a stable free pair from `PORT_RANGE`."""
    ports: dict[str, tuple[int, int]] = {}
    used: set[int] = set()
    for name in sorted(modules):
        http, grpc = modules[name].get("httpPort"), modules[name].get("grpcPort")
        if isinstance(http, int):
            used.add(http)
        if isinstance(grpc, int):
            used.add(grpc)
    low, high = PORT_RANGE
    pairs = (high - low + 1) // 2
    for name in sorted(modules):
        given = modules[name]
        http, grpc = given.get("httpPort"), given.get("grpcPort")
        if isinstance(http, int) and isinstance(grpc, int):
            ports[name] = (http, grpc)
            continue
        seed = int.from_bytes(hashlib.sha256(f"{device_id}/{name}".encode()).digest()[:8], "big")
        for step in range(pairs):
            base = low + ((seed + step) % pairs) * 2
            candidate = (http if isinstance(http, int) else base, grpc if isinstance(grpc, int) else base + 1)
            if candidate[0] == candidate[1]:
                continue
            fresh = [p for p, g in zip(candidate, (http, grpc), strict=True) if not isinstance(g, int)]
            if not any(p in used for p in fresh):
                used.update(fresh)
                ports[name] = candidate
                break
    return ports


def module_entry(deployment: Deployment, *, http_port: int, grpc_port: int) -> dict[str, Any]:
    """The manifest's `modules.{name}` object for `deployment`."""
    settings = {k: v for k, v in deployment.settings.items() if k not in ("httpPort", "grpcPort")}
    return {
        "type": deployment.module_type,
        "image": deployment.image,
        "status": "running",
        "restartPolicy": deployment.restart_policy,
        "env": dict(deployment.env),
        "settings": {**settings, "httpPort": http_port, "grpcPort": grpc_port},
    }


def build_manifest(
    *,
    device_id: str,
    version: int,
    deployments: Sequence[Deployment],
    telemetry: Mapping[str, Any] | None = None,
    issued_at: float | None = None,
) -> dict[str, Any]:
    """The unsigned manifest of `device_id` from the deployments released to it."""
    winners = resolve(deployments).winners
    ports = assign_ports(device_id, {name: d.settings for name, d in winners.items()})
    modules = {
        name: module_entry(winners[name], http_port=ports[name][0], grpc_port=ports[name][1])
        for name in sorted(winners)
    }
    return {
        "schemaVersion": SCHEMA_VERSION,
        "deviceId": device_id,
        "version": version,
        "issuedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if issued_at is None else issued_at)),
        "modules": modules,
        "telemetry": dict(telemetry if telemetry is not None else DEFAULT_TELEMETRY),
    }


def same_content(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Whether two manifests ask for the same modules and telemetry (version, time and signature aside)."""
    if a is None:
        return False
    return a.get("modules") == b.get("modules") and a.get("telemetry") == b.get("telemetry")

"""Desired manifests for simulated devices, shaped as docs/agent.md describes and signed by the workspace key."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.runtime.agent.signing import sign_document

Document = dict[str, Any]

# Telemetry every few seconds, kept small: a fleet of a hundred devices shares one machine.
FLEET_TELEMETRY: Mapping[str, Any] = {
    "intervalSecs": 5,
    "timeToLiveSecs": 3600,
    "maxBytes": 4 * 1024 * 1024,
    "sampleRate": 0.0,
}


def manifest_document(
    *,
    device_id: str,
    version: int,
    modules: Mapping[str, Mapping[str, Any]] | None = None,
    telemetry: Mapping[str, Any] | None = None,
) -> Document:
    """An unsigned manifest; with no modules it is the empty manifest every device can apply."""
    return {
        "schemaVersion": "1",
        "deviceId": device_id,
        "version": version,
        "issuedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modules": {name: dict(entry) for name, entry in (modules or {}).items()},
        "telemetry": dict(telemetry or FLEET_TELEMETRY),
    }


def signed_manifest(
    key: Ed25519PrivateKey,
    *,
    device_id: str,
    version: int,
    modules: Mapping[str, Mapping[str, Any]] | None = None,
    telemetry: Mapping[str, Any] | None = None,
) -> Document:
    """`manifest_document`, signed with the workspace's private key."""
    document = manifest_document(device_id=device_id, version=version, modules=modules, telemetry=telemetry)
    return sign_document(document, key)

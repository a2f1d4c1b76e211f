"""What a device's reported state says about one deployment on it (pure): IoT Hub's targeted, applied,
reporting success and reporting failure, with the reason a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgewise.cloud.deployments.records import DeviceState

_FAILED_RUNTIME = ("failed", "backoff")


def device_state(
    *, reported: Mapping[str, Any] | None, version: int, module: str, digest: str
) -> tuple[DeviceState, str | None]:
    """The state of a deployment (module `module`, image `digest`) on a device sent manifest `version`."""
    if not reported:
        return DeviceState.TARGETED, "the device has not reported yet"
    rejected = reported.get("rejected")
    if isinstance(rejected, dict) and _int(rejected.get("version")) >= version:
        return DeviceState.FAILED, f"manifest v{rejected.get('version')} refused ({rejected.get('code')}): " + str(
            rejected.get("description") or ""
        )
    applied = _int(reported.get("lastDesiredVersion"))
    if applied < version:
        return DeviceState.TARGETED, f"the device applied manifest v{applied if applied >= 0 else '-'}, not v{version}"
    raw_status = reported.get("lastDesiredStatus")
    status: Mapping[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    code = _int(status.get("code"))
    raw_modules = reported.get("modules")
    modules: Mapping[str, Any] = raw_modules if isinstance(raw_modules, dict) else {}
    entry = modules.get(module)
    if isinstance(entry, dict):
        rollback = entry.get("rollback")
        if isinstance(rollback, dict) and rollback.get("fromDigest") in (digest, None):
            return DeviceState.FAILED, f"module {module} rolled back: {rollback.get('reason') or 'no reason given'}"
        runtime = entry.get("runtimeStatus")
        description = entry.get("statusDescription") or ""
        if runtime in _FAILED_RUNTIME:
            return DeviceState.FAILED, f"module {module} is {runtime}: {description}".rstrip(": ")
        if runtime == "running" and entry.get("imageDigest") == digest and code == 200:
            return DeviceState.SUCCEEDED, None
    if code >= 400 and code != 409:
        return DeviceState.FAILED, f"manifest v{applied}: {code} {status.get('description') or ''}".rstrip()
    if entry is None and code in (200, 409, 500):
        return DeviceState.FAILED, f"module {module} is missing from the device's report ({code})"
    return DeviceState.APPLIED, f"module {module} is {entry.get('runtimeStatus') if isinstance(entry, dict) else '-'}"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1

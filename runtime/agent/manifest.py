"""Turn a desired-manifest message into a verified `Manifest`, or say precisely why it is refused.

Order of checks: JSON object → signature (before anything in it is trusted) → device id → shape → version
newer than the last accepted one. The JSON layout is documented in docs/agent.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from edgewise.runtime.agent.errors import ManifestError
from edgewise.runtime.agent.model import (
    SCHEMA_VERSION,
    DesiredStatus,
    Manifest,
    ModuleSettings,
    ModuleSpec,
    ModuleType,
    RestartPolicy,
    TelemetrySettings,
)
from edgewise.runtime.agent.signing import PublicKey, verify_document

MODULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
IMAGE_BY_DIGEST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*@sha256:[0-9a-f]{64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_E = TypeVar("_E", ModuleType, DesiredStatus, RestartPolicy)


def parse_manifest(
    payload: bytes | Mapping[str, Any],
    *,
    device_id: str,
    public_key: PublicKey,
    last_version: int | None = None,
) -> Manifest:
    """Verify and parse a desired manifest; raise ManifestError with a code for every refusal."""
    document = _load(payload)
    verify_document(document, public_key)
    target = document.get("deviceId")
    if target != device_id:
        raise ManifestError("wrong-device", f"the manifest is for device {target!r}, not {device_id!r}")
    schema = document.get("schemaVersion", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ManifestError("malformed", f"schemaVersion {schema!r} is not supported; expected {SCHEMA_VERSION}")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ManifestError("malformed", "'version' must be a non-negative integer")
    modules = _modules(document.get("modules", {}))
    telemetry = _telemetry(document.get("telemetry", {}))
    issued_at = document.get("issuedAt")
    if issued_at is not None and not isinstance(issued_at, str):
        raise ManifestError("malformed", "'issuedAt' must be a string (RFC 3339)")
    if last_version is not None and version <= last_version:
        raise ManifestError("stale", f"manifest version {version} is not newer than the applied version {last_version}")
    return Manifest(
        device_id=device_id,
        version=version,
        modules=MappingProxyType(modules),
        telemetry=telemetry,
        issued_at=issued_at,
        raw=MappingProxyType(dict(document)),
    )


def _load(payload: bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError("malformed", f"the manifest is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestError("malformed", "the manifest must be a JSON object")
    return document


def _modules(value: object) -> dict[str, ModuleSpec]:
    if not isinstance(value, dict):
        raise ManifestError("malformed", "'modules' must be an object of module name to module")
    modules = {name: _module(name, spec) for name, spec in value.items()}
    ports: dict[int, str] = {}
    for spec in modules.values():
        for port in (spec.settings.http_port, spec.settings.grpc_port):
            if port in ports:
                raise ManifestError("malformed", f"modules {ports[port]!r} and {spec.name!r} both use port {port}")
            ports[port] = spec.name
    return modules


def _module(name: object, spec: object) -> ModuleSpec:
    if not isinstance(name, str) or not MODULE_NAME.match(name):
        raise ManifestError("malformed", f"module name {name!r}: use 1-63 of a-z 0-9 . _ -, starting alnum")
    where = f"module {name!r}"
    if not isinstance(spec, dict):
        raise ManifestError("malformed", f"{where} must be an object")
    image = spec.get("image")
    if not isinstance(image, str) or not IMAGE_BY_DIGEST.match(image):
        raise ManifestError("malformed", f"{where}: 'image' must name an image by digest, host/repo@sha256:<64 hex>")
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and ENV_NAME.match(k) and isinstance(v, str)
                                            for k, v in env.items()):
        raise ManifestError("malformed", f"{where}: 'env' must map variable names to strings")
    return ModuleSpec(
        name=name,
        type=_enum(ModuleType, spec.get("type", "oci"), f"{where}: 'type'"),
        image=image,
        status=_enum(DesiredStatus, spec.get("status", "running"), f"{where}: 'status'"),
        restart_policy=_enum(RestartPolicy, spec.get("restartPolicy", "always"), f"{where}: 'restartPolicy'"),
        env=MappingProxyType(dict(env)),
        settings=_settings(spec.get("settings"), where),
    )


def _settings(value: object, where: str) -> ModuleSettings:
    if not isinstance(value, dict):
        raise ManifestError("malformed", f"{where}: 'settings' must be an object with httpPort and grpcPort")
    http_port = _port(value.get("httpPort"), f"{where}: settings.httpPort")
    grpc_port = _port(value.get("grpcPort"), f"{where}: settings.grpcPort")
    if http_port == grpc_port:
        raise ManifestError("malformed", f"{where}: httpPort and grpcPort must differ")
    defaults = ModuleSettings(http_port=http_port, grpc_port=grpc_port)
    host = value.get("host", defaults.host)
    if not isinstance(host, str) or not host:
        raise ManifestError("malformed", f"{where}: settings.host must be an address")
    max_restarts = _number(value.get("maxRestarts", defaults.max_restarts), f"{where}: settings.maxRestarts", int)
    timeout = _number(value.get("startupTimeoutSecs", defaults.startup_timeout), f"{where}: startupTimeoutSecs")
    warmup = value.get("warmup", defaults.warmup)
    metrics = value.get("metrics", defaults.metrics)
    if not isinstance(warmup, bool) or not isinstance(metrics, bool):
        raise ManifestError("malformed", f"{where}: settings.warmup and settings.metrics are booleans")
    return ModuleSettings(
        http_port=http_port, grpc_port=grpc_port, host=host, max_restarts=int(max_restarts),
        startup_timeout=float(timeout), warmup=warmup, metrics=metrics,
    )


def _telemetry(value: object) -> TelemetrySettings:
    if not isinstance(value, dict):
        raise ManifestError("malformed", "'telemetry' must be an object")
    d = TelemetrySettings()
    sample_rate = _number(value.get("sampleRate", d.sample_rate), "telemetry.sampleRate")
    if sample_rate > 1:
        raise ManifestError("malformed", "telemetry.sampleRate is a fraction between 0 and 1")
    return TelemetrySettings(
        time_to_live=float(_number(value.get("timeToLiveSecs", d.time_to_live), "telemetry.timeToLiveSecs")),
        max_bytes=int(_number(value.get("maxBytes", d.max_bytes), "telemetry.maxBytes", int)),
        interval=float(_number(value.get("intervalSecs", d.interval), "telemetry.intervalSecs")),
        sample_rate=float(sample_rate),
        batch_max_records=int(_number(value.get("batchMaxRecords", d.batch_max_records), "telemetry.batchMaxRecords",
                                      int)),
    )


def _enum(kind: type[_E], value: object, where: str) -> _E:
    try:
        return kind(str(value))
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ManifestError("malformed", f"{where} is {value!r}; expected one of {choices}") from None


def _port(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ManifestError("malformed", f"{where} must be a port number 1-65535")
    return value


def _number(value: object, where: str, kind: type = float) -> float:
    allowed = (int,) if kind is int else (int, float)
    if not isinstance(value, allowed) or isinstance(value, bool) or value < 0:
        raise ManifestError("malformed", f"{where} must be a non-negative {'integer' if kind is int else 'number'}")
    return float(value)

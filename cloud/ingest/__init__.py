"""The service's MQTT ingest: devices' `status`, `reported` and `telemetry` messages into the store.

The records (`edgewise.cloud.ingest.records`) are shared with the clients, which should not pay for importing
paho or SQLAlchemy: the ingest itself is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgewise.cloud.ingest.decode import TelemetryBatch, decode_batch
    from edgewise.cloud.ingest.records import DeviceHealth, InsertResult, TelemetryRecord
    from edgewise.cloud.ingest.service import TelemetryIngest

__all__ = ["DeviceHealth", "InsertResult", "TelemetryBatch", "TelemetryIngest", "TelemetryRecord", "decode_batch"]

_LAZY = {
    "DeviceHealth": "edgewise.cloud.ingest.records",
    "InsertResult": "edgewise.cloud.ingest.records",
    "TelemetryRecord": "edgewise.cloud.ingest.records",
    "TelemetryBatch": "edgewise.cloud.ingest.decode",
    "decode_batch": "edgewise.cloud.ingest.decode",
    "TelemetryIngest": "edgewise.cloud.ingest.service",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

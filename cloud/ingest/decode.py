"""Telemetry messages off the wire: zlib-compressed JSON (or plain JSON starting with `{`) → checked records.

A message that cannot be read at all raises InvalidInputError; single malformed records inside a readable
message are left out and counted, so one bad record never costs the others.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from edgewise.cloud.errors import InvalidInputError

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # decompressed; a batch of 5000 records is a few MiB
MAX_KIND = 16
MAX_MODULE = 128
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, kw_only=True)
class TelemetryBatch:
    """A decoded message: the records worth storing (plain dicts, `data` already serialised) and the device's
    drop counters."""

    records: list[dict[str, Any]]
    dropped: dict[str, int] = field(default_factory=dict)
    invalid: int = 0


def decode_batch(payload: bytes, *, device_id: str) -> TelemetryBatch:
    """The records of one message on `edgewise/v1/devices/{device_id}/telemetry`."""
    document = _document(payload)
    if not isinstance(document, dict):
        raise InvalidInputError("a telemetry message is a JSON object with `records`")
    sender = document.get("deviceId")
    if sender is not None and sender != device_id:
        raise InvalidInputError(f"a telemetry message on {device_id}'s topic names device {sender!r}")
    raw_records = document.get("records")
    if not isinstance(raw_records, list):
        raise InvalidInputError("a telemetry message needs a `records` list")
    records: list[dict[str, Any]] = []
    invalid = 0
    for raw in raw_records:
        row = _record(raw)
        if row is None:
            invalid += 1
        else:
            records.append(row)
    return TelemetryBatch(records=records, dropped=_dropped(document.get("dropped")), invalid=invalid)


def _document(payload: bytes) -> Any:
    text = payload
    if payload.lstrip()[:1] != b"{":
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(payload, MAX_MESSAGE_BYTES)
        except zlib.error as exc:
            raise InvalidInputError(f"a telemetry message is neither JSON nor zlib-compressed JSON ({exc})") from exc
        if inflater.unconsumed_tail:
            raise InvalidInputError(f"a telemetry message decompresses to more than {MAX_MESSAGE_BYTES} bytes")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"a telemetry message is not valid JSON ({exc})") from exc


def _record(raw: Any) -> dict[str, Any] | None:
    """A row for the store, or None for a record that breaks the shape of docs/agent.md."""
    if not isinstance(raw, dict):
        return None
    seq, ts, kind, module, data = raw.get("seq"), raw.get("ts"), raw.get("kind"), raw.get("module"), raw.get("data")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        return None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return None
    if not isinstance(kind, str) or not 1 <= len(kind) <= MAX_KIND:
        return None
    if module is not None and (not isinstance(module, str) or not 1 <= len(module) <= MAX_MODULE):
        return None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None
    return {"seq": seq, "ts": float(ts), "kind": kind, "module": module, "data": orjson.dumps(data).decode()}


def _dropped(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if type(v) is int and v >= 0}

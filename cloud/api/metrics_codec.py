"""Metric batches on the wire, decoded and encoded by hand: a batch holds thousands of points, and generic
model validation would cost more than storing them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.store.records import MetricKind, MetricPoint

_KINDS = {kind.value: kind for kind in MetricKind}


def decode_points(raw: bytes) -> list[MetricPoint]:
    """`{"points": [MetricPoint, ...]}` → records; the first bad point fails the batch with its index."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the metrics body is not valid JSON: {exc}") from exc
    points = body.get("points") if isinstance(body, dict) else None
    if not isinstance(points, list):
        raise InvalidInputError('the metrics body must be {"points": [{"name", "timestamp", "value", ...}]}')
    decoded = []
    for index, point in enumerate(points):
        try:
            decoded.append(_point(point))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"points[{index}]: {exc}") from None
    return decoded


def encode_rows(rows: Sequence[tuple[Any, ...]]) -> bytes:
    """`{"metrics": [MetricPoint, ...]}` straight from the store's (name, timestamp, value, step, kind, payload
    JSON text) tuples."""
    fragment = orjson.Fragment
    return orjson.dumps(
        {
            "metrics": [
                {
                    "name": name,
                    "timestamp": timestamp,
                    "value": value,
                    "step": step,
                    "kind": kind,
                    "payload": None if payload is None else fragment(payload),
                }
                for name, timestamp, value, step, kind, payload in rows
            ]
        }
    )


def _point(data: Any) -> MetricPoint:
    if not isinstance(data, dict):
        raise TypeError("a point is an object")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    timestamp = data["timestamp"]
    if not _is_number(timestamp):
        raise TypeError("timestamp must be a number (seconds since the epoch)")
    value = data.get("value")
    if value is not None and not _is_number(value):
        raise TypeError(f"value of {name!r} must be a number or null")
    step = data.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise TypeError(f"step of {name!r} must be an integer or null")
    kind = data.get("kind", "scalar")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}")
    return MetricPoint.checked(
        name=name, timestamp=float(timestamp), value=value, step=step, kind=_KINDS[kind], payload=data.get("payload")
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

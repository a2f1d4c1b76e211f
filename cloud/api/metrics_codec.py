"""Metric batches on the wire, decoded and encoded by hand: a batch holds thousands of points, and generic
model validation would cost more than storing them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.store.sql_metrics import MetricItem

_SHAPE = 'the metrics body must be {"points": [{"name", "timestamp", "value", ...}]}'


def decode_items(raw: bytes) -> list[MetricItem]:
    """`{"points": [MetricPoint, ...]}` → (name, kind, value, step, timestamp, payload) tuples for the store,
    which checks every value (and names the index of the first bad point); here only the shape is checked."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the metrics body is not valid JSON: {exc}") from exc
    points = body.get("points") if body.__class__ is dict else None
    if points.__class__ is not list:
        raise InvalidInputError(_SHAPE)
    items: list[MetricItem] = []
    append = items.append
    try:
        for point in points:
            get = point.get
            name, timestamp = point["name"], point["timestamp"]
            append((name, get("kind", "scalar"), get("value"), get("step"), timestamp, get("payload")))
    except KeyError as exc:  # the failing point is the one after the last appended
        raise InvalidInputError(f"points[{len(items)}]: a point needs {exc.args[0]!r}") from None
    except (AttributeError, TypeError):
        raise InvalidInputError(f"points[{len(items)}]: a point is an object; {_SHAPE}") from None
    return items


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

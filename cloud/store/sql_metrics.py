"""The metrics part of `SqlStore`: appending points fast and keeping the latest value of each scalar.

Training scripts log in batches of thousands of points, so the append path avoids per-row work in the ORM
and in SQLAlchemy's parameter handling: points are checked in one tight loop and inserted with a single
driver-level executemany in one transaction. The latest value of each scalar metric (highest step, then
latest timestamp, then last logged) is upserted into `latest_metrics` in the same transaction, which is what
run filters and sorts read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import InvalidInputError, NotFoundError
from edgewise.cloud.store.database import Database
from edgewise.cloud.store.records import MetricKind, MetricPoint
from edgewise.cloud.store.schema import latest_metrics, metrics, runs
from edgewise.cloud.store.values import check_key, dumps, loads

_SCALAR = MetricKind.SCALAR
_COLUMNS = ("run_id", "name", "kind", "value", "step", "timestamp", "payload")


def require_run(conn: sa.Connection, run_id: str) -> None:
    if conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first() is None:
        raise NotFoundError(f"no run {run_id!r}")


class SqlMetrics:
    _db: Database

    def log_metrics(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        """Append points in one transaction and keep the latest value of each scalar metric up to date."""
        rows, latest = _rows(run_id, points)
        if not rows:
            return
        dialect = self._db.engine.dialect
        quote = dialect.identifier_preparer.quote
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        insert = (
            f"INSERT INTO {quote(metrics.name)} ({', '.join(quote(c) for c in _COLUMNS)}) "
            f"VALUES ({', '.join([marker] * len(_COLUMNS))})"
        )
        upsert = self._db.insert(latest_metrics)
        upsert = upsert.on_conflict_do_update(
            index_elements=["run_id", "name"],
            set_={"value": upsert.excluded.value, "step": upsert.excluded.step, "timestamp": upsert.excluded.timestamp},
            where=sa.tuple_(upsert.excluded.step, upsert.excluded.timestamp)
            >= sa.tuple_(latest_metrics.c.step, latest_metrics.c.timestamp),
        )
        with self._db.write() as conn:
            require_run(conn, run_id)
            conn.exec_driver_sql(insert, rows)  # type: ignore[arg-type]
            if latest:
                conn.execute(upsert, list(latest.values()))

    def get_metrics(self, run_id: str, name: str | None = None) -> list[MetricPoint]:
        """Every point of a run (or of one metric), in logging order."""
        kinds = {kind.value: kind for kind in MetricKind}
        build = MetricPoint.checked
        return [
            build(
                name=name_,
                timestamp=timestamp,
                value=value,
                step=step,
                kind=kinds[kind],
                payload=None if payload is None else loads(payload),
            )
            for name_, timestamp, value, step, kind, payload in self.metric_rows(run_id, name)
        ]

    def metric_rows(self, run_id: str, name: str | None = None) -> list[tuple[Any, ...]]:
        """Points as plain tuples (name, timestamp, value, step, kind, payload JSON text), in logging order.

        Histories run to hundreds of thousands of points: the driver's rows go out as they are, without
        the per-row work of result processing or of building records.
        """
        dialect = self._db.engine.dialect
        quote = dialect.identifier_preparer.quote
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        columns = ", ".join(quote(c) for c in ("name", "timestamp", "value", "step", "kind", "payload"))
        sql = f"SELECT {columns} FROM {quote(metrics.name)} WHERE {quote('run_id')} = {marker}"
        params: tuple[Any, ...] = (run_id,)
        if name is not None:
            sql += f" AND {quote('name')} = {marker}"
            params += (name,)
        sql += f" ORDER BY {quote('id')}"
        with self._db.read() as conn:
            require_run(conn, run_id)
            return list(conn.exec_driver_sql(sql, params).fetchall())


def _rows(run_id: str, points: Sequence[MetricPoint]) -> tuple[list[tuple[Any, ...]], dict[str, dict[str, Any]]]:
    """The rows to insert and, per scalar metric, the batch's latest point; raises on the first bad point."""
    rows: list[tuple[Any, ...]] = []
    latest: dict[str, dict[str, Any]] = {}
    checked_names: set[str] = set()
    for point in points:
        name = point.name
        if name not in checked_names:
            checked_names.add(check_key("metric name", name))
        kind = point.kind if point.kind.__class__ is MetricKind else _kind(point.kind, name)
        value, step, timestamp = point.value, point.step, point.timestamp
        if value.__class__ is not float and (value is not None or kind is _SCALAR):
            value = _number(value, name, required=kind is _SCALAR)
        if step is not None and step.__class__ is not int:
            step = _integer(step, name)
        if timestamp.__class__ is not float:
            timestamp = _number(timestamp, name, required=True, what="timestamp") or 0.0
        payload = None if point.payload is None else dumps(point.payload, what=f"the payload of metric {name!r}")
        rows.append((run_id, name, kind.value, value, step, timestamp, payload))
        if kind is _SCALAR:
            if value != value:
                raise InvalidInputError(f"the scalar metric {name!r} is NaN; log a number")
            rank = -1 if step is None else step
            best = latest.get(name)
            if best is None or (rank, timestamp) >= (best["step"], best["timestamp"]):
                latest[name] = {"run_id": run_id, "name": name, "value": value, "step": rank, "timestamp": timestamp}
    return rows, latest


def _kind(kind: object, name: str) -> MetricKind:
    try:
        return MetricKind(str(kind))
    except ValueError:
        raise InvalidInputError(
            f"metric {name!r} has an unknown kind {kind!r}; use one of {', '.join(k.value for k in MetricKind)}"
        ) from None


def _number(value: object, name: str, *, required: bool, what: str = "value") -> float | None:
    if value is None and not required:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if not math.isnan(number):
            return number
    raise InvalidInputError(f"the {what} of metric {name!r} must be a number, not {value!r}")


def _integer(step: object, name: str) -> int:
    if isinstance(step, int) and not isinstance(step, bool):
        return int(step)
    raise InvalidInputError(f"the step of metric {name!r} must be an integer, not {step!r}")

"""The metrics part of `SqlStore`: appending points fast and keeping the latest value of each scalar.

Training scripts log in batches of thousands of points, so the append path avoids per-row work in the ORM
and in SQLAlchemy's parameter handling: points are checked in one tight loop and inserted with driver-level
multi-row INSERTs in one transaction. The latest value of each scalar metric (highest step, then
latest timestamp, then last logged) is upserted into `latest_metrics` in the same transaction, which is what
run filters and sorts read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import InvalidInputError, NotFoundError
from edgewise.cloud.store.database import Database
from edgewise.cloud.store.records import MetricKind, MetricPoint
from edgewise.cloud.store.schema import latest_metrics, metrics, runs
from edgewise.cloud.store.values import check_key, dumps, loads

_SCALAR = MetricKind.SCALAR
_COLUMNS = ("run_id", "name", "kind", "value", "step", "timestamp", "payload")
_CHUNK = 500  # rows per multi-row INSERT: 3,500 parameters, well below SQLite's and PostgreSQL's limits

# A point as (name, kind, value, step, timestamp, payload); `kind` is a MetricKind or its text.
MetricItem = tuple[Any, Any, Any, Any, Any, Any]


@dataclass(frozen=True)
class _MetricStatements:
    insert_one: str  # driver-level INSERT of one row, for executemany
    insert_chunk: str  # driver-level INSERT of _CHUNK rows
    upsert_latest: Any


def require_run(conn: sa.Connection, run_id: str) -> None:
    if conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first() is None:
        raise NotFoundError(f"no run {run_id!r}")


class SqlMetrics:
    _db: Database
    _metric_sql: _MetricStatements | None = None

    def log_metrics(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        """Append points in one transaction and keep the latest value of each scalar metric up to date."""
        self.log_metric_items(run_id, [(p.name, p.kind, p.value, p.step, p.timestamp, p.payload) for p in points])

    def log_metric_items(self, run_id: str, items: Sequence[MetricItem]) -> None:
        """`log_metrics` for points as (name, kind, value, step, timestamp, payload) tuples, `kind` a MetricKind or
        its text: what the API decodes a batch into, without building a record per point."""
        rows, latest = _rows(run_id, items)
        if not rows:
            return
        sql = self._metric_statements()
        with self._db.write() as conn:
            require_run(conn, run_id)
            full = len(rows) - len(rows) % _CHUNK
            if full:
                params = [value for row in rows[:full] for value in row]
                step = _CHUNK * len(_COLUMNS)
                for first in range(0, len(params), step):
                    conn.exec_driver_sql(sql.insert_chunk, tuple(params[first : first + step]))
            if full < len(rows):
                conn.exec_driver_sql(sql.insert_one, rows[full:])  # type: ignore[arg-type]
            if latest:
                conn.execute(sql.upsert_latest, latest)

    def _metric_statements(self) -> _MetricStatements:
        """Built once per store; a multi-row INSERT costs about half of the same rows through executemany."""
        if self._metric_sql is None:
            dialect = self._db.engine.dialect
            quote = dialect.identifier_preparer.quote
            marker = "?" if dialect.paramstyle == "qmark" else "%s"
            head = f"INSERT INTO {quote(metrics.name)} ({', '.join(quote(c) for c in _COLUMNS)}) VALUES "
            one = f"({', '.join([marker] * len(_COLUMNS))})"
            upsert = self._db.insert(latest_metrics)
            upsert = upsert.on_conflict_do_update(
                index_elements=["run_id", "name"],
                set_={
                    "value": upsert.excluded.value,
                    "step": upsert.excluded.step,
                    "timestamp": upsert.excluded.timestamp,
                },
                where=sa.tuple_(upsert.excluded.step, upsert.excluded.timestamp)
                >= sa.tuple_(latest_metrics.c.step, latest_metrics.c.timestamp),
            )
            self._metric_sql = _MetricStatements(
                insert_one=head + one, insert_chunk=head + ", ".join([one] * _CHUNK), upsert_latest=upsert
            )
        return self._metric_sql

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
            # The DB-API cursor itself: SQLAlchemy's result rows cost more than the query.
            cursor = conn.connection.cursor()
            try:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()


def _rows(run_id: str, items: Sequence[MetricItem]) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """The rows to insert and, per scalar metric, the batch's latest point; raises on the first bad point."""
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    latest: dict[str, tuple[int, float, float]] = {}  # name -> (step or -1, timestamp, value)
    checked_names: set[str] = set()
    try:
        for name, kind, value, step, timestamp, payload in items:
            if name.__class__ is not str or name not in checked_names:
                checked_names.add(check_key("metric name", name))
            if step is not None and step.__class__ is not int:
                step = _integer(step, name)
            if timestamp.__class__ is not float:
                timestamp = _number(timestamp, name, required=True, what="timestamp") or 0.0
            if kind == "scalar" or kind is _SCALAR:
                if value.__class__ is not float:
                    value = _number(value, name, required=True)
                if value != value:
                    raise InvalidInputError(f"the scalar metric {name!r} is NaN; log a number")
                kind_text = "scalar"
            else:
                kind = kind if kind.__class__ is MetricKind else _kind(kind, name)
                if value is not None and value.__class__ is not float:
                    value = _number(value, name, required=False)
                kind_text = kind.value
            if payload is not None:
                payload = dumps(payload, what=f"the payload of metric {name!r}")
            append((run_id, name, kind_text, value, step, timestamp, payload))
            if kind_text == "scalar":
                rank = -1 if step is None else step
                best = latest.get(name)
                if best is None or rank > best[0] or (rank == best[0] and timestamp >= best[1]):
                    latest[name] = (rank, timestamp, value)
    except InvalidInputError as exc:
        raise InvalidInputError(f"points[{len(rows)}]: {exc}") from None  # the point after the last row
    return rows, [
        {"run_id": run_id, "name": name, "value": value, "step": rank, "timestamp": timestamp}
        for name, (rank, timestamp, value) in latest.items()
    ]


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

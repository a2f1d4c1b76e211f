"""The telemetry part of `SqlStore`: devices' records stored once per sequence number, queries over them, and
the fleet summary.

One telemetry message is one transaction: the records it carries go in with one executemany, those whose
`seq` is stored already are skipped (INSERT ... ON CONFLICT DO NOTHING), and the device's counters under
`reported["$ingest"]` move in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.ingest.records import INGEST_KEY, DeviceHealth, InsertResult, TelemetryRecord
from edgewise.cloud.store.database import Database
from edgewise.cloud.store.schema import devices, telemetry_records
from edgewise.cloud.store.values import dumps, loads, now
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH

MAX_TELEMETRY_LIMIT = 10000
FAILING_STATES = ("failed", "backoff")
_SCORING_WINDOW = 64  # newest scoring records read per device to find each module's latest
_DATA_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class SqlTelemetry:
    _db: Database

    def insert_telemetry(
        self,
        device_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        dropped: Mapping[str, int] | None = None,
        invalid: int = 0,
        received_at: float | None = None,
    ) -> InsertResult | None:
        """Store a message's records (`seq`, `ts`, `kind`, `module`, `data` as a dict or JSON text); None for an
        unknown device. Records whose `seq` the device sent before are counted as duplicates, not stored."""
        stamp = now() if received_at is None else received_at
        rows: dict[int, dict[str, Any]] = {}
        for record in records:
            seq = int(record["seq"])
            if seq in rows:
                continue
            data = record.get("data")
            rows[seq] = {
                "device_id": device_id,
                "seq": seq,
                "ts": float(record["ts"]),
                "received_at": stamp,
                "kind": record["kind"],
                "module": record.get("module"),
                "data": data if isinstance(data, str) else orjson.dumps(data or {}).decode(),
            }
        with self._db.write() as conn:
            device = conn.execute(
                sa.select(devices.c.reported).where(devices.c.id == device_id).with_for_update()
            ).first()
            if device is None:
                return None
            known: set[int] = set()
            if rows:
                low, high = min(rows), max(rows)
                known = set(
                    conn.execute(
                        sa.select(telemetry_records.c.seq).where(
                            telemetry_records.c.device_id == device_id, telemetry_records.c.seq.between(low, high)
                        )
                    ).scalars()
                )
            fresh = [row for seq, row in rows.items() if seq not in known]
            if fresh:
                insert = self._db.insert(telemetry_records).on_conflict_do_nothing(index_elements=["device_id", "seq"])
                conn.execute(insert, fresh)
            result = InsertResult(inserted=len(fresh), duplicates=len(records) - len(fresh), invalid=invalid)
            reported = _with_counters(loads(device.reported), result, dropped, fresh, stamp)
            conn.execute(
                sa.update(devices)
                .where(devices.c.id == device_id)
                .values(reported=dumps(reported, what="the reported state"), last_seen_at=stamp)
            )
        return result

    def record_reported(self, device_id: str, reported: Mapping[str, Any], *, seen_at: float | None) -> bool:
        """Replace the device's reported document, keeping the workspace's own telemetry counters; False for an
        unknown device. `seen_at` None leaves `last_seen_at` (a retained message replayed by the broker)."""
        document = dict(reported)
        document.pop(INGEST_KEY, None)  # only the workspace writes its counters
        with self._db.write() as conn:
            row = conn.execute(sa.select(devices.c.reported).where(devices.c.id == device_id).with_for_update()).first()
            if row is None:
                return False
            counters = (loads(row.reported) or {}).get(INGEST_KEY)
            if counters is not None:
                document[INGEST_KEY] = counters
            values: dict[str, Any] = {"reported": dumps(document, what="the reported state")}
            if seen_at is not None:
                values["last_seen_at"] = seen_at
            conn.execute(sa.update(devices).where(devices.c.id == device_id).values(**values))
        return True

    def list_telemetry(
        self,
        device_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        kind: str | None = None,
        module: str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[TelemetryRecord]:
        """The newest `limit` matching records of a device, oldest first. `name` matches a record whose kind is
        `name` or whose data has a key `name` at any depth (e.g. `health`, `cpuPercent`, `requestsPerSecond`)."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_TELEMETRY_LIMIT:
            raise InvalidInputError(f"limit must be between 1 and {MAX_TELEMETRY_LIMIT}, not {limit!r}")
        t = telemetry_records.c
        stmt = sa.select(telemetry_records).where(t.device_id == device_id)
        if since is not None:
            stmt = stmt.where(t.ts >= since)
        if until is not None:
            stmt = stmt.where(t.ts <= until)
        if kind is not None:
            stmt = stmt.where(t.kind == kind)
        if module is not None:
            stmt = stmt.where(t.module == module)
        if name is not None:
            stmt = stmt.where(sa.or_(t.kind == name, self._has_data_key(name)))
        stmt = stmt.order_by(t.ts.desc(), t.seq.desc()).limit(limit)
        with self._db.read() as conn:
            if conn.execute(sa.select(devices.c.id).where(devices.c.id == device_id)).first() is None:
                from edgewise.cloud.store.sql_devices import _unknown

                raise _unknown(conn, device_id)
            rows = conn.execute(stmt).all()
        return [_record(row) for row in reversed(rows)]

    def fleet_health(self, *, tags: Mapping[str, str | None] | None = None) -> list[DeviceHealth]:
        """Every device (matching `tags`, as `list_devices` does) with its health, by id."""
        from edgewise.cloud.store.schema import device_tags

        stmt = sa.select(devices).order_by(devices.c.id)
        for key, value in (tags or {}).items():
            match = sa.exists().where(device_tags.c.device_id == devices.c.id, device_tags.c.key == key)
            stmt = stmt.where(match if value is None else match.where(device_tags.c.value == value))
        t = telemetry_records.c
        with self._db.read() as conn:
            summary = []
            for row in conn.execute(stmt).all():
                health = conn.execute(
                    sa.select(t.ts, t.data)
                    .where(t.device_id == row.id, t.kind == "health")
                    .order_by(t.seq.desc())
                    .limit(1)
                ).first()
                scoring = conn.execute(
                    sa.select(t.ts, t.module, t.data)
                    .where(t.device_id == row.id, t.kind == "scoring")
                    .order_by(t.seq.desc())
                    .limit(_SCORING_WINDOW)
                ).all()
                summary.append(_device_health(row, health, scoring))
        return summary

    def _has_data_key(self, name: str) -> sa.ColumnElement[bool]:
        if not _DATA_KEY.match(name):
            raise InvalidInputError(
                f"bad telemetry name {name!r}: a record kind or data key of 1-128 letters, digits, '.', '_' or '-'"
            )
        # a key at any depth: scoring figures sit in each model's object (`models[].requestsPerSecond`)
        data = telemetry_records.c.data
        if self._db.dialect == "postgresql":
            path = sa.cast(sa.literal(f'strict $.**."{name}"'), JSONPATH)
            condition: sa.ColumnElement[bool] = sa.func.jsonb_path_exists(sa.cast(data, JSONB), path)
            return condition
        tree = sa.func.json_tree(data).table_valued("key").alias("tree")
        return sa.exists(sa.select(sa.literal(1)).select_from(tree).where(tree.c.key == name))


def _with_counters(
    reported: Any,
    result: InsertResult,
    dropped: Mapping[str, int] | None,
    fresh: Sequence[Mapping[str, Any]],
    stamp: float,
) -> dict[str, Any]:
    document: dict[str, Any] = dict(reported) if isinstance(reported, dict) else {}
    counters: dict[str, Any] = dict(document.get(INGEST_KEY) or {})
    counters["records"] = int(counters.get("records", 0)) + result.inserted
    counters["duplicates"] = int(counters.get("duplicates", 0)) + result.duplicates
    counters["invalid"] = int(counters.get("invalid", 0)) + result.invalid
    if fresh:
        counters["lastSequence"] = max(int(counters.get("lastSequence", 0)), max(int(r["seq"]) for r in fresh))
    if dropped is not None:
        counters["dropped"] = dict(dropped)  # the device's own running totals: the newest message has the newest
    counters["lastMessageAt"] = stamp
    document[INGEST_KEY] = counters
    return document


def _record(row: sa.Row[Any]) -> TelemetryRecord:
    return TelemetryRecord(
        device_id=row.device_id,
        seq=int(row.seq),
        ts=row.ts,
        received_at=row.received_at,
        kind=row.kind,
        module=row.module,
        data=orjson.loads(row.data),
    )


def _device_health(row: sa.Row[Any], health: Any, scoring: Sequence[Any]) -> DeviceHealth:
    reported: dict[str, Any] = loads(row.reported) or {}
    counters: dict[str, Any] = reported.get(INGEST_KEY) or {}
    version = reported.get("lastDesiredVersion")
    values: dict[str, Any] = {}
    if health is not None:
        data = orjson.loads(health.data)
        values = {
            "health_at": health.ts,
            "cpu_percent": _number(data.get("cpuPercent")),
            "memory_used_bytes": _integer(data.get("memoryUsedBytes")),
            "memory_total_bytes": _integer(data.get("memoryTotalBytes")),
            "disk_free_bytes": _integer(data.get("diskFreeBytes")),
            "disk_total_bytes": _integer(data.get("diskTotalBytes")),
        }
    return DeviceHealth(
        id=row.id,
        status=row.status,
        online=row.status == "online",
        last_seen_at=row.last_seen_at,
        desired_version=row.desired_version,
        reported_version=version if isinstance(version, int) else None,
        failing_modules=failing_modules(reported),
        telemetry_records=int(counters.get("records", 0)),
        duplicates=int(counters.get("duplicates", 0)),
        dropped={k: v for k, v in (counters.get("dropped") or {}).items() if isinstance(v, int)},
        **values,
        **_scoring_rates(scoring),
    )


def failing_modules(reported: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Modules the device reports as failed or backing off, or kept on (rolled back to) an older version."""
    modules = reported.get("modules")
    failing: list[dict[str, Any]] = []
    if not isinstance(modules, dict):
        return failing
    for name, module in sorted(modules.items()):
        if not isinstance(module, dict):
            continue
        state = module.get("runtimeStatus")
        rollback = module.get("rollback")
        if state in FAILING_STATES:
            failing.append({"module": name, "status": state, "description": module.get("statusDescription")})
        elif isinstance(rollback, dict) and rollback:
            failing.append({"module": name, "status": "rolled-back", "description": rollback.get("reason")})
    return failing


def _scoring_rates(rows: Sequence[sa.Row[Any]]) -> dict[str, Any]:
    newest: dict[str | None, sa.Row[Any]] = {}
    for row in rows:
        newest.setdefault(row.module, row)
    if not newest:
        return {}
    rate: float | None = None
    requests = errors = 0
    unavailable: list[str] = []
    for module, row in sorted(newest.items(), key=lambda item: item[0] or ""):
        data = orjson.loads(row.data)
        if not data.get("available", True):
            unavailable.append(module or "-")
            continue
        for model in data.get("models") or []:
            if not isinstance(model, dict):
                continue
            per_second = _number(model.get("requestsPerSecond"))
            if per_second is not None:
                rate = (rate or 0.0) + per_second
            requests += _integer(model.get("requests")) or 0
            errors += _integer(model.get("errors")) or 0
    return {
        "scoring_at": max(row.ts for row in newest.values()),
        "requests_per_second": rate,
        "error_rate": errors / requests if requests else None,
        "unavailable_modules": unavailable,
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

"""The activities part of `SqlStore`: long operations (image builds) with status, progress and outcome.

The worker that runs an activity writes its progress here and clients poll it, so a build survives neither
being forgotten nor a service restart unnoticed: `fail_unfinished_activities` settles what was in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import ConflictError, InvalidInputError, NotFoundError
from edgewise.cloud.store.database import Database, check_page_size, decode_page_token, encode_page_token
from edgewise.cloud.store.records import Activity, ActivityStatus, Page
from edgewise.cloud.store.schema import activities
from edgewise.cloud.store.values import check_key, dumps, loads, new_id, now

_UNFINISHED = (ActivityStatus.QUEUED.value, ActivityStatus.RUNNING.value)


class SqlActivities:
    _db: Database

    def create_activity(self, *, kind: str, parameters: Mapping[str, Any] | None = None) -> Activity:
        """A new queued activity of `kind`; `parameters` say what it was asked to do."""
        check_key("activity kind", kind)
        activity_id, stamp = new_id(), now()
        with self._db.write() as conn:
            conn.execute(
                activities.insert().values(
                    id=activity_id,
                    kind=kind,
                    status=ActivityStatus.QUEUED.value,
                    created_at=stamp,
                    progress=0.0,
                    parameters=dumps(dict(parameters or {}), what="the activity parameters"),
                )
            )
            return _get(conn, activity_id)

    def get_activity(self, activity_id: str) -> Activity:
        with self._db.read() as conn:
            return _get(conn, activity_id)

    def list_activities(
        self,
        *,
        kind: str | None = None,
        status: ActivityStatus | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Activity]:
        """Activities, newest first."""
        offset, size = decode_page_token(page_token), check_page_size(page_size)
        stmt = sa.select(activities)
        if kind is not None:
            stmt = stmt.where(activities.c.kind == kind)
        if status is not None:
            stmt = stmt.where(activities.c.status == ActivityStatus(status).value)
        stmt = stmt.order_by(activities.c.created_at.desc(), activities.c.id)
        with self._db.read() as conn:
            rows = conn.execute(stmt.offset(offset).limit(size + 1)).all()
        items = [_record(r._mapping) for r in rows[:size]]
        return Page(items=items, next_page_token=encode_page_token(offset + size) if len(rows) > size else None)

    def update_activity(
        self,
        activity_id: str,
        *,
        status: ActivityStatus | None = None,
        progress: float | None = None,
        message: str | None = None,
        error: str | None = None,
        result: str | None = None,
    ) -> Activity:
        """Move an activity on; an ended activity does not change any more (ConflictError)."""
        values: dict[str, Any] = {}
        if progress is not None:
            if not 0.0 <= float(progress) <= 1.0:
                raise InvalidInputError(f"progress is a fraction from 0 to 1, not {progress!r}")
            values["progress"] = float(progress)
        if message is not None:
            values["message"] = message
        if error is not None:
            values["error"] = error
        if result is not None:
            values["result"] = check_key("activity result", result)
        with self._db.write() as conn:
            current = _get(conn, activity_id)
            if current.status.terminal:
                raise ConflictError(f"activity {activity_id} already ended ({current.status.value})")
            if status is not None:
                status = ActivityStatus(status)
                values["status"] = status.value
                stamp = now()
                if status is ActivityStatus.RUNNING and current.started_at is None:
                    values["started_at"] = stamp
                if status.terminal:
                    values["ended_at"] = stamp
                    if current.started_at is None:
                        values["started_at"] = stamp
                    if status is ActivityStatus.SUCCEEDED:
                        values["progress"] = 1.0
            if values:
                conn.execute(sa.update(activities).where(activities.c.id == activity_id).values(**values))
            return _get(conn, activity_id)

    def fail_unfinished_activities(self, reason: str) -> list[str]:
        """Mark every queued or running activity failed with `reason`; answer their ids."""
        with self._db.write() as conn:
            result = conn.execute(
                sa.update(activities)
                .where(activities.c.status.in_(_UNFINISHED))
                .values(status=ActivityStatus.FAILED.value, error=reason, message=reason, ended_at=now())
                .returning(activities.c.id)
            )
            return sorted(str(r) for r in result.scalars())


def _get(conn: sa.Connection, activity_id: str) -> Activity:
    row = conn.execute(sa.select(activities).where(activities.c.id == activity_id)).first()
    if row is None:
        raise NotFoundError(f"no activity {activity_id!r}; `edgewise activity list` shows the recent ones")
    return _record(row._mapping)


def _record(m: sa.RowMapping) -> Activity:
    return Activity(
        id=m["id"],
        kind=m["kind"],
        status=ActivityStatus(m["status"]),
        created_at=m["created_at"],
        started_at=m["started_at"],
        ended_at=m["ended_at"],
        progress=float(m["progress"]),
        message=m["message"],
        error=m["error"],
        result=m["result"],
        parameters=dict(loads(m["parameters"]) or {}),
    )

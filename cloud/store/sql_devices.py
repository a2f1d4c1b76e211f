"""The device registry part of `SqlStore`: devices, their tags, and the state they last reported.

Credentials are not kept here: the broker's accounts own them (`cloud/broker/accounts.py`), so revoking a
device never depends on the database and the broker never reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import ConflictError, InvalidInputError, NotFoundError
from edgewise.cloud.store.database import Database, check_page_size, decode_page_token, encode_page_token
from edgewise.cloud.store.device_records import DEVICE_STATUSES, Device
from edgewise.cloud.store.records import Page
from edgewise.cloud.store.schema import device_tags, devices
from edgewise.cloud.store.values import check_tags, dumps, loads, now

_UNSET: Any = object()


class SqlDevices:
    _db: Database

    def create_device(self, device_id: str, *, tags: Mapping[str, str] | None = None) -> Device:
        """Register `device_id` (the caller checked the id); ConflictError when it exists already."""
        checked = check_tags(tags)
        stamp = now()
        with self._db.write() as conn:
            inserted = conn.execute(
                self._db.insert(devices)
                .values(id=device_id, created_at=stamp)
                .on_conflict_do_nothing(index_elements=["id"])
                .returning(devices.c.id)
            ).first()
            if inserted is None:
                raise ConflictError(
                    f"device {device_id!r} exists already; remove it first (`edgewise device remove {device_id}`) "
                    "to give it new credentials, or pick another id"
                )
            if checked:
                conn.execute(
                    device_tags.insert(), [{"device_id": device_id, "key": k, "value": v} for k, v in checked.items()]
                )
        return Device(id=device_id, created_at=stamp, tags=checked)

    def get_device(self, device_id: str) -> Device:
        with self._db.read() as conn:
            return self._device(conn, device_id)

    def list_devices(
        self, *, tags: Mapping[str, str | None] | None = None, page_size: int = 100, page_token: str | None = None
    ) -> Page[Device]:
        """Devices by id; every tag must match (a None value matches any value of the key)."""
        offset, size = decode_page_token(page_token), check_page_size(page_size)
        stmt = sa.select(devices)
        for key, value in (tags or {}).items():
            match = sa.exists().where(device_tags.c.device_id == devices.c.id, device_tags.c.key == key)
            stmt = stmt.where(match if value is None else match.where(device_tags.c.value == value))
        stmt = stmt.order_by(devices.c.id).offset(offset).limit(size + 1)
        with self._db.read() as conn:
            rows = conn.execute(stmt).all()
            items = _device_records(conn, rows[:size])
        return Page(items=items, next_page_token=encode_page_token(offset + size) if len(rows) > size else None)

    def set_device_tags(
        self, device_id: str, *, set: Mapping[str, str] | None = None, remove: Sequence[str] = ()
    ) -> Device:
        """Add or replace the tags in `set`, then drop the keys in `remove` (missing keys are ignored)."""
        checked = check_tags(set)
        if isinstance(remove, str):
            raise InvalidInputError("remove takes a list of tag keys, not a single text")
        with self._db.write() as conn:
            self._require(conn, device_id)
            if checked:
                stmt = self._db.insert(device_tags)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["device_id", "key"], set_={"value": stmt.excluded.value}
                )
                conn.execute(stmt, [{"device_id": device_id, "key": k, "value": v} for k, v in checked.items()])
            if remove:
                conn.execute(
                    sa.delete(device_tags).where(device_tags.c.device_id == device_id, device_tags.c.key.in_(remove))
                )
            return self._device(conn, device_id)

    def delete_device(self, device_id: str) -> None:
        with self._db.write() as conn:
            self._require(conn, device_id)
            conn.execute(sa.delete(device_tags).where(device_tags.c.device_id == device_id))
            conn.execute(sa.delete(devices).where(devices.c.id == device_id))

    def update_device_state(
        self,
        device_id: str,
        *,
        status: str | None = _UNSET,
        reported: Mapping[str, Any] | None = _UNSET,
        desired_version: int | None = _UNSET,
        seen_at: float | None = None,
    ) -> bool:
        """Record what a device said about itself (or which manifest it was sent); False for an unknown device.

        Only the given fields change; a message from the device also moves `last_seen_at` to `seen_at`.
        """
        values: dict[str, Any] = {}
        if status is not _UNSET:
            if status is not None and status not in DEVICE_STATUSES:
                raise InvalidInputError(f"device status {status!r} must be one of {', '.join(DEVICE_STATUSES)}")
            values["status"] = status
        if reported is not _UNSET:
            values["reported"] = None if reported is None else dumps(dict(reported), what="the reported state")
        if desired_version is not _UNSET:
            values["desired_version"] = desired_version
        if seen_at is not None:
            values["last_seen_at"] = seen_at
        if not values:
            return True
        with self._db.write() as conn:
            return bool(conn.execute(sa.update(devices).where(devices.c.id == device_id).values(**values)).rowcount)

    def _device(self, conn: sa.Connection, device_id: str) -> Device:
        row = conn.execute(sa.select(devices).where(devices.c.id == device_id)).first()
        if row is None:
            raise _unknown(conn, device_id)
        return _device_records(conn, [row])[0]

    def _require(self, conn: sa.Connection, device_id: str) -> None:
        if conn.execute(sa.select(devices.c.id).where(devices.c.id == device_id)).first() is None:
            raise _unknown(conn, device_id)


def _unknown(conn: sa.Connection, device_id: str) -> NotFoundError:
    count = conn.execute(sa.select(sa.func.count()).select_from(devices)).scalar_one()
    hint = "see `edgewise device list`" if count else "no devices are registered yet (`edgewise device add ID`)"
    return NotFoundError(f"no device {device_id!r}; {hint}")


def _device_records(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> list[Device]:
    ids = [row.id for row in rows]
    tags: dict[str, dict[str, str]] = {i: {} for i in ids}
    if ids:
        stmt = sa.select(device_tags).where(device_tags.c.device_id.in_(ids)).order_by(device_tags.c.key)
        for tag in conn.execute(stmt):
            tags[tag.device_id][tag.key] = tag.value
    return [
        Device(
            id=row.id,
            created_at=row.created_at,
            tags=tags[row.id],
            status=row.status,
            last_seen_at=row.last_seen_at,
            reported=loads(row.reported),
            desired_version=row.desired_version,
        )
        for row in rows
    ]

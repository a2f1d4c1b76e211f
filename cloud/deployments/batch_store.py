"""The deployment controller's reads and writes for many devices at once.

A batch of devices' manifests is one transaction: their rows and latest manifests are read, the new manifests
inserted, the rows moved and the devices' desired versions set, all under one write lock. A deployment to a
hundred devices then commits once instead of a few hundred times, and every manifest of the batch is committed
before the first is published. Likewise a status pass reads a deployment's devices' reports in one query and
moves their rows in one transaction. The store's own calls are one transaction (or one device) each, so this
works on the store's database with the store's tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.deployments.batch_plan import RowChange
from edgewise.cloud.deployments.records import DeviceRollout
from edgewise.cloud.store.schema import deployment_devices, device_manifests, devices
from edgewise.cloud.store.sql import SqlStore
from edgewise.cloud.store.values import dumps, loads, now

_CHUNK = 500  # device ids per IN (...) list, well under any database's limit on bound parameters

_MOVE_ROW = (
    sa.update(deployment_devices)
    .where(
        deployment_devices.c.deployment == sa.bindparam("b_deployment"),
        deployment_devices.c.device_id == sa.bindparam("b_device"),
    )
    .values(
        state=sa.bindparam("b_state"),
        reason=sa.bindparam("b_reason", type_=sa.Text),
        updated_at=sa.bindparam("b_at"),
        version=sa.case(
            (sa.bindparam("b_drop", type_=sa.Boolean), sa.null()),
            else_=sa.func.coalesce(deployment_devices.c.version, sa.bindparam("b_version", type_=sa.BigInteger)),
        ),
    )
)
_SET_DESIRED = (
    sa.update(devices)
    .where(devices.c.id == sa.bindparam("b_device"))
    .values(desired_version=sa.bindparam("b_version", type_=sa.BigInteger))
)


class ManifestBatch:
    """The reads and writes of one batch, inside its transaction."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def rollouts(self, device_ids: Sequence[str]) -> dict[str, list[DeviceRollout]]:
        """Each device's rows (every deployment that targets it), ordered by deployment."""
        found: dict[str, list[DeviceRollout]] = {device_id: [] for device_id in device_ids}
        for chunk in _chunks(device_ids):
            stmt = (
                sa.select(deployment_devices)
                .where(deployment_devices.c.device_id.in_(chunk))
                .order_by(deployment_devices.c.device_id, deployment_devices.c.deployment)
            )
            for row in self._conn.execute(stmt):
                found[row.device_id].append(DeviceRollout.from_dict(dict(row._mapping)))
        return found

    def latest_manifests(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest manifest stored for each device that ever had one."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(device_ids):
            newest = (
                sa.select(device_manifests.c.device_id, sa.func.max(device_manifests.c.version).label("version"))
                .where(device_manifests.c.device_id.in_(chunk))
                .group_by(device_manifests.c.device_id)
                .subquery()
            )
            stmt = sa.select(device_manifests.c.device_id, device_manifests.c.document).join(
                newest,
                sa.and_(
                    device_manifests.c.device_id == newest.c.device_id,
                    device_manifests.c.version == newest.c.version,
                ),
            )
            for device_id, text in self._conn.execute(stmt):
                document = loads(text)
                if isinstance(document, dict):
                    found[device_id] = document
        return found

    def add_manifests(self, documents: Mapping[str, Mapping[str, Any]]) -> None:
        """Store each device's new signed manifest under the version it carries."""
        if not documents:
            return
        stamp = now()
        self._conn.execute(
            device_manifests.insert(),
            [
                {
                    "device_id": device_id,
                    "version": int(document["version"]),
                    "document": dumps(dict(document), what="the manifest"),
                    "created_at": stamp,
                }
                for device_id, document in documents.items()
            ],
        )

    def set_desired_versions(self, versions: Mapping[str, int]) -> None:
        if versions:
            self._conn.execute(_SET_DESIRED, [{"b_device": d, "b_version": v} for d, v in versions.items()])

    def move_rows(self, changes: Sequence[RowChange]) -> None:
        """Apply the changes in order; a row's version, once set, is kept until a change drops it."""
        if not changes:
            return
        stamp = now()
        self._conn.execute(
            _MOVE_ROW,
            [
                {
                    "b_deployment": c.deployment,
                    "b_device": c.device_id,
                    "b_state": c.state,
                    "b_reason": c.reason,
                    "b_at": stamp,
                    "b_version": c.version,
                    "b_drop": c.drop_version,
                }
                for c in changes
            ],
        )


@contextmanager
def manifest_batch(store: SqlStore) -> Iterator[ManifestBatch]:
    """A write transaction on the store's database: committed when the block ends, rolled back if it raises."""
    with store.database.write() as conn:
        yield ManifestBatch(conn)


def move_rows(store: SqlStore, changes: Sequence[RowChange]) -> None:
    """Apply row changes in one transaction."""
    if changes:
        with manifest_batch(store) as batch:
            batch.move_rows(changes)


def reported_states(store: SqlStore, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What each device last reported; devices that never reported (or are gone) are left out."""
    found: dict[str, dict[str, Any]] = {}
    with store.database.read() as conn:
        for chunk in _chunks(sorted(set(device_ids))):
            stmt = sa.select(devices.c.id, devices.c.reported).where(
                devices.c.id.in_(chunk), devices.c.reported.is_not(None)
            )
            for device_id, text in conn.execute(stmt):
                reported = loads(text)
                if isinstance(reported, dict):
                    found[device_id] = reported
    return found


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]

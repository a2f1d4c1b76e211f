"""The deployment part of `SqlStore`: deployments, each device's progress through them, and the manifests
published to devices (their versions only ever grow)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.deployments.records import Deployment, DeviceRollout
from edgewise.cloud.errors import ConflictError, NotFoundError
from edgewise.cloud.store.database import Database
from edgewise.cloud.store.schema import deployment_devices, deployments, device_manifests, model_references
from edgewise.cloud.store.values import dumps, loads, now

DEPLOYMENT_REFERENCE = "deployment"


class SqlDeployments:
    _db: Database

    def create_deployment(self, deployment: Deployment, *, devices: Mapping[str, int | None]) -> Deployment:
        """Insert `deployment` (its serial is assigned here) and a row per targeted device: `devices` maps a device
        id to its batch (None: released at once, else pending)."""
        with self._db.write() as conn:
            if conn.execute(sa.select(deployments.c.name).where(deployments.c.name == deployment.name)).first():
                raise ConflictError(
                    f"deployment {deployment.name!r} exists already; delete it first "
                    f"(`edgewise deploy delete {deployment.name}`) or pick another name"
                )
            serial = (conn.execute(sa.select(sa.func.max(deployments.c.serial))).scalar() or 0) + 1
            row = _row(deployment)
            row["serial"] = serial
            conn.execute(deployments.insert().values(**row))
            stamp = now()
            if devices:
                conn.execute(
                    deployment_devices.insert(),
                    [
                        {
                            "deployment": deployment.name,
                            "device_id": device_id,
                            "state": "targeted" if batch is None else "pending",
                            "batch": batch,
                            "updated_at": stamp,
                        }
                        for device_id, batch in devices.items()
                    ],
                )
            return _deployment(conn.execute(sa.select(deployments).where(deployments.c.name == deployment.name)).one())

    def get_deployment(self, name: str) -> Deployment:
        with self._db.read() as conn:
            row = conn.execute(sa.select(deployments).where(deployments.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no deployment {name!r}; see `edgewise deploy list`")
        return _deployment(row)

    def list_deployments(self) -> list[Deployment]:
        with self._db.read() as conn:
            rows = conn.execute(sa.select(deployments).order_by(deployments.c.serial)).all()
        return [_deployment(row) for row in rows]

    def set_deployment_status(self, name: str, status: str, reason: str | None = None) -> None:
        with self._db.write() as conn:
            conn.execute(sa.update(deployments).where(deployments.c.name == name).values(status=status, reason=reason))

    def delete_deployment(self, name: str) -> list[str]:
        """Remove the deployment and its device rows, and release its model and image references; answer the
        devices it was on."""
        with self._db.write() as conn:
            if conn.execute(sa.select(deployments.c.name).where(deployments.c.name == name)).first() is None:
                raise NotFoundError(f"no deployment {name!r}; see `edgewise deploy list`")
            ids = list(
                conn.execute(
                    sa.select(deployment_devices.c.device_id).where(deployment_devices.c.deployment == name)
                ).scalars()
            )
            conn.execute(sa.delete(deployment_devices).where(deployment_devices.c.deployment == name))
            conn.execute(
                sa.delete(model_references).where(
                    model_references.c.kind == DEPLOYMENT_REFERENCE, model_references.c.ref == name
                )
            )
            conn.execute(sa.delete(deployments).where(deployments.c.name == name))
        return ids

    def list_rollouts(self, *, deployment: str | None = None, device_id: str | None = None) -> list[DeviceRollout]:
        stmt = sa.select(deployment_devices)
        if deployment is not None:
            stmt = stmt.where(deployment_devices.c.deployment == deployment)
        if device_id is not None:
            stmt = stmt.where(deployment_devices.c.device_id == device_id)
        stmt = stmt.order_by(deployment_devices.c.deployment, deployment_devices.c.device_id)
        with self._db.read() as conn:
            return [_rollout(row) for row in conn.execute(stmt)]

    def put_rollout(self, deployment: str, device_id: str, *, state: str, batch: int | None = None) -> None:
        """Add a device to a deployment (a device added or retagged into its target)."""
        with self._db.write() as conn:
            stmt = self._db.insert(deployment_devices).values(
                deployment=deployment, device_id=device_id, state=state, batch=batch, updated_at=now()
            )
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["deployment", "device_id"]))

    def drop_rollouts(self, device_id: str, deployments_: Sequence[str] | None = None) -> None:
        """Take a device out of the given deployments (all when None)."""
        stmt = sa.delete(deployment_devices).where(deployment_devices.c.device_id == device_id)
        if deployments_ is not None:
            stmt = stmt.where(deployment_devices.c.deployment.in_(list(deployments_)))
        with self._db.write() as conn:
            conn.execute(stmt)

    def update_rollout(
        self,
        deployment: str,
        device_id: str,
        *,
        state: str,
        reason: str | None = None,
        version: int | None = None,
    ) -> None:
        """Move a device's state; `version` is kept once set (the manifest that first included the deployment)."""
        values: dict[str, Any] = {"state": state, "reason": reason, "updated_at": now()}
        if version is not None:
            values["version"] = sa.func.coalesce(deployment_devices.c.version, version)
        with self._db.write() as conn:
            conn.execute(
                sa.update(deployment_devices)
                .where(deployment_devices.c.deployment == deployment, deployment_devices.c.device_id == device_id)
                .values(**values)
            )

    def record_manifest(self, device_id: str, document_for: Any) -> dict[str, Any]:
        """Store the device's next manifest: `document_for(version)` builds (and signs) it for the next version,
        which is one more than any version the device was ever sent."""
        with self._db.write() as conn:
            last = conn.execute(
                sa.select(sa.func.max(device_manifests.c.version)).where(device_manifests.c.device_id == device_id)
            ).scalar()
            document: dict[str, Any] = document_for((last or 0) + 1)
            conn.execute(
                device_manifests.insert().values(
                    device_id=device_id,
                    version=document["version"],
                    document=dumps(document, what="the manifest"),
                    created_at=now(),
                )
            )
        return document

    def latest_manifest(self, device_id: str) -> dict[str, Any] | None:
        with self._db.read() as conn:
            text = conn.execute(
                sa.select(device_manifests.c.document)
                .where(device_manifests.c.device_id == device_id)
                .order_by(device_manifests.c.version.desc())
                .limit(1)
            ).scalar()
        document = loads(text)
        return document if isinstance(document, dict) else None


def _row(deployment: Deployment) -> dict[str, Any]:
    return {
        "name": deployment.name,
        "image_name": deployment.image_name,
        "image_version": deployment.image_version,
        "manifest_digest": deployment.manifest_digest,
        "image": deployment.image,
        "device_id": deployment.device_id,
        "target": deployment.target,
        "priority": deployment.priority,
        "module": deployment.module,
        "module_type": deployment.module_type,
        "env": dumps(deployment.env, what="env"),
        "restart_policy": deployment.restart_policy,
        "settings": dumps(deployment.settings, what="settings"),
        "rollout": dumps(
            {
                "batch_size": deployment.batch_size,
                "batch_percent": deployment.batch_percent,
                "max_failures": deployment.max_failures,
            },
            what="rollout settings",
        ),
        "status": deployment.status,
        "reason": deployment.reason,
        "created_at": deployment.created_at,
    }


def _deployment(row: sa.Row[Any]) -> Deployment:
    rollout = loads(row.rollout) or {}
    return Deployment(
        name=row.name,
        image_name=row.image_name,
        image_version=row.image_version,
        manifest_digest=row.manifest_digest,
        image=row.image,
        device_id=row.device_id,
        target=row.target,
        priority=row.priority,
        module=row.module,
        module_type=row.module_type,
        env=loads(row.env) or {},
        restart_policy=row.restart_policy,
        settings=loads(row.settings) or {},
        batch_size=rollout.get("batch_size"),
        batch_percent=rollout.get("batch_percent"),
        max_failures=rollout.get("max_failures"),
        status=row.status,
        reason=row.reason,
        created_at=row.created_at,
        serial=row.serial,
    )


def _rollout(row: sa.Row[Any]) -> DeviceRollout:
    return DeviceRollout(
        deployment=row.deployment,
        device_id=row.device_id,
        state=row.state,
        reason=row.reason,
        batch=row.batch,
        version=row.version,
        updated_at=row.updated_at,
    )

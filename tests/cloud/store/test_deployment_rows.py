"""A device's row in a deployment keeps the first manifest version that carried the deployment, until a change
drops it (the deployment was overridden there): the next manifest that carries it again sets it anew."""

from __future__ import annotations

import time

from edgewise.cloud.deployments.batch_plan import RowChange
from edgewise.cloud.deployments.batch_store import move_rows
from edgewise.cloud.deployments.records import Deployment
from edgewise.cloud.store.sql import SqlStore


def _deployment(name: str) -> Deployment:
    return Deployment(
        name=name,
        image_name="img",
        image_version=1,
        manifest_digest="sha256:" + "0" * 64,
        image="127.0.0.1:5000/img@sha256:" + "0" * 64,
        target="tags.site = 'berlin'",
        module="scorer",
        created_at=time.time(),
    )


def _versions(store: SqlStore, name: str) -> dict[str, tuple[str, int | None]]:
    return {row.device_id: (row.state, row.version) for row in store.list_rollouts(deployment=name)}


def test_a_row_version_is_kept_until_dropped_and_then_set_anew(store: SqlStore) -> None:
    store.create_deployment(_deployment("base"), devices={"d1": None, "d2": None})
    move_rows(store, [RowChange(deployment="base", device_id=d, state="targeted", version=3) for d in ("d1", "d2")])
    move_rows(store, [RowChange(deployment="base", device_id=d, state="applied", version=5) for d in ("d1", "d2")])
    assert _versions(store, "base") == {"d1": ("applied", 3), "d2": ("applied", 3)}

    overridden = RowChange(deployment="base", device_id="d1", state="overridden", reason="by prod", drop_version=True)
    move_rows(store, [overridden, RowChange(deployment="base", device_id="d2", state="succeeded")])
    assert _versions(store, "base") == {"d1": ("overridden", None), "d2": ("succeeded", 3)}

    move_rows(store, [RowChange(deployment="base", device_id="d1", state="targeted", version=7)])
    assert _versions(store, "base") == {"d1": ("targeted", 7), "d2": ("succeeded", 3)}

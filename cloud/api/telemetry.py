"""Telemetry routes: a device's records (filtered by time, kind, module, name) and the fleet's health summary."""

from __future__ import annotations

import time
from typing import Annotated, Any

from edgewise.cloud.api.deps import TagQuery, WorkspaceDep, tag_filters
from edgewise.cloud.ingest.times import parse_time
from edgewise.cloud.store.sql_telemetry import MAX_TELEMETRY_LIMIT
from fastapi import APIRouter, Query

router = APIRouter(tags=["telemetry"])

TimeQuery = Annotated[
    str | None, Query(description="a duration before now (30s, 10m, 2h, 7d), an ISO 8601 time, or epoch seconds")
]


@router.get("/devices/{device_id}/telemetry", summary="A device's telemetry records: the newest `limit`, oldest first")
def device_telemetry(
    device_id: str,
    workspace: WorkspaceDep,
    since: TimeQuery = None,
    until: TimeQuery = None,
    kind: Annotated[str | None, Query(description="health, scoring, sample or event")] = None,
    module: Annotated[str | None, Query(description="records of this module")] = None,
    name: Annotated[str | None, Query(description="a record kind, or a key at any depth of the records' data")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TELEMETRY_LIMIT)] = 100,
) -> dict[str, Any]:
    now = time.time()
    records = workspace.store.list_telemetry(
        device_id,
        since=None if since is None else parse_time(since, now=now, what="since"),
        until=None if until is None else parse_time(until, now=now, what="until"),
        kind=kind,
        module=module,
        name=name,
        limit=limit,
    )
    return {"device_id": device_id, "records": [record.to_dict() for record in records]}


@router.get("/fleet/health", summary="Every device: online, last seen, failing modules, CPU, memory, disk, rates")
def fleet_health(workspace: WorkspaceDep, tag: TagQuery = None) -> dict[str, Any]:
    return {"devices": [device.to_dict() for device in workspace.store.fleet_health(tags=tag_filters(tag))]}

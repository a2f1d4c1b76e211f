"""Long operations of the service (image builds): poll one for its progress, or list the recent ones."""

from __future__ import annotations

from typing import Any

from edgewise.cloud.api.deps import PageSize, PageToken, WorkspaceDep, page_json
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.store.records import ActivityStatus
from fastapi import APIRouter

router = APIRouter(prefix="/activities", tags=["activities"])


@router.get("", summary="Activities, newest first; filter by kind and status")
def list_activities(
    workspace: WorkspaceDep,
    kind: str | None = None,
    status: str | None = None,
    page_size: PageSize = 100,
    page_token: PageToken = None,
) -> dict[str, Any]:
    wanted = None
    if status is not None:
        try:
            wanted = ActivityStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in ActivityStatus)
            raise InvalidInputError(f"unknown activity status {status!r}; use one of {choices}") from None
    page = workspace.images.list_activities(kind=kind, status=wanted, page_size=page_size, page_token=page_token)
    return page_json(page)


@router.get("/{activity_id}", summary="One activity: status, progress (0..1) and message, outcome")
def get_activity(activity_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.images.get_activity(activity_id).to_dict()

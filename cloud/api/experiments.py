"""Experiments: created on first use by a run submission, listed and read here."""

from __future__ import annotations

from typing import Any

from edgewise.cloud.api.deps import PageSize, PageToken, WorkspaceDep, page_json
from fastapi import APIRouter

router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.get("", summary="List experiments")
def list_experiments(
    workspace: WorkspaceDep, page_size: PageSize = 100, page_token: PageToken = None
) -> dict[str, Any]:
    return page_json(workspace.list_experiments(page_size=page_size, page_token=page_token))


@router.get("/{name}", summary="One experiment")
def get_experiment(name: str, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.get_experiment(name).to_dict()

"""How routers reach the Workspace and shape answers."""

from __future__ import annotations

from typing import Annotated, Any

from edgewise.cloud.store.records import Page
from edgewise.cloud.workspace import Workspace
from fastapi import Depends, Query, Request


async def get_workspace(request: Request) -> Workspace:
    # async on purpose: FastAPI runs a plain `def` dependency on a worker thread, a hop per request.
    workspace: Workspace = request.app.state.workspace
    return workspace


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
PageSize = Annotated[int, Query(ge=1, le=1000, description="items per page")]
PageToken = Annotated[str | None, Query(description="next_page_token of the previous page")]


def page_json(page: Page[Any]) -> dict[str, Any]:
    return {"items": [item.to_dict() for item in page.items], "next_page_token": page.next_page_token}

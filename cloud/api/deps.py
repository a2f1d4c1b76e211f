"""How routers reach the Workspace and shape answers."""

from __future__ import annotations

from typing import Annotated, Any

from edgewise.cloud.errors import InvalidInputError
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


TagQuery = Annotated[list[str] | None, Query(description="'key' (any value) or 'key=value'; repeatable")]


def tag_filters(items: list[str] | None) -> dict[str, str | None]:
    """`tag=key` / `tag=key=value` query values as a store tag filter (None: any value of the key)."""
    tags: dict[str, str | None] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidInputError(f"bad tag filter {item!r}: use key or key=value")
        tags[key] = value if sep else None
    return tags


def version_number(text: str, *, what: str) -> int:
    """A version in a path: a number from 1."""
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"bad {what} version {text!r}: use a number from 1")
    return int(text)


def version_or_latest(text: str, *, what: str) -> int | None:
    """A version in a path: a number from 1, or `latest` (None)."""
    if text == "latest":
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"bad {what} version {text!r}: use a number from 1 or 'latest'")
    return int(text)

"""The model registry: register, read, search by tag, tag, delete (refused while deployed)."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from edgewise.cloud.api.bodies import ModelTagsBody, RegisterModelBody
from edgewise.cloud.api.deps import (
    PageSize,
    PageToken,
    TagQuery,
    WorkspaceDep,
    page_json,
    tag_filters,
    version_number,
    version_or_latest,
)
from edgewise.cloud.api.security import BearerToken
from edgewise.cloud.workspace import Workspace
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

router = APIRouter(prefix="/models", tags=["models"])

# The body's schema with its file entries pointing at the API's shared FileEntryBody component.
_REGISTER_SCHEMA = RegisterModelBody.model_json_schema(ref_template="#/components/schemas/{model}")
_REGISTER_SCHEMA.pop("$defs", None)


@router.post(
    "",
    status_code=201,
    summary="Register a new version of a model (versions count up per name)",
    response_class=Response,
    responses={201: {"content": {"application/json": {}}, "description": "the new ModelVersion"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _REGISTER_SCHEMA}},
        }
    },
)
async def register_model(request: Request, workspace: WorkspaceDep) -> Response:
    return await _register(request, workspace)


def fast_register_route(*, path: str, bearer: BearerToken) -> Route:
    """POST `path` (the full path of `register_model`) as a plain Starlette route, to be put ahead of the API's:
    same handler and token check, without the per-request routing and dependency work of the framework, which
    cost as much as the registration itself. The FastAPI route stays in the OpenAPI schema."""

    async def endpoint(request: Request) -> Response:
        await bearer(request)
        workspace: Workspace = request.app.state.workspace
        return await _register(request, workspace)

    return Route(path, endpoint, methods=["POST"], include_in_schema=False)


async def _register(request: Request, workspace: Workspace) -> Response:
    # The body is parsed straight from its bytes (pydantic's JSON parser) rather than through the framework's
    # generic body handling.
    try:
        body = RegisterModelBody.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False), body=None) from None
    call = functools.partial(
        workspace.register_model,
        name=body.name,
        run_id=body.run_id,
        path=body.path,
        files=[entry.record() for entry in body.files] if body.files else None,
        tags=body.tags,
        properties=body.properties,
        description=body.description,
        convert=body.convert,
    )
    # A registration is a short local transaction: run it on the loop and skip the thread hop, which costs more
    # than the work. A conversion (skl2onnx) is long and goes to a worker thread.
    model = await run_in_threadpool(call) if body.convert or not workspace.store.is_local else call()
    return Response(orjson.dumps(model.to_dict()), status_code=201, media_type="application/json")


@router.get("", summary="List model versions, newest first; filter by name and tags")
def list_models(
    workspace: WorkspaceDep,
    name: str | None = None,
    tag: TagQuery = None,
    page_size: PageSize = 100,
    page_token: PageToken = None,
) -> dict[str, Any]:
    tags = tag_filters(tag)
    return page_json(workspace.list_models(name=name, tags=tags, page_size=page_size, page_token=page_token))


@router.get("/{name}/versions/{version}", summary="One model version ('latest' for the newest)")
def get_model(name: str, version: str, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.get_model(name, version_or_latest(version, what="model")).to_dict()


@router.post("/{name}/versions/{version}/tags", summary="Set and remove tags of a model version")
def tag_model(name: str, version: str, body: ModelTagsBody, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.tag_model(name, version_number(version, what="model"), set=body.set, remove=body.remove).to_dict()


@router.delete("/{name}/versions/{version}", status_code=204, summary="Delete a version no deployment uses")
def delete_model(name: str, version: str, workspace: WorkspaceDep) -> Response:
    workspace.delete_model(name, version_number(version, what="model"))
    return Response(status_code=204)


@router.get("/{name}/versions/{version}/references", summary="Images and deployments that use a model version")
def model_references(name: str, version: str, workspace: WorkspaceDep) -> dict[str, Any]:
    return {
        "references": [ref.to_dict() for ref in workspace.model_references(name, version_number(version, what="model"))]
    }

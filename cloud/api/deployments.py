"""Deployment routes: create, list, show (per-device status), delete. They only translate to the controller."""

from __future__ import annotations

from typing import Annotated, Any

from edgewise.cloud.api.deps import PageSize, PageToken
from edgewise.cloud.deployments.controller import DeploymentController
from edgewise.cloud.errors import ServiceUnavailableError
from edgewise.cloud.store.database import check_page_size, decode_page_token, encode_page_token
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

router = APIRouter(tags=["deployments"])


async def get_deployments(request: Request) -> DeploymentController:
    controller: DeploymentController | None = request.app.state.workspace.deployments
    if controller is None:
        raise ServiceUnavailableError("this workspace service runs without a deployment controller (no MQTT broker)")
    return controller


ControllerDep = Annotated[DeploymentController, Depends(get_deployments)]


class CreateDeploymentBody(BaseModel):
    name: str
    image: str
    version: int | None = None
    device_id: str | None = None
    target: str | None = None
    priority: int = 0
    module: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    restart_policy: str = "always"
    http_port: int | None = None
    grpc_port: int | None = None
    batch_size: int | None = None
    batch_percent: float | None = None
    max_failures: int | None = None


@router.post("/deployments", status_code=201, summary="Deploy an image to a device or to devices matching a condition")
def create_deployment(body: CreateDeploymentBody, controller: ControllerDep) -> dict[str, Any]:
    fields = body.model_dump()
    name = fields.pop("name")
    return controller.create(name, **fields).to_dict()


@router.get("/deployments", summary="Deployments, oldest first, a page at a time")
def list_deployments(
    controller: ControllerDep, page_size: PageSize = 100, page_token: PageToken = None
) -> dict[str, Any]:
    offset, size = decode_page_token(page_token), check_page_size(page_size)
    every = controller.list_all()
    following = encode_page_token(offset + size) if len(every) > offset + size else None
    return {"items": [d.to_dict() for d in every[offset : offset + size]], "next_page_token": following}


@router.get("/deployments/{name}", summary="A deployment with each targeted device's state and the counts")
def get_deployment(name: str, controller: ControllerDep) -> dict[str, Any]:
    return controller.report(name).to_dict()


@router.delete("/deployments/{name}", status_code=204, summary="Remove the deployment's modules from its devices")
def delete_deployment(name: str, controller: ControllerDep) -> Response:
    controller.delete(name)
    return Response(status_code=204)

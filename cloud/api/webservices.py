"""Web service routes: create, list, show, delete. They only translate to `WebServices`."""

from __future__ import annotations

from typing import Annotated, Any

from edgewise.cloud.errors import ServiceUnavailableError
from edgewise.cloud.webservices import WebServices
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

router = APIRouter(tags=["webservices"])


async def get_webservices(request: Request) -> WebServices:
    webservices: WebServices | None = getattr(request.app.state.workspace, "webservices", None)
    if webservices is None:
        raise ServiceUnavailableError("this workspace service runs without web services (no MQTT broker)")
    return webservices


WebServicesDep = Annotated[WebServices, Depends(get_webservices)]


class CreateWebServiceBody(BaseModel):
    name: str
    image: str
    version: int | None = None
    http_port: int | None = None
    grpc_port: int | None = None
    env: dict[str, str] = Field(default_factory=dict)


@router.post("/webservices", status_code=201, summary="Serve an image on the workspace host")
def create_webservice(body: CreateWebServiceBody, webservices: WebServicesDep) -> dict[str, Any]:
    fields = body.model_dump()
    name = fields.pop("name")
    return webservices.create(name, **fields).to_dict()


@router.get("/webservices", summary="Every web service with its state and scoring URLs")
def list_webservices(webservices: WebServicesDep) -> dict[str, Any]:
    return {"items": [s.to_dict() for s in webservices.list()], "next_page_token": None}


@router.get("/webservices/{name}", summary="A web service: state, runtime status, scoring URLs")
def get_webservice(name: str, webservices: WebServicesDep) -> dict[str, Any]:
    return webservices.get(name).to_dict()


@router.delete("/webservices/{name}", status_code=204, summary="Stop serving: the host agent removes the module")
def delete_webservice(name: str, webservices: WebServicesDep) -> Response:
    webservices.delete(name)
    return Response(status_code=204)

"""Device registry routes: add (answers the connection string once), list by tag, show, tag, remove; and the
public half of the manifest-signing key that devices trust."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from edgewise.cloud.api.deps import PageSize, PageToken, TagQuery, page_json, tag_filters
from edgewise.cloud.devices import DeviceRegistry
from edgewise.cloud.errors import ConflictError, InvalidInputError, ServiceUnavailableError
from edgewise.cloud.names import WEBSERVICE_HOST_ID
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

router = APIRouter(tags=["devices"])


async def get_devices(request: Request) -> DeviceRegistry:
    devices: DeviceRegistry | None = request.app.state.workspace.devices
    if devices is None:
        raise ServiceUnavailableError("this workspace service runs without a device registry (no MQTT broker)")
    return devices


DevicesDep = Annotated[DeviceRegistry, Depends(get_devices)]


class AddDeviceBody(BaseModel):
    id: str
    tags: dict[str, str] = Field(default_factory=dict)


class DeviceTagsBody(BaseModel):
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


@router.post(
    "/devices",
    status_code=201,
    summary="Register a device and create its broker credentials; the answer is the only place its secret appears",
    response_class=Response,
    responses={201: {"content": {"application/json": {}}, "description": '{"device", "connection_string"}'}},
)
def add_device(body: AddDeviceBody, devices: DevicesDep) -> Response:
    if body.id == WEBSERVICE_HOST_ID:
        raise InvalidInputError(
            f"device id {WEBSERVICE_HOST_ID!r} is the workspace host that runs web services; pick another"
        )
    added = devices.add(body.id, tags=body.tags)  # a plain def: waits on the broker's reload in a worker thread
    return Response(
        orjson.dumps(added.to_dict()),
        status_code=201,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


@router.get("/devices", summary="List devices by id; filter by tags")
def list_devices(
    devices: DevicesDep, tag: TagQuery = None, page_size: PageSize = 100, page_token: PageToken = None
) -> dict[str, Any]:
    return page_json(devices.list(tags=tag_filters(tag), page_size=page_size, page_token=page_token))


@router.get("/devices/{device_id}", summary="One device: tags, last reported state, online status")
def get_device(device_id: str, devices: DevicesDep) -> dict[str, Any]:
    return devices.get(device_id).to_dict()


@router.patch("/devices/{device_id}/tags", summary="Set and remove tags of a device")
def tag_device(device_id: str, body: DeviceTagsBody, devices: DevicesDep) -> dict[str, Any]:
    return devices.tag(device_id, set=body.set, remove=body.remove).to_dict()


@router.delete("/devices/{device_id}", status_code=204, summary="Revoke a device's credentials and forget it")
def remove_device(device_id: str, devices: DevicesDep) -> Response:
    if device_id == WEBSERVICE_HOST_ID:
        raise ConflictError(
            f"device {WEBSERVICE_HOST_ID!r} is the workspace host that runs web services and cannot be removed; "
            "`edgewise webservice delete NAME` takes a web service off it"
        )
    devices.remove(device_id)
    return Response(status_code=204)


@router.get("/keys/manifest", summary="The public key devices verify desired manifests with")
async def manifest_key(devices: DevicesDep) -> dict[str, str]:
    return devices.manifest_key.describe()

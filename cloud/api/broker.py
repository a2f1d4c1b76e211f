"""The broker's accounts for an external broker's operator: `edgewise broker config` reads them here."""

from __future__ import annotations

from typing import Any

from edgewise.cloud.api.devices import DevicesDep
from fastapi import APIRouter

router = APIRouter(prefix="/broker", tags=["broker"])


@router.get("/config", summary="Password and ACL files (salted hashes only) and the broker settings that use them")
def broker_config(devices: DevicesDep, format: str = "mosquitto") -> dict[str, Any]:
    return devices.broker_config(format)

"""Web services: models served on the workspace host through an agent the service runs for itself."""

from __future__ import annotations

from .host import HOST_DEVICE_ID, HOST_TAGS, HostAgent
from .records import WebService
from .service import PREFIX, WebServices, check_webservice_name, deployment_name

__all__ = [
    "HOST_DEVICE_ID",
    "HOST_TAGS",
    "PREFIX",
    "HostAgent",
    "WebService",
    "WebServices",
    "check_webservice_name",
    "deployment_name",
]

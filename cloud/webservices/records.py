"""The web service record: a deployment on the workspace host seen from the scoring client's side."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgewise.cloud.deployments.records import _Plain


@dataclass(frozen=True, kw_only=True)
class WebService(_Plain):
    """One module served on the workspace host, with the URLs clients score against."""

    name: str
    deployment: str  # the deployment behind it, `webservice-NAME`
    image_name: str
    image_version: int
    models: list[str] = field(default_factory=list)  # NAME:VERSION of the models in the image
    state: str  # the deployment's state on the host: targeted, applied, succeeded, failed
    reason: str | None = None
    runtime_status: str | None = None  # what the host agent reports: running, backoff, failed, ...
    status_description: str | None = None
    host: str
    http_port: int
    grpc_port: int
    rest_url: str  # http://HOST:PORT
    infer_url: str | None = None  # REST_URL/v2/models/MODEL/infer, when the image holds one model
    grpc_url: str  # HOST:PORT
    env: dict[str, str] = field(default_factory=dict)
    created_at: float

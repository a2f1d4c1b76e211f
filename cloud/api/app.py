"""The workspace's HTTP API: FastAPI routers under /api/v1, errors as `{"error": {"code", "message"}}`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from edgewise.cloud.api import activities, blobs, broker, deployments, devices, experiments, images, models, runs
from edgewise.cloud.api.registry_v2 import create_registry_router
from edgewise.cloud.api.security import BearerToken
from edgewise.cloud.api.telemetry import router as telemetry_router
from edgewise.cloud.api.webservices import router as webservices_router
from edgewise.cloud.errors import InvalidInputError, WorkspaceError, error_payload
from edgewise.cloud.image_registry import RegistryImages
from edgewise.cloud.images.oci import workspace_error as oci_workspace_error
from edgewise.cloud.workspace import Workspace
from edgewise.runtime.oci.errors import OciError
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import edgewise

API_PREFIX = "/api/v1"


def create_app(
    *,
    workspace: Workspace,
    token: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="edgewise workspace",
        version=edgewise.__version__,
        description="Experiments, runs, metrics, artifacts and the model registry. "
        "Every route but /api/v1/health needs `Authorization: Bearer <token>` (the token is in the data folder).",
        lifespan=lifespan,
    )
    app.state.workspace = workspace
    bearer = BearerToken(token=token)
    secured = [Depends(bearer)]
    # The hottest write route first, served without the framework's per-request work (see the function).
    app.router.routes.append(models.fast_register_route(path=f"{API_PREFIX}{models.router.prefix}", bearer=bearer))
    for module in (blobs, experiments, runs, models, images, activities, devices, broker):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=secured)
    app.include_router(deployments.router, prefix=API_PREFIX, dependencies=secured)
    app.include_router(webservices_router, prefix=API_PREFIX, dependencies=secured)
    app.include_router(telemetry_router, prefix=API_PREFIX, dependencies=secured)

    # The OCI distribution pull API at /v2/: it checks its own credentials (bearer token, basic auth with the
    # token as password, or a device's id and secret) and answers errors in the distribution spec's shape.
    app.include_router(
        create_registry_router(
            resolver=RegistryImages(store=workspace.store),
            blobs=workspace.blobs,
            token=token,
            device_login=workspace.device_login,
        )
    )

    @app.get(f"{API_PREFIX}/health", tags=["service"], summary="Liveness; needs no token")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": edgewise.__version__}

    @app.exception_handler(WorkspaceError)
    async def workspace_error(request: Request, exc: WorkspaceError) -> JSONResponse:
        return JSONResponse(error_payload(exc), status_code=exc.http_status)

    @app.exception_handler(OciError)
    async def image_error(request: Request, exc: OciError) -> JSONResponse:
        error = oci_workspace_error(exc)
        return JSONResponse(error_payload(error), status_code=error.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in exc.errors()[:5]
        )
        error = InvalidInputError(f"invalid request: {problems}")
        return JSONResponse(error_payload(error), status_code=error.http_status)

    return app

"""Content-addressed uploads and downloads: ask what is missing, then PUT only that."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import Any

from edgewise.cloud.api.bodies import MissingBlobsBody
from edgewise.cloud.api.deps import WorkspaceDep
from edgewise.cloud.errors import InvalidInputError
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

router = APIRouter(prefix="/blobs", tags=["blobs"])
_BINARY = {"schema": {"type": "string", "format": "binary"}}
MAX_BLOB_BYTES = 8 << 30
SPOOL_IN_MEMORY = 16 << 20


@router.post("/missing", summary="Which of these digests the service does not have yet")
def missing(body: MissingBlobsBody, workspace: WorkspaceDep) -> dict[str, Any]:
    return {"missing": workspace.missing_blobs(body.digests)}


@router.put(
    "/{digest}",
    status_code=201,
    summary="Upload one blob; its bytes must hash to the digest",
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": _BINARY}}},
)
async def put_blob(digest: str, request: Request, workspace: WorkspaceDep) -> dict[str, Any]:
    # Spooled (in memory while small, then on disk), then hashed and stored off the event loop.
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=str(workspace.data_dir / "tmp")) as spool:
        total = 0
        async for chunk in _body(request):
            total += len(chunk)
            if total > MAX_BLOB_BYTES:
                raise InvalidInputError(f"blob larger than {MAX_BLOB_BYTES} bytes")
            spool.write(chunk)
        spool.seek(0)
        chunks = iter(lambda: spool.read(1 << 20), b"")
        stored, size = await run_in_threadpool(workspace.put_blob, digest, chunks)
    return {"digest": stored, "size": size}


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


@router.get("/{digest}", summary="Download one blob", response_class=FileResponse)
def get_blob(digest: str, workspace: WorkspaceDep) -> FileResponse:
    return FileResponse(workspace.blob_path(digest), media_type="application/octet-stream")


@router.head("/{digest}", summary="Whether the service has a blob", include_in_schema=False)
def head_blob(digest: str, workspace: WorkspaceDep) -> FileResponse:
    return FileResponse(workspace.blob_path(digest), media_type="application/octet-stream")

"""Runs: submission, queries, cancel, child runs, metrics, artifacts, snapshot and live logs."""

from __future__ import annotations

from typing import Annotated, Any

from edgewise.cloud.api.bodies import (
    ArtifactsBody,
    ChildRunBody,
    CompleteRunBody,
    MetricsBody,
    SubmitRunBody,
    TagsBody,
)
from edgewise.cloud.api.deps import PageSize, PageToken, WorkspaceDep, page_json
from edgewise.cloud.api.metrics_codec import decode_items, encode_rows
from edgewise.cloud.store.records import RunStatus
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=201, summary="Submit a run of a script from an uploaded snapshot")
def submit_run(body: SubmitRunBody, workspace: WorkspaceDep) -> dict[str, Any]:
    run = workspace.submit_run(
        experiment=body.experiment,
        spec=body.spec.record(),
        snapshot=[entry.record() for entry in body.snapshot],
        git=body.git.record() if body.git else None,
        name=body.name,
        tags=body.tags,
    )
    return run.to_dict()


@router.get("", summary="List runs, filtered and ordered (see docs/workspace.md for the query language)")
def list_runs(
    workspace: WorkspaceDep,
    experiment: str | None = None,
    filter: Annotated[str | None, Query(description="e.g. metrics.accuracy > 0.9 AND tags.team = 'a'")] = None,
    order_by: Annotated[str | None, Query(description="e.g. metrics.accuracy desc")] = None,
    include_children: bool = False,
    parent_id: str | None = None,
    page_size: PageSize = 100,
    page_token: PageToken = None,
) -> dict[str, Any]:
    page = workspace.list_runs(
        experiment=experiment,
        filter=filter,
        order_by=order_by,
        include_children=include_children,
        parent_id=parent_id,
        page_size=page_size,
        page_token=page_token,
    )
    return page_json(page)


@router.get("/{run_id}", summary="One run")
def get_run(run_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.get_run(run_id).to_dict()


@router.post("/{run_id}/cancel", summary="Cancel a queued or running run (its whole process tree stops)")
def cancel_run(run_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.cancel_run(run_id).to_dict()


@router.post("/{run_id}/children", status_code=201, summary="Start a child run")
def create_child_run(run_id: str, body: ChildRunBody, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.create_child_run(run_id, name=body.name).to_dict()


@router.post("/{run_id}/complete", summary="End a child run (submitted runs end with their process)")
def complete_run(run_id: str, body: CompleteRunBody, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.complete_run(run_id, status=RunStatus(body.status), reason=body.reason).to_dict()


@router.post("/{run_id}/tags", summary="Set tags on a run")
def set_run_tags(run_id: str, body: TagsBody, workspace: WorkspaceDep) -> dict[str, Any]:
    return workspace.set_run_tags(run_id, body.tags).to_dict()


@router.post(
    "/{run_id}/metrics",
    status_code=204,
    summary="Log a batch of metric points",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": MetricsBody.model_json_schema()}}}
    },
)
async def log_metrics(run_id: str, request: Request, workspace: WorkspaceDep) -> Response:
    items = decode_items(await request.body())
    await run_in_threadpool(workspace.log_metric_items, run_id, items)
    return Response(status_code=204)


@router.get("/{run_id}/metrics", summary='Metric history of a run, in logging order: {"metrics": [MetricPoint]}')
def get_metrics(run_id: str, workspace: WorkspaceDep, name: str | None = None) -> Response:
    return Response(encode_rows(workspace.metric_rows(run_id, name)), media_type="application/json")


@router.post("/{run_id}/artifacts", status_code=204, summary="Attach uploaded blobs to a run as files")
def add_artifacts(run_id: str, body: ArtifactsBody, workspace: WorkspaceDep) -> Response:
    workspace.add_artifacts(run_id, [entry.record() for entry in body.artifacts])
    return Response(status_code=204)


@router.get("/{run_id}/artifacts", summary="Files of a run")
def list_artifacts(run_id: str, workspace: WorkspaceDep, prefix: str | None = None) -> dict[str, Any]:
    return {"artifacts": [a.to_dict() for a in workspace.list_artifacts(run_id, prefix)]}


@router.get("/{run_id}/artifacts/content", summary="Download one file of a run", response_class=FileResponse)
def get_artifact(run_id: str, path: str, workspace: WorkspaceDep) -> FileResponse:
    return FileResponse(workspace.artifact_path(run_id, path), media_type="application/octet-stream")


@router.get("/{run_id}/snapshot", summary="The files of the source folder as submitted")
def get_snapshot(run_id: str, workspace: WorkspaceDep) -> dict[str, Any]:
    return {"files": [entry.to_dict() for entry in workspace.get_snapshot(run_id)]}


@router.get("/{run_id}/logs", summary="A run's stdout or stderr from an offset (poll it to follow)")
def get_logs(
    run_id: str,
    workspace: WorkspaceDep,
    stream: str = "stdout",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    data, next_offset, run = workspace.read_logs(run_id, stream=stream, offset=offset)
    headers = {"X-Edgewise-Next-Offset": str(next_offset), "X-Edgewise-Run-Status": run.status.value}
    return Response(content=data, media_type="text/plain; charset=utf-8", headers=headers)

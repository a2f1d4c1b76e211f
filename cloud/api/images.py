"""The image registry: build an image of a model version (an activity), list, read and delete images."""

from __future__ import annotations

from typing import Any, Literal

from edgewise.cloud.api.bodies import FileEntryBody
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
from edgewise.cloud.fpga_images import FpgaOptions
from edgewise.cloud.image_registry import BuildRequest
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

router = APIRouter(prefix="/images", tags=["images"])


class BaseImageBody(BaseModel):
    manifest_digest: str
    name: str | None = None


class FpgaBody(BaseModel):
    device: str = "up5k"
    parallelism: int = Field(default=8, ge=1)
    clock_mhz: float = Field(default=48.0, gt=0)
    calibration: FileEntryBody | None = None  # uploaded first; None: the model's own calibration file

    def options(self) -> FpgaOptions:
        calibration = self.calibration.record() if self.calibration else None
        return FpgaOptions(
            device=self.device, parallelism=self.parallelism, clock_mhz=self.clock_mhz, calibration=calibration
        )


class BuildImageBody(BaseModel):
    name: str
    model: str
    model_version: int | None = Field(default=None, ge=1)
    scoring_files: list[FileEntryBody] = Field(default_factory=list)
    requirements: str | None = None
    base: BaseImageBody | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    kind: Literal["oci", "fpga"] = "oci"
    fpga: FpgaBody | None = None


@router.post("", status_code=202, summary="Build an image of a model version; answers the build's activity")
def build_image(body: BuildImageBody, workspace: WorkspaceDep) -> dict[str, Any]:
    request = BuildRequest(
        name=body.name,
        model=body.model,
        model_version=body.model_version,
        scoring_files=[entry.record() for entry in body.scoring_files],
        requirements=body.requirements,
        base_manifest=body.base.manifest_digest if body.base else None,
        base_name=body.base.name if body.base else None,
        tags=body.tags,
        kind=body.kind,
        fpga=body.fpga.options() if body.fpga else None,
    )
    return workspace.images.submit_build(request).to_dict()


@router.get("", summary="List images, newest first; filter by name and tags")
def list_images(
    workspace: WorkspaceDep,
    name: str | None = None,
    tag: TagQuery = None,
    page_size: PageSize = 100,
    page_token: PageToken = None,
) -> dict[str, Any]:
    tags = tag_filters(tag)
    return page_json(workspace.images.list_images(name=name, tags=tags, page_size=page_size, page_token=page_token))


@router.get("/{name}/versions/{version}", summary="One image version ('latest' for the newest)")
def get_image(name: str, version: str, workspace: WorkspaceDep) -> dict[str, Any]:
    number = version_or_latest(version, what="image")
    return workspace.images.get_image(name, number).to_dict()


@router.delete("/{name}/versions/{version}", status_code=204, summary="Delete an image no deployment uses")
def delete_image(name: str, version: str, workspace: WorkspaceDep) -> Response:
    workspace.images.delete_image(name, version_number(version, what="image"))
    return Response(status_code=204)


@router.get("/{name}/versions/{version}/references", summary="Deployments that use an image version")
def image_references(name: str, version: str, workspace: WorkspaceDep) -> dict[str, Any]:
    return {
        "references": [
            ref.to_dict() for ref in workspace.images.image_references(name, version_number(version, what="image"))
        ]
    }

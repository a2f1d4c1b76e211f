"""Request bodies of the HTTP API, as pydantic models so the OpenAPI schema documents them."""

from __future__ import annotations

from typing import Any, Literal

from edgewise.cloud.store.records import FileEntry, GitInfo, RunSpec
from pydantic import BaseModel, Field


class FileEntryBody(BaseModel):
    path: str
    digest: str
    size: int = Field(ge=0)
    mode: int = 0o644

    def record(self) -> FileEntry:
        return FileEntry(path=self.path, digest=self.digest, size=self.size, mode=self.mode)


class RunSpecBody(BaseModel):
    script: str
    arguments: list[str] = Field(default_factory=list)
    requirements: str | None = None
    compute: str = "local"
    environment: dict[str, str] = Field(default_factory=dict)

    def record(self) -> RunSpec:
        return RunSpec(**self.model_dump())


class GitInfoBody(BaseModel):
    url: str | None = None
    branch: str | None = None
    commit: str | None = None
    dirty: bool = False

    def record(self) -> GitInfo:
        return GitInfo(**self.model_dump())


class SubmitRunBody(BaseModel):
    experiment: str
    spec: RunSpecBody
    snapshot: list[FileEntryBody]
    git: GitInfoBody | None = None
    name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class MissingBlobsBody(BaseModel):
    digests: list[str]


class ChildRunBody(BaseModel):
    name: str


class CompleteRunBody(BaseModel):
    status: Literal["completed", "failed"] = "completed"
    reason: str | None = None


class TagsBody(BaseModel):
    tags: dict[str, str]


class MetricPointBody(BaseModel):
    name: str
    timestamp: float
    value: float | None = None
    step: int | None = None
    kind: Literal["scalar", "list", "row", "table", "image"] = "scalar"
    payload: Any = None


class MetricsBody(BaseModel):
    points: list[MetricPointBody]


class ArtifactsBody(BaseModel):
    artifacts: list[FileEntryBody]


class RegisterModelBody(BaseModel):
    name: str
    run_id: str | None = None
    path: str | None = None
    files: list[FileEntryBody] | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    properties: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    convert: Literal["onnx"] | None = None


class ModelTagsBody(BaseModel):
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

"""The workspace's records: what the store returns, the API sends as JSON and the SDK hands to users.

Every record is a frozen dataclass with `to_dict()` and `from_dict()`, so the service and its clients share
one definition of each shape. Digests are OCI-style strings, `sha256:<64 hex digits>`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)


class MetricKind(enum.StrEnum):
    """A scalar carries `value`; the other kinds carry a JSON `payload` (images: {"path", "digest"})."""

    SCALAR = "scalar"
    LIST = "list"
    ROW = "row"
    TABLE = "table"
    IMAGE = "image"


_KINDS = {kind.value: kind for kind in MetricKind}


class _Record:
    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(self)
        return plain

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        return _build(cls, data)


@dataclass(frozen=True, kw_only=True)
class FileEntry(_Record):
    """One file of a snapshot, an artifact set or a model: a relative POSIX path and its blob."""

    path: str
    digest: str
    size: int
    mode: int = 0o644


@dataclass(frozen=True, kw_only=True)
class GitInfo(_Record):
    url: str | None = None
    branch: str | None = None
    commit: str | None = None
    dirty: bool = False


@dataclass(frozen=True, kw_only=True)
class RunSpec(_Record):
    """What a submission asks for; child runs created from inside a script have none."""

    script: str
    arguments: list[str] = field(default_factory=list)
    requirements: str | None = None  # the text of a requirements file
    compute: str = "local"
    environment: dict[str, str] = field(default_factory=dict)  # extra environment variables for the script


@dataclass(frozen=True, kw_only=True)
class Experiment(_Record):
    id: str
    name: str
    created_at: float
    run_count: int = 0


@dataclass(frozen=True, kw_only=True)
class Run(_Record):
    id: str
    experiment: str
    status: RunStatus
    created_at: float
    name: str | None = None
    parent_id: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    status_reason: str | None = None
    spec: RunSpec | None = None
    git: GitInfo | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each scalar metric

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at if self.ended_at is not None else _now()) - self.started_at


@dataclass(frozen=True, kw_only=True)
class MetricPoint(_Record):
    name: str
    timestamp: float
    value: float | None = None
    step: int | None = None
    kind: MetricKind = MetricKind.SCALAR
    payload: Any = None

    # Metric histories run to many thousands of points: these two skip the generic field walk.
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "timestamp": self.timestamp,
            "value": self.value,
            "step": self.step,
            "kind": self.kind.value,
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricPoint:
        kind = data.get("kind")
        return cls.checked(
            name=data["name"],
            timestamp=data["timestamp"],
            value=data.get("value"),
            step=data.get("step"),
            kind=_KINDS[kind] if kind else MetricKind.SCALAR,
            payload=data.get("payload"),
        )

    @classmethod
    def checked(
        cls, *, name: str, timestamp: float, value: float | None, step: int | None, kind: MetricKind, payload: Any
    ) -> MetricPoint:
        """Build a point from values already checked, without the frozen-dataclass __init__ (a third of the cost
        of moving ten thousand points)."""
        point = object.__new__(cls)
        point.__dict__.update(name=name, timestamp=timestamp, value=value, step=step, kind=kind, payload=payload)
        return point


@dataclass(frozen=True, kw_only=True)
class Artifact(_Record):
    """A file of a run: `outputs/...` collected at the end, `logs/...`, or anything the script uploaded."""

    run_id: str
    path: str
    digest: str
    size: int
    created_at: float


@dataclass(frozen=True, kw_only=True)
class ModelReference(_Record):
    """Something that uses a model version; an active one forbids deleting the version."""

    kind: str  # "image" or "deployment"
    name: str
    active: bool
    created_at: float


@dataclass(frozen=True, kw_only=True)
class ModelVersion(_Record):
    name: str
    version: int
    created_at: float
    format: str  # "onnx", "pickle", "directory", "file"
    framework: str | None = None  # "scikit-learn", "pytorch", ... when known
    description: str | None = None
    files: list[FileEntry] = field(default_factory=list)
    run_id: str | None = None
    experiment: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Page(Generic[T]):
    """One page of a list; pass `next_page_token` back to get the next one (None: this was the last)."""

    items: list[T]
    next_page_token: str | None = None


def _now() -> float:
    import time

    return time.time()


_SCALARS = (str, int, float, bool, type(None))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _plain(value: Any) -> Any:
    if isinstance(value, _SCALARS) and not isinstance(value, enum.Enum):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_NESTED: dict[str, type[_Record]] = {"spec": RunSpec, "git": GitInfo}
_ENUMS: dict[str, type[enum.Enum]] = {"status": RunStatus, "kind": MetricKind}


_FIELD_SETS: dict[type, frozenset[str]] = {}


def _field_set(cls: type) -> frozenset[str]:
    names = _FIELD_SETS.get(cls)
    if names is None:
        names = _FIELD_SETS[cls] = frozenset(_field_names(cls))
    return names


def _build(cls: type[_Record], data: Mapping[str, Any]) -> Any:
    names = _field_set(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            continue  # newer servers may send more; older clients ignore it
        if value is not None and key in _NESTED:
            value = _NESTED[key].from_dict(value)
        elif value is not None and key in _ENUMS and not (key == "kind" and cls is not MetricPoint):
            value = _ENUMS[key](value)
        elif key == "files" and value is not None:
            value = [FileEntry.from_dict(v) for v in value]
        kwargs[key] = value
    return cls(**kwargs)


class ActivityStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (ActivityStatus.SUCCEEDED, ActivityStatus.FAILED)


@dataclass(frozen=True, kw_only=True)
class Activity(_Record):
    """A long operation of the service (an image build): clients poll it for progress and its outcome."""

    id: str
    kind: str  # "image-build"
    status: ActivityStatus
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    progress: float = 0.0  # 0..1
    message: str | None = None  # what it is doing now, or how it ended
    error: str | None = None  # why it failed
    result: str | None = None  # what it made, e.g. the image reference NAME:VERSION
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Activity:
        # Built by hand: the generic builder reads every `status` field as a RunStatus.
        values = {k: v for k, v in data.items() if k in _field_set(cls)}
        values["status"] = ActivityStatus(values["status"])
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Image(_Record):
    """A built OCI image of model versions: versions count up per image name, as for models."""

    name: str
    version: int
    created_at: float
    manifest_digest: str
    config_digest: str
    size: int  # bytes of the manifest, the config and the compressed layers
    media_type: str  # of the manifest
    model_digest: str | None = None
    models: list[str] = field(default_factory=list)  # the model versions inside, as NAME:VERSION
    activity_id: str | None = None  # the build that made it
    base: str | None = None  # how the base image was named, when there is one
    tags: dict[str, str] = field(default_factory=dict)
    kind: str = "oci"  # oci | fpga
    details: dict[str, Any] = field(default_factory=dict)  # an FPGA image's resources, Fmax, cycles, accuracy

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

"""The workspace's operations, free of HTTP: the API routers translate requests into these calls.

It composes the metadata store, the blob store and the local runner, and it is the runner's `RunEvents`:
status changes, process ids and collected files of runs come back through it into the store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from edgewise.cloud import model_files
from edgewise.cloud.errors import ConflictError, InvalidInputError, NotFoundError
from edgewise.cloud.image_registry import ImageRegistry
from edgewise.cloud.names import check_name, check_relpath
from edgewise.cloud.runs.runner import LocalRunner, RunJob, stop_orphan
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.records import (
    Artifact,
    Experiment,
    FileEntry,
    GitInfo,
    MetricPoint,
    ModelReference,
    ModelVersion,
    Page,
    Run,
    RunSpec,
    RunStatus,
)
from edgewise.cloud.store.sql import SqlStore
from edgewise.cloud.store.sql_metrics import MetricItem

if TYPE_CHECKING:
    from edgewise.cloud.deployments.controller import DeploymentController
    from edgewise.cloud.devices import DeviceRegistry
    from edgewise.cloud.webservices import WebServices

log = logging.getLogger("edgewise.workspace")

COMPUTE_TARGETS = ("local",)
LOG_STREAMS = ("stdout", "stderr")
INTERRUPTED = "the workspace service stopped while the run was in flight"


class Workspace:
    def __init__(self, *, store: SqlStore, blobs: BlobStore, data_dir: Path) -> None:
        self.store = store
        self.blobs = blobs
        self.data_dir = data_dir
        self.runner: LocalRunner | None = None
        self.images = ImageRegistry(store=store, blobs=blobs, data_dir=data_dir)
        self.devices: DeviceRegistry | None = None  # attached by the server once the broker is set up
        self.deployments: DeploymentController | None = None  # attached with the devices
        self.webservices: WebServices | None = None  # attached with the deployments

    # -- lifecycle -------------------------------------------------------------------------------------------

    def attach_runner(self, runner: LocalRunner) -> None:
        self.runner = runner

    def attach_devices(self, devices: DeviceRegistry) -> None:
        self.devices = devices

    def attach_deployments(self, deployments: DeploymentController) -> None:
        self.deployments = deployments

    def device_login(self, username: str, password: str) -> bool:
        """Whether the pair is a device's id and secret: the image registry lets devices pull with them."""
        return self.devices is not None and self.devices.verify_login(username, password)

    def recover(self) -> list[str]:
        """Runs left in flight by a previous service instance: stop their processes, mark them failed."""
        for run_id, pid in self.store.unfinished_run_pids().items():
            if stop_orphan(pid):
                log.warning("stopped the leftover process group %d of run %s", pid, run_id)
        failed = self.store.fail_unfinished_runs(INTERRUPTED)
        for run_id in failed:
            log.warning("run %s was in flight when the service stopped; marked failed", run_id)
        self.images.recover()
        return failed

    # -- blobs -----------------------------------------------------------------------------------------------

    def missing_blobs(self, digests: Iterable[str]) -> list[str]:
        return self.blobs.missing(digests)

    def put_blob(self, digest: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        return self.blobs.put_stream(chunks, expected_digest=digest)

    def blob_path(self, digest: str) -> Path:
        return self.blobs.path(digest)

    # -- experiments -----------------------------------------------------------------------------------------

    def list_experiments(self, *, page_size: int, page_token: str | None) -> Page[Experiment]:
        return self.store.list_experiments(page_size=page_size, page_token=page_token)

    def get_experiment(self, name: str) -> Experiment:
        return self.store.get_experiment(name)

    # -- runs ------------------------------------------------------------------------------------------------

    def submit_run(
        self,
        *,
        experiment: str,
        spec: RunSpec,
        snapshot: Sequence[FileEntry],
        git: GitInfo | None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Run:
        check_name("experiment", experiment)
        if spec.compute not in COMPUTE_TARGETS:
            raise InvalidInputError(f"unknown compute target {spec.compute!r}; available: {', '.join(COMPUTE_TARGETS)}")
        files = [_checked_entry(entry, what="snapshot file") for entry in snapshot]
        script = check_relpath(spec.script, what="script")
        if script not in {entry.path for entry in files}:
            raise InvalidInputError(
                f"the script {spec.script!r} is not in the snapshot of the source folder "
                "(check --script and that no ignore rule leaves it out)"
            )
        missing = self.blobs.missing(entry.digest for entry in files)
        if missing:
            raise InvalidInputError(f"{len(missing)} snapshot file(s) were not uploaded, e.g. {missing[0]}")
        run = self.store.create_run(
            experiment=experiment, spec=spec, snapshot=files, git=git, name=name, tags=dict(tags or {})
        )
        if self.runner is None:
            raise ConflictError("this workspace has no runner")
        self.runner.submit(RunJob(run_id=run.id, experiment=experiment, spec=spec, snapshot=files))
        return run

    def get_run(self, run_id: str) -> Run:
        return self.store.get_run(run_id)

    def list_runs(
        self,
        *,
        experiment: str | None = None,
        filter: str | None = None,
        order_by: str | None = None,
        include_children: bool = False,
        parent_id: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        return self.store.list_runs(
            experiment=experiment,
            filter=filter,
            order_by=order_by,
            include_children=include_children,
            parent_id=parent_id,
            page_size=page_size,
            page_token=page_token,
        )

    def cancel_run(self, run_id: str) -> Run:
        run = self.store.get_run(run_id)
        if run.status.terminal:
            raise ConflictError(f"run {run_id} already ended ({run.status.value}); there is nothing to cancel")
        if run.spec is not None and self.runner is not None:
            self.runner.cancel(run_id)
        try:
            return self._set_status(run_id, RunStatus.CANCELED, reason="canceled by request")
        except ConflictError:
            return self.store.get_run(run_id)  # it ended on its own meanwhile

    def create_child_run(self, parent_id: str, *, name: str) -> Run:
        parent = self.store.get_run(parent_id)
        if parent.status.terminal:
            raise ConflictError(f"run {parent_id} already ended ({parent.status.value}); it cannot get child runs")
        return self.store.create_run(
            experiment=parent.experiment,
            spec=None,
            snapshot=[],
            git=parent.git,
            name=name,
            parent_id=parent_id,
            status=RunStatus.RUNNING,
        )

    def complete_run(self, run_id: str, *, status: RunStatus, reason: str | None = None) -> Run:
        if status not in (RunStatus.COMPLETED, RunStatus.FAILED):
            raise InvalidInputError("a run completes as 'completed' or 'failed'")
        run = self.store.get_run(run_id)
        if run.spec is not None or run.status.terminal:
            return run  # submitted runs end with their process; ending twice changes nothing
        return self.store.update_run_status(run_id, status, reason=reason)

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> Run:
        return self.store.set_run_tags(run_id, dict(tags))

    def log_metrics(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        self.store.log_metrics(run_id, points)

    def log_metric_items(self, run_id: str, items: Sequence[MetricItem]) -> None:
        """Points as the API decodes them: (name, kind, value, step, timestamp, payload) tuples."""
        self.store.log_metric_items(run_id, items)

    def get_metrics(self, run_id: str, name: str | None = None) -> list[MetricPoint]:
        return self.store.get_metrics(run_id, name)

    def metric_rows(self, run_id: str, name: str | None = None) -> list[tuple[Any, ...]]:
        return self.store.metric_rows(run_id, name)

    def add_artifacts(self, run_id: str, entries: Sequence[FileEntry]) -> None:
        checked = [_checked_entry(entry, what="artifact") for entry in entries]
        missing = self.blobs.missing(entry.digest for entry in checked)
        if missing:
            raise InvalidInputError(f"upload the blob {missing[0]} before adding it as an artifact")
        self.store.add_artifacts(run_id, checked)

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[Artifact]:
        return self.store.list_artifacts(run_id, prefix)

    def artifact_path(self, run_id: str, path: str) -> Path:
        artifact = self.store.get_artifact(run_id, check_relpath(path, what="artifact path"))
        return self.blobs.path(artifact.digest)

    def get_snapshot(self, run_id: str) -> list[FileEntry]:
        return self.store.get_snapshot(run_id)

    def read_logs(self, run_id: str, *, stream: str, offset: int, limit: int = 1 << 20) -> tuple[bytes, int, Run]:
        """Bytes of a run's log from `offset`: from the live file while it runs, else from its stored artifact."""
        if stream not in LOG_STREAMS:
            raise InvalidInputError(f"unknown log stream {stream!r}; use one of {', '.join(LOG_STREAMS)}")
        if offset < 0:
            raise InvalidInputError("offset must be zero or more")
        run = self.store.get_run(run_id)
        path = self.data_dir / "runs" / run_id / "logs" / f"{stream}.txt"
        if not path.exists():
            try:
                path = self.artifact_path(run_id, f"logs/{stream}.txt")
            except NotFoundError:
                return b"", offset, run
        with path.open("rb") as source:
            source.seek(offset)
            data = source.read(limit)
        return data, offset + len(data), run

    # -- RunEvents (called by the runner's threads) -----------------------------------------------------------

    def run_status(
        self, run_id: str, status: RunStatus, *, exit_code: int | None = None, reason: str | None = None
    ) -> None:
        self._set_status(run_id, status, exit_code=exit_code, reason=reason)

    def run_pid(self, run_id: str, pid: int | None) -> None:
        self.store.set_run_pid(run_id, pid)

    def run_files(self, run_id: str, files: list[FileEntry]) -> None:
        self.store.add_artifacts(run_id, files)

    def _set_status(
        self, run_id: str, status: RunStatus, *, exit_code: int | None = None, reason: str | None = None
    ) -> Run:
        return self.store.update_run_status(run_id, status, exit_code=exit_code, reason=reason)

    # -- model registry --------------------------------------------------------------------------------------

    def register_model(
        self,
        *,
        name: str,
        run_id: str | None = None,
        path: str | None = None,
        files: Sequence[FileEntry] | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        description: str | None = None,
        convert: str | None = None,
    ) -> ModelVersion:
        check_name("model", name)
        experiment = None
        if run_id is not None:
            if files:
                raise InvalidInputError("give either a run and a path, or files, not both")
            if convert is None:  # the common case: one transaction finds the run's files and registers them
                return self.store.register_run_model(
                    name=name,
                    run_id=run_id,
                    path=_model_path(path),
                    describe=self._describe,
                    description=description,
                    tags=dict(tags or {}),
                    properties=dict(properties or {}),
                )
            model_files_ = self._run_model_files(run_id, path)  # the store fills in the run's experiment
        elif files:
            if path is not None:
                raise InvalidInputError("a path only makes sense with a run")
            model_files_ = [_checked_entry(entry, what="model file") for entry in files]
            missing = self.blobs.missing(entry.digest for entry in model_files_)
            if missing:
                raise InvalidInputError(f"upload the blob {missing[0]} before registering it")
        else:
            raise InvalidInputError("a model needs files: give a run and the path of its output, or upload files")
        props = dict(properties or {})
        if convert is not None:
            model_files_, props = self._convert(model_files_, convert, props)
        model_format, framework = model_files.describe(model_files_, self.blobs.path)
        return self.store.register_model(
            name=name,
            files=model_files_,
            format=model_format,
            framework=framework,
            run_id=run_id,
            experiment=experiment,
            description=description,
            tags=dict(tags or {}),
            properties=props,
        )

    def _describe(self, files: list[FileEntry]) -> tuple[str, str | None]:
        return model_files.describe(files, self.blobs.path)

    def _run_model_files(self, run_id: str, path: str | None) -> list[FileEntry]:
        wanted = _model_path(path)
        base = PurePosixPath(wanted).parent
        found = [
            a for a in self.store.list_artifacts(run_id, wanted) if a.path == wanted or a.path.startswith(wanted + "/")
        ]
        if not found:
            self.store.get_run(run_id)  # an unknown run is reported as such
            have = sorted(a.path for a in self.store.list_artifacts(run_id, None) if a.path.startswith("outputs/"))
            hint = f"; its outputs are: {', '.join(have[:10])}" if have else "; it has no outputs"
            raise NotFoundError(f"run {run_id} has no file or folder {wanted!r}{hint}")
        return [
            FileEntry(path=str(PurePosixPath(a.path).relative_to(base)), digest=a.digest, size=a.size) for a in found
        ]

    def _convert(
        self, files: list[FileEntry], target: str, props: dict[str, str]
    ) -> tuple[list[FileEntry], dict[str, str]]:
        if target != "onnx":
            raise InvalidInputError(f"unknown conversion {target!r}; the only one is 'onnx' (scikit-learn pickles)")
        if len(files) != 1 or model_files.describe(files)[0] != "pickle":
            raise InvalidInputError("--convert onnx takes one pickled scikit-learn model (.pkl, .pickle, .joblib)")
        source = files[0]
        converted = model_files.convert_sklearn_to_onnx(self.blobs.path(source.digest), out_dir=self.data_dir / "tmp")
        try:
            digest, size = self.blobs.put_file(converted)
        finally:
            converted.unlink(missing_ok=True)
        stem = PurePosixPath(source.path).with_suffix(".onnx")
        props.setdefault("converted_from", f"{source.path} ({source.digest})")
        return [FileEntry(path=str(stem), digest=digest, size=size)], props

    def get_model(self, name: str, version: int | None = None) -> ModelVersion:
        return self.store.get_model(name, version)

    def list_models(
        self,
        *,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        return self.store.list_models(name=name, tags=tags, page_size=page_size, page_token=page_token)

    def tag_model(
        self, name: str, version: int, *, set: Mapping[str, str] | None = None, remove: Sequence[str] = ()
    ) -> ModelVersion:
        return self.store.set_model_tags(name, version, set=set, remove=remove)

    def delete_model(self, name: str, version: int) -> None:
        self.store.delete_model(name, version)

    def model_references(self, name: str, version: int) -> list[ModelReference]:
        return self.store.list_model_references(name, version)


def _model_path(path: str | None) -> str:
    if not path:
        raise InvalidInputError("give the path of the model in the run's files, e.g. outputs/model.onnx")
    return check_relpath(path, what="model path")


def _checked_entry(entry: FileEntry, *, what: str) -> FileEntry:
    path = check_relpath(entry.path, what=what)
    if entry.size < 0:
        raise InvalidInputError(f"{what} {path!r} has a negative size")
    return entry if path == entry.path else FileEntry(path=path, digest=entry.digest, size=entry.size, mode=entry.mode)

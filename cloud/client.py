"""`Client`: the HTTP client of the workspace API that the CLI, the SDK and users' code share.

One keep-alive connection pool per client; errors sent by the service come back as the same classes of
`edgewise.cloud.errors`, and a service that cannot be reached is a ServiceUnavailableError that says what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import orjson
from edgewise.cloud.deployments.records import SETTLED, Deployment, DeploymentReport
from edgewise.cloud.errors import (
    InvalidInputError,
    WorkspaceError,
    error_from_payload,
)
from edgewise.cloud.ingest.records import DeviceHealth, TelemetryRecord
from edgewise.cloud.names import check_relpath
from edgewise.cloud.sdk.keepalive import KeepAliveConnection
from edgewise.cloud.sdk.transfer import digest_file, download_to, model_files, unreachable
from edgewise.cloud.store.device_records import Device, NewDevice
from edgewise.cloud.store.records import (
    Activity,
    Artifact,
    Experiment,
    FileEntry,
    Image,
    MetricKind,
    MetricPoint,
    ModelReference,
    ModelVersion,
    Run,
    RunSpec,
    RunStatus,
)

if TYPE_CHECKING:
    from edgewise.cloud.images.oci import Descriptor, OciImage
    from edgewise.cloud.webservices.records import WebService

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_MAX_SNAPSHOT_BYTES = 300 * 2**20  # the limits of edgewise.cloud.runs.snapshot, without importing it
DEFAULT_MAX_SNAPSHOT_FILES = 2000
_PAGE_SIZE = 1000
EXPORT_FORMATS = ("oci", "oci-archive", "docker-archive")
_JSON = {"content-type": "application/json"}
_METRIC_FIELDS = frozenset(f.name for f in dataclasses.fields(MetricPoint))
_METRIC_KINDS = {kind.value: kind for kind in MetricKind}

R = TypeVar("R")


def default_url() -> str:
    return os.environ.get("EDGEWISE_URL") or DEFAULT_URL


def default_token() -> str | None:
    """`EDGEWISE_TOKEN`, else the token file the service wrote in its data directory, else None."""
    token = os.environ.get("EDGEWISE_TOKEN")
    if token:
        return token
    data = Path(os.environ.get("EDGEWISE_DATA") or Path.home() / ".edgewise")
    try:
        return (data / "token").read_text().strip() or None
    except OSError:
        return None


class Client:
    """A synchronous client of one workspace; use it as a context manager or call `close()`."""

    def __init__(self, *, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or default_url()).rstrip("/")
        headers = {"user-agent": "edgewise-client"}
        token = token if token is not None else default_token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1/", headers=headers, timeout=timeout, trust_env=False, follow_redirects=False
        )
        self._fast = KeepAliveConnection(base_url=f"{self.url}/api/v1/", headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._fast.close()
        self._http.close()

    # -- plumbing --------------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Any = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        if json is not None:
            content, headers = orjson.dumps(json), {**_JSON, **(headers or {})}
        try:
            if content is None or isinstance(content, bytes):
                response = self._fast.request(method, path, content=content, params=params, headers=headers)
            else:
                response = self._http.request(method, path, content=content, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return orjson.loads(self._request(method, path, **kwargs).content)

    def _pages(self, path: str, params: dict[str, Any], build: Callable[[Any], R], limit: int | None) -> list[R]:
        items: list[R] = []
        token: str | None = None
        while limit is None or len(items) < limit:
            size = _PAGE_SIZE if limit is None else max(1, min(_PAGE_SIZE, limit - len(items)))
            query = [*_query(params), ("page_size", size)] + ([("page_token", token)] if token else [])
            page = self._json("GET", path, params=query)
            items.extend(build(item) for item in page["items"])
            token = page.get("next_page_token")
            if not token:
                break
        return items if limit is None else items[:limit]

    # -- service and blobs -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "health")
        return result

    def upload_files(
        self, files: Mapping[str, Path], *, progress: Callable[[int, int], None] | None = None
    ) -> list[FileEntry]:
        """Hash each file and upload only the blobs the service does not have yet."""
        entries = []
        for rel, local in files.items():
            digest, size = digest_file(Path(local))
            mode = os.stat(local).st_mode & 0o777
            entries.append(FileEntry(path=check_relpath(rel), digest=digest, size=size, mode=mode))
        self._upload_entries(
            entries, {e.path: Path(files[rel]) for e, rel in zip(entries, files, strict=True)}, progress
        )
        return entries

    def _upload_entries(
        self,
        entries: Sequence[FileEntry],
        local: Mapping[str, Path],
        progress: Callable[[int, int], None] | None,
    ) -> None:
        digests = sorted({entry.digest for entry in entries})
        missing = set(self._json("POST", "blobs/missing", json={"digests": digests})["missing"]) if digests else set()
        todo: dict[str, FileEntry] = {}
        for entry in entries:
            if entry.digest in missing:
                todo.setdefault(entry.digest, entry)
        total, done = sum(e.size for e in todo.values()), 0
        if progress is not None:
            progress(done, total)
        for digest, entry in todo.items():
            with open(local[entry.path], "rb") as stream:
                headers = {"content-type": "application/octet-stream", "content-length": str(entry.size)}
                self._request("PUT", f"blobs/{digest}", content=stream, headers=headers)
            done += entry.size
            if progress is not None:
                progress(done, total)

    def download_blob(self, digest: str, dest: Path) -> Path:
        """Stream the blob into `dest`, check its digest, and only then move it into place."""
        return self._download(f"blobs/{digest}", None, Path(dest), digest)

    def _download(self, path: str, params: Any, dest: Path, digest: str | None) -> Path:
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                return download_to(response.iter_bytes(1 << 20), dest, digest)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc

    # -- experiments and runs --------------------------------------------------------------------------------

    def list_experiments(self) -> list[Experiment]:
        return self._pages("experiments", {}, Experiment.from_dict, None)

    def get_experiment(self, name: str) -> Experiment:
        result: Experiment = Experiment.from_dict(self._json("GET", f"experiments/{name}"))
        return result

    def submit_run(
        self,
        *,
        experiment: str,
        source: Path,
        spec: RunSpec,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        max_snapshot_files: int = DEFAULT_MAX_SNAPSHOT_FILES,
        progress: Callable[[int, int], None] | None = None,
    ) -> Run:
        """Snapshot `source`, upload what the service lacks, and queue the run."""
        from edgewise.cloud.runs.gitinfo import git_info
        from edgewise.cloud.runs.snapshot import hash_snapshot, take_snapshot

        source = Path(source)
        snapshot = take_snapshot(source, max_bytes=max_snapshot_bytes, max_files=max_snapshot_files)
        entries = hash_snapshot(snapshot)
        local = {f.path: f.abspath for f in snapshot.files}
        self._upload_entries(entries, local, progress)
        git = git_info(source)
        body: dict[str, Any] = {
            "experiment": experiment,
            "spec": spec.to_dict(),
            "snapshot": [e.to_dict() for e in entries],
            "git": git.to_dict() if git is not None else None,
        }
        if name is not None:
            body["name"] = name
        if tags:
            body["tags"] = dict(tags)
        return _run(self._json("POST", "runs", json=body))

    def get_run(self, run_id: str) -> Run:
        return _run(self._json("GET", f"runs/{run_id}"))

    def list_runs(
        self,
        *,
        experiment: str | None = None,
        filter: str | None = None,
        order_by: str | None = None,
        include_children: bool = False,
        parent_id: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        params = {
            "experiment": experiment,
            "filter": filter,
            "order_by": order_by,
            "include_children": "true" if include_children else None,
            "parent_id": parent_id,
        }
        return self._pages("runs", params, _run, limit)

    def get_snapshot(self, run_id: str) -> list[FileEntry]:
        """The files of the source folder as the run was submitted."""
        return [FileEntry.from_dict(f) for f in self._json("GET", f"runs/{run_id}/snapshot")["files"]]

    def cancel_run(self, run_id: str) -> Run:
        return _run(self._json("POST", f"runs/{run_id}/cancel"))

    def wait_run(self, run_id: str, *, timeout: float | None = None, poll: float = 0.5) -> Run:
        """Poll until the run has ended; TimeoutError if it is still going after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.status.terminal:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout}s; wait longer or cancel it")
            time.sleep(poll)

    def read_logs(self, run_id: str, *, stream: str = "stdout", offset: int = 0) -> tuple[bytes, int, RunStatus]:
        """The log bytes from `offset`, the offset to ask for next, and the run's status at the time."""
        response = self._request("GET", f"runs/{run_id}/logs", params={"stream": stream, "offset": offset})
        next_offset = int(response.headers.get("x-edgewise-next-offset", offset + len(response.content)))
        return response.content, next_offset, RunStatus(response.headers["x-edgewise-run-status"])

    def follow_logs(self, run_id: str, *, poll: float = 0.5) -> Iterator[tuple[str, bytes]]:
        """(stream, chunk) pairs from stdout and stderr as they grow, until the run has ended and both are drained."""
        offsets = {"stdout": 0, "stderr": 0}
        while True:
            got_any, ended = False, True
            for stream in offsets:
                chunk, offsets[stream], status = self.read_logs(run_id, stream=stream, offset=offsets[stream])
                ended = ended and status.terminal
                if chunk:
                    got_any = True
                    yield stream, chunk
            if ended and not got_any:
                return
            if not got_any:
                time.sleep(poll)

    def log_metrics(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        self.log_metric_dicts(run_id, [p.to_dict() for p in points])

    def log_metric_dicts(self, run_id: str, points: Sequence[Mapping[str, Any]]) -> None:
        """Send points already in their wire form (`MetricPoint.to_dict()`), which skips building records."""
        self._request("POST", f"runs/{run_id}/metrics", json={"points": points})

    def get_metrics(self, run_id: str, name: str | None = None) -> list[MetricPoint]:
        params = {"name": name} if name is not None else None
        return _metric_points(self._request("GET", f"runs/{run_id}/metrics", params=params).content)

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> Run:
        return _run(self._json("POST", f"runs/{run_id}/tags", json={"tags": dict(tags)}))

    def create_child_run(self, parent_id: str, *, name: str) -> Run:
        return _run(self._json("POST", f"runs/{parent_id}/children", json={"name": name}))

    def complete_run(self, run_id: str, *, status: str = "completed", reason: str | None = None) -> Run:
        body: dict[str, Any] = {"status": str(status)}
        if reason is not None:
            body["reason"] = reason
        return _run(self._json("POST", f"runs/{run_id}/complete", json=body))

    # -- artifacts -------------------------------------------------------------------------------------------

    def add_artifacts(self, run_id: str, entries: Sequence[FileEntry]) -> None:
        body = {"artifacts": [{"path": e.path, "digest": e.digest, "size": e.size} for e in entries]}
        self._request("POST", f"runs/{run_id}/artifacts", json=body)

    def upload_artifact(self, run_id: str, *, name: str, path: Path) -> FileEntry:
        """Upload one local file as the run's artifact `name` (a relative path such as `plots/loss.png`)."""
        (entry,) = self.upload_files({name: Path(path)})
        self.add_artifacts(run_id, [entry])
        return entry

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[Artifact]:
        params = {"prefix": prefix} if prefix is not None else None
        data = self._json("GET", f"runs/{run_id}/artifacts", params=params)
        return [Artifact.from_dict(a) for a in data["artifacts"]]

    def download_artifact(self, run_id: str, path: str, dest: Path) -> Path:
        return self._download(f"runs/{run_id}/artifacts/content", {"path": path}, Path(dest), None)

    # -- models ----------------------------------------------------------------------------------------------

    def register_model(
        self,
        *,
        name: str,
        run_id: str | None = None,
        path: str | None = None,
        file: Path | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        description: str | None = None,
        convert: str | None = None,
    ) -> ModelVersion:
        """A new version of model `name`: from a run's artifact `path`, or from a local file or folder."""
        body: dict[str, Any] = {"name": name}
        if file is not None:
            body["files"] = [e.to_dict() for e in self.upload_files(model_files(Path(file)))]
        optional = {"run_id": run_id, "path": path, "description": description, "convert": convert}
        body.update({k: v for k, v in optional.items() if v is not None})
        if tags:
            body["tags"] = dict(tags)
        if properties:
            body["properties"] = dict(properties)
        return _model(self._json("POST", "models", json=body))

    def get_model(self, name: str, version: int | None = None) -> ModelVersion:
        return _model(self._json("GET", f"models/{name}/versions/{_version(version)}"))

    def list_models(
        self, *, name: str | None = None, tags: Mapping[str, str | None] | None = None, limit: int | None = None
    ) -> list[ModelVersion]:
        """Model versions, newest first; `tags` maps a key to a value it must have, or None for any value."""
        params: dict[str, Any] = {"name": name}
        if tags:
            params["tag"] = [key if value is None else f"{key}={value}" for key, value in tags.items()]
        return self._pages("models", params, _model, limit)

    def download_model(self, name: str, version: int | None = None, *, dest: Path) -> list[Path]:
        """Every file of the model version under `dest`, at its relative path."""
        model = self.get_model(name, version)
        dest = Path(dest)
        return [self.download_blob(f.digest, dest / check_relpath(f.path, what="model file")) for f in model.files]

    def tag_model(
        self, name: str, version: int, *, set: Mapping[str, str] | None = None, remove: Sequence[str] = ()
    ) -> ModelVersion:
        body = {"set": dict(set or {}), "remove": list(remove)}
        return _model(self._json("POST", f"models/{name}/versions/{version}/tags", json=body))

    def delete_model(self, name: str, version: int) -> None:
        self._request("DELETE", f"models/{name}/versions/{version}")

    def model_references(self, name: str, version: int) -> list[ModelReference]:
        data = self._json("GET", f"models/{name}/versions/{version}/references")
        return [_reference(r) for r in data["references"]]

    # -- images and activities -------------------------------------------------------------------------------

    def build_image(
        self,
        *,
        name: str,
        model: str,
        model_version: int | None = None,
        score: Path | None = None,
        requirements: Path | None = None,
        base: str | None = None,
        tags: Mapping[str, str] | None = None,
        kind: str = "oci",
        device: str | None = None,
        parallelism: int | None = None,
        calibration: Path | None = None,
    ) -> Activity:
        """Ask the service to build image `name` of a model version; answers the build's activity (queued).

        `kind="fpga"` compiles the model for an FPGA `device` with `parallelism` multiply-accumulate units,
        quantized with the `calibration` file (.npz with x and optional labels y, .npy or .csv), uploaded first.

        `score` is the scoring script (shipped as score.py), `requirements` a pip requirements file recorded with
        it, `base` an image to build on: `oci:DIR[:REF]` or a layout folder, `oci-archive:FILE[:REF]`, or
        `docker://host:port/repo:tag`. The base image's blobs are uploaded first, those the service lacks only.
        """
        body: dict[str, Any] = {"name": name, "model": model, "tags": dict(tags or {})}
        if model_version is not None:
            body["model_version"] = int(model_version)
        if score is not None:
            body["scoring_files"] = [e.to_dict() for e in self.upload_files({"score.py": Path(score)})]
        if requirements is not None:
            body["requirements"] = Path(requirements).read_text()
        if base is not None:
            body["base"] = {"manifest_digest": self._upload_base_image(base), "name": base}
        if kind != "oci":
            body["kind"] = kind
            fpga: dict[str, Any] = {}
            if device is not None:
                fpga["device"] = device
            if parallelism is not None:
                fpga["parallelism"] = int(parallelism)
            if calibration is not None:
                path = Path(calibration)
                fpga["calibration"] = self.upload_files({path.name: path})[0].to_dict()
            body["fpga"] = fpga
        return _activity(self._json("POST", "images", json=body))

    def _upload_base_image(self, base: str) -> str:
        with _open_base(base) as (image, manifest):
            descriptors: dict[str, Descriptor] = {}
            for descriptor in (manifest, image.config_descriptor, *image.layers):
                descriptors.setdefault(descriptor.digest, descriptor)
            missing = self._json("POST", "blobs/missing", json={"digests": sorted(descriptors)})["missing"]
            for digest in missing:
                descriptor = descriptors[digest]
                with image.blobs.open_blob(descriptor) as reader:
                    chunks = iter(lambda: reader.read(1 << 20), b"")
                    headers = {"content-type": "application/octet-stream", "content-length": str(descriptor.size)}
                    self._request("PUT", f"blobs/{digest}", content=chunks, headers=headers)
                    reader.read_to_end()
            return manifest.digest

    def get_activity(self, activity_id: str) -> Activity:
        return _activity(self._json("GET", f"activities/{activity_id}"))

    def list_activities(
        self, *, kind: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Activity]:
        """Activities, newest first."""
        return self._pages("activities", {"kind": kind, "status": status}, _activity, limit)

    def wait_activity(
        self,
        activity_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        progress: Callable[[Activity], None] | None = None,
    ) -> Activity:
        """Poll until the activity has ended (calling `progress` with each state); TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            activity = self.get_activity(activity_id)
            if progress is not None:
                progress(activity)
            if activity.status.terminal:
                return activity
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"activity {activity_id} is still {activity.status} after {timeout}s")
            time.sleep(poll)

    def get_image(self, name: str, version: int | None = None) -> Image:
        return _image(self._json("GET", f"images/{name}/versions/{_version(version)}"))

    def list_images(
        self, *, name: str | None = None, tags: Mapping[str, str | None] | None = None, limit: int | None = None
    ) -> list[Image]:
        """Images, newest first; `tags` maps a key to a value it must have, or None for any value."""
        params: dict[str, Any] = {"name": name}
        if tags:
            params["tag"] = [key if value is None else f"{key}={value}" for key, value in tags.items()]
        return self._pages("images", params, _image, limit)

    def delete_image(self, name: str, version: int) -> None:
        self._request("DELETE", f"images/{name}/versions/{version}")

    def image_references(self, name: str, version: int) -> list[ModelReference]:
        data = self._json("GET", f"images/{name}/versions/{version}/references")
        return [_reference(r) for r in data["references"]]

    def export_image(
        self, name: str, version: int | None = None, *, format: str, dest: Path, ref_name: str | None = None
    ) -> Path:
        """Write an image locally as an OCI layout folder (`oci`), an OCI archive or a docker-archive.

        The blobs are fetched (and checked against their digests) into a scratch store beside `dest`, then the
        image library writes the chosen format, so what lands at `dest` is what a build would have written.
        """
        import tempfile

        from edgewise.cloud.images import write_docker_archive, write_layout, write_oci_archive
        from edgewise.cloud.store.blobs import BlobStore

        if format not in EXPORT_FORMATS:
            raise InvalidInputError(f"unknown image format {format!r}; use one of {', '.join(EXPORT_FORMATS)}")
        image = self.get_image(name, version)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.export-") as scratch:
            store = BlobStore(root=Path(scratch))
            built = self._fetch_image(store, image)
            if format == "oci":
                write_layout(store, built, dest, ref_name=ref_name)
            elif format == "oci-archive":
                write_oci_archive(store, built, dest, ref_name=ref_name)
            else:
                write_docker_archive(store, built, dest, repo_tags=[ref_name] if ref_name else None)
        return dest

    def push_image(
        self,
        name: str,
        version: int | None = None,
        *,
        target: str,
        username: str | None = None,
        password: str | None = None,
        progress: Callable[[Any], None] | None = None,
    ) -> str:
        """Push an image to an external registry (`host:port/repo[:tag]`, the tag defaulting to the version):
        its blobs come from the workspace (checked against their digests) and only those the registry lacks are
        uploaded. Answers the pushed manifest digest."""
        import tempfile

        from edgewise.cloud.images.distribution import parse_reference, push_image
        from edgewise.cloud.store.blobs import BlobStore

        image = self.get_image(name, version)
        ref = parse_reference(target)
        if ref.tag is None and ref.digest is None:
            target = f"{target}:{image.version}"
        with tempfile.TemporaryDirectory(prefix=".edgewise-push-") as scratch:
            store = BlobStore(root=Path(scratch))
            built = self._fetch_image(store, image)
            return push_image(
                blobs=store,
                manifest=built.manifest,
                target=target,
                username=username,
                password=password,
                progress=progress,
            )

    def _fetch_image(self, store: Any, image: Image) -> Any:
        """Every blob of `image` into the scratch `store`; answers the library's view of the image."""
        from edgewise.cloud.image_registry import stored_image

        self._fetch_blob(store, image.manifest_digest)
        manifest = orjson.loads(store.path(image.manifest_digest).read_bytes())
        for descriptor in [manifest.get("config") or {}, *(manifest.get("layers") or [])]:
            self._fetch_blob(store, str(descriptor.get("digest")))
        return stored_image(store, image)

    def _fetch_blob(self, store: Any, digest: str) -> None:
        if store.exists(digest):
            return
        try:
            with self._http.stream("GET", f"blobs/{digest}") as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                store.put_stream(response.iter_bytes(1 << 20), expected_digest=digest)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc

    # -- devices and broker ----------------------------------------------------------------------------------

    def add_device(self, device_id: str, *, tags: Mapping[str, str] | None = None) -> NewDevice:
        """Register a device with broker credentials; its connection string (with the secret) comes only here."""
        body = {"id": device_id, "tags": dict(tags or {})}
        return NewDevice.from_dict(self._json("POST", "devices", json=body))

    def get_device(self, device_id: str) -> Device:
        return Device.from_dict(self._json("GET", f"devices/{device_id}"))

    def list_devices(self, *, tags: Mapping[str, str | None] | None = None, limit: int | None = None) -> list[Device]:
        """Devices by id; `tags` maps a key to a value it must have, or None for any value."""
        params: dict[str, Any] = {}
        if tags:
            params["tag"] = [key if value is None else f"{key}={value}" for key, value in tags.items()]
        return self._pages("devices", params, Device.from_dict, limit)

    def tag_device(self, device_id: str, *, set: Mapping[str, str] | None = None, remove: Sequence[str] = ()) -> Device:
        body = {"set": dict(set or {}), "remove": list(remove)}
        return Device.from_dict(self._json("PATCH", f"devices/{device_id}/tags", json=body))

    def remove_device(self, device_id: str) -> None:
        """Revoke the device's credentials (the broker refuses its new connections) and forget it."""
        self._request("DELETE", f"devices/{device_id}")

    def manifest_key(self) -> dict[str, str]:
        """The public key devices verify manifests with: `algorithm`, `public_key` (ed25519:...), `key_id`."""
        key: dict[str, str] = self._json("GET", "keys/manifest")
        return key

    def broker_config(self, *, format: str = "mosquitto") -> dict[str, Any]:
        """The broker's password and ACL files and the settings that use them, for an external broker's operator."""
        config: dict[str, Any] = self._json("GET", "broker/config", params={"format": format})
        return config

    # -- deployments -----------------------------------------------------------------------------------------

    def create_deployment(self, name: str, *, image: str, version: int | None = None, **options: Any) -> Deployment:
        """Deploy image `image` to `device_id=` or to the devices a `target=` condition matches; `options` are the
        other fields of POST /deployments (priority, module, env, restart_policy, ports, rollout settings)."""
        body = {"name": name, "image": image, "version": version, **options}
        return Deployment.from_dict(self._json("POST", "deployments", json=body))

    def list_deployments(self, *, limit: int | None = None) -> list[Deployment]:
        return self._pages("deployments", {}, Deployment.from_dict, limit)

    def get_deployment(self, name: str) -> DeploymentReport:
        """The deployment, each targeted device's state (with reasons) and the counts."""
        return DeploymentReport.from_dict(self._json("GET", f"deployments/{name}"))

    def delete_deployment(self, name: str) -> None:
        """Take the deployment's modules off its devices and release its model and image references."""
        self._request("DELETE", f"deployments/{name}")

    def wait_deployment(self, name: str, *, timeout: float | None = None, poll: float = 0.5) -> DeploymentReport:
        """Poll until every targeted device settled (succeeded, failed, or overridden by another deployment), or
        the deployment rolled back."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            report = self.get_deployment(name)
            counts = report.counts
            settled = sum(counts.get(state.value, 0) for state in SETTLED)
            if report.deployment.status == "rolled-back" or (
                report.deployment.status == "active" and settled >= counts.get("targeted", 0)
            ):
                return report
            if deadline is not None and time.monotonic() > deadline:
                return report
            time.sleep(poll)

    # -- telemetry -------------------------------------------------------------------------------------------

    def device_telemetry(
        self,
        device_id: str,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        kind: str | None = None,
        module: str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[TelemetryRecord]:
        """A device's newest `limit` records, oldest first. `since`/`until`: epoch seconds, an ISO 8601 time, or a
        duration before now (`10m`, measured by the service's clock); `name`: a record kind or a data key at any
        depth."""
        params = {"since": since, "until": until, "kind": kind, "module": module, "name": name, "limit": limit}
        answer = self._json("GET", f"devices/{device_id}/telemetry", params=_query(params))
        return [TelemetryRecord.from_dict(record) for record in answer["records"]]

    def fleet_health(self, *, tags: Mapping[str, str | None] | None = None) -> list[DeviceHealth]:
        """Every device's health: online, last seen, failing modules, CPU, memory, disk, request and error rates."""
        params: dict[str, Any] = {}
        if tags:
            params["tag"] = [key if value is None else f"{key}={value}" for key, value in tags.items()]
        answer = self._json("GET", "fleet/health", params=_query(params))
        return [DeviceHealth.from_dict(device) for device in answer["devices"]]

    # -- web services ----------------------------------------------------------------------------------------

    def create_webservice(
        self,
        name: str,
        *,
        image: str,
        version: int | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        timeout: float = 300.0,
    ) -> WebService:
        """Serve `image` on the workspace host; with `wait`, poll until it serves or failed (or `timeout`)."""
        from edgewise.cloud.webservices.records import WebService

        body = {
            "name": name,
            "image": image,
            "version": version,
            "http_port": http_port,
            "grpc_port": grpc_port,
            "env": dict(env or {}),
        }
        created = WebService.from_dict(self._json("POST", "webservices", json=body))
        return self.wait_webservice(name, timeout=timeout) if wait else created

    def wait_webservice(self, name: str, *, timeout: float | None = None, poll: float = 0.5) -> WebService:
        """Poll until the web service succeeded (serving) or failed; the last state after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            service = self.get_webservice(name)
            if service.state in ("succeeded", "failed"):
                return service
            if deadline is not None and time.monotonic() > deadline:
                return service
            time.sleep(poll)

    def get_webservice(self, name: str) -> WebService:
        from edgewise.cloud.webservices.records import WebService

        return WebService.from_dict(self._json("GET", f"webservices/{name}"))

    def list_webservices(self) -> list[WebService]:
        from edgewise.cloud.webservices.records import WebService

        return [WebService.from_dict(item) for item in self._json("GET", "webservices")["items"]]

    def delete_webservice(self, name: str) -> None:
        """Stop serving: the deployment goes, the host agent removes the module, the image is released."""
        self._request("DELETE", f"webservices/{name}")


def _error(response: httpx.Response) -> WorkspaceError:
    try:
        payload: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        payload = response.text[:300]
    return error_from_payload(response.status_code, payload)


def _query(params: Mapping[str, Any]) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in params.items():
        if isinstance(value, list):
            pairs.extend((key, v) for v in value)
        elif value is not None:
            pairs.append((key, value))
    return pairs


def _metric_points(raw: bytes) -> list[MetricPoint]:
    """A metric history (often many thousands of points) as records, at the cost of decoding the JSON and little
    more: the cyclic collector is paused while the objects are made (otherwise its full passes, which grow with
    the heap, can triple the cost), and a point that arrives with exactly the record's fields becomes one by
    taking over the decoded dict instead of copying it."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        points = orjson.loads(raw)["metrics"]
        out: list[MetricPoint] = []
        append, new, set_attr, kinds = out.append, object.__new__, object.__setattr__, _METRIC_KINDS
        for data in points:
            kind = kinds.get(data.get("kind"))
            if kind is None or data.keys() != _METRIC_FIELDS:
                append(MetricPoint.from_dict(data))
                continue
            data["kind"] = kind
            point = new(MetricPoint)
            set_attr(point, "__dict__", data)
            append(point)
        return out
    finally:
        if paused:
            gc.enable()


def _run(data: Any) -> Run:
    run: Run = Run.from_dict(data)
    return run


def _model(data: Any) -> ModelVersion:
    model: ModelVersion = ModelVersion.from_dict(data)
    return model


def _reference(data: Mapping[str, Any]) -> ModelReference:
    # Built by hand: the generic `from_dict` reads every `kind` field as a MetricKind.
    names = {f.name for f in dataclasses.fields(ModelReference)}
    return ModelReference(**{k: v for k, v in data.items() if k in names})


def _version(version: int | None) -> str:
    return "latest" if version is None else str(int(version))


def _activity(data: Any) -> Activity:
    return Activity.from_dict(data)


def _image(data: Any) -> Image:
    image: Image = Image.from_dict(data)
    return image


@contextlib.contextmanager
def _open_base(text: str) -> Iterator[tuple[OciImage, Descriptor]]:
    """The base image named on the command line and its manifest descriptor (the blobs are read lazily)."""
    from edgewise.cloud.images import LayoutDir, OciArchive, load_image
    from edgewise.cloud.images.unpack import select_manifest

    if text.startswith("docker://"):
        try:
            from edgewise.cloud.images.distribution import RegistryBlobs, pull_image
        except ImportError:
            raise InvalidInputError("registry base images are not supported yet") from None
        image = pull_image(source=text)
        if not isinstance(image.blobs, RegistryBlobs):  # pragma: no cover - pull_image reads from the registry
            raise InvalidInputError(f"cannot read the base image {text}")
        yield image, image.blobs.fetch_manifest(image.manifest_digest)
        return
    kind, path, ref = _base_location(text)
    if kind == "oci" or (kind == "" and path.is_dir()):
        layout = LayoutDir(path=path)
        descriptor = select_manifest(layout.read_file("index.json"), ref, where=str(path))
        yield load_image(layout, descriptor), descriptor
        return
    if not path.is_file():
        raise InvalidInputError(f"no OCI layout folder or OCI archive at {path} (base image {text!r})")
    with OciArchive(path=path) as archive, tarfile.open(path, mode="r:*") as tar:
        index = _archive_index(tar, path)
        descriptor = select_manifest(index, ref, where=str(path))
        yield load_image(archive, descriptor), descriptor


def _base_location(text: str) -> tuple[str, Path, str | None]:
    """`oci:DIR[:REF]`, `oci-archive:FILE[:REF]` or a plain path: the transport, the path and the ref name."""
    for kind in ("oci-archive", "oci"):
        if text.startswith(kind + ":"):
            rest = text[len(kind) + 1 :]
            path, sep, ref = rest.rpartition(":")
            if sep and path and "/" not in ref:
                return kind, Path(path), ref or None
            return kind, Path(rest), None
    return "", Path(text), None


def _archive_index(tar: tarfile.TarFile, path: Path) -> bytes:
    from edgewise.cloud.images.oci import MAX_JSON_BYTES

    for member in tar:
        if member.isfile() and member.name.lstrip("./") == "index.json":
            if member.size > MAX_JSON_BYTES:
                break
            stream = tar.extractfile(member)
            if stream is not None:
                return stream.read()
    raise InvalidInputError(f"{path} is not an OCI archive: it has no usable index.json")

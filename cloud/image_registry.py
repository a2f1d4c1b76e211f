"""The image registry of the workspace, free of HTTP: builds as activities on a worker thread, and the images.

A build is checked as far as it can be when it is asked for (image name, model version, uploaded blobs), so
that a typo is an immediate error; what needs real work (compiling the scoring script, verifying and unpacking
the base image, writing the layers) happens on the worker and ends the activity failed with the reason. An
image record is written only when every blob is in the blob store, so a failed build leaves no image behind
(its blobs may stay: they are content-addressed and shared).
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from edgewise.cloud.errors import InvalidInputError, NotFoundError, WorkspaceError
from edgewise.cloud.fpga_images import ARTIFACT_TYPE, MODEL_CONFIG, FpgaOptions, compile_fpga
from edgewise.cloud.images import oci
from edgewise.cloud.images.builder import (
    LABEL_IMAGE_KIND,
    BuiltImage,
    ModelImageSpec,
    StoreBlobs,
    build_model_image,
    model_digest_of,
    model_files_from_entries,
)
from edgewise.cloud.images.layers import Source
from edgewise.cloud.images.unpack import load_image, unpack_image
from edgewise.cloud.names import check_name
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.records import Activity, ActivityStatus, FileEntry, Image, ModelReference, Page

if TYPE_CHECKING:
    from edgewise.cloud.store.sql import SqlStore

log = logging.getLogger("edgewise.images")

BUILD = "image-build"
KINDS = ("oci", "fpga")
INTERRUPTED = "the workspace service stopped while the activity was in flight"
REQUIREMENTS_FILE = "requirements.txt"
SCRIPT_FILE = "score.py"
_STOP = None


@dataclass(frozen=True, kw_only=True)
class BuildRequest:
    """What `edgewise image build` asks for; blobs of scoring files and of the base image are uploaded first."""

    name: str
    model: str
    model_version: int | None = None  # None: the latest version when the build is asked for
    scoring_files: Sequence[FileEntry] = ()
    requirements: str | None = None  # pip requirements of the scoring script (text of a requirements file)
    base_manifest: str | None = None  # digest of the base image's manifest blob
    base_name: str | None = None  # how the user named the base image, recorded in the image
    tags: Mapping[str, str] = field(default_factory=dict)
    kind: str = "oci"  # oci | fpga
    fpga: FpgaOptions | None = None  # for kind fpga; None: the defaults


@dataclass(frozen=True, kw_only=True)
class _Job:
    activity_id: str
    request: BuildRequest
    model_version: int
    model_files: tuple[FileEntry, ...]


class ImageRegistry:
    """Builds on one worker thread (builds are CPU and disk bound; one at a time keeps the service responsive)."""

    def __init__(self, *, store: SqlStore, blobs: BlobStore, data_dir: Path) -> None:
        self.store = store
        self.blobs = blobs
        self.data_dir = data_dir
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Activities a previous service instance left in flight are marked failed: their worker is gone."""
        failed = self.store.fail_unfinished_activities(INTERRUPTED)
        for activity_id in failed:
            log.warning("activity %s was in flight when the service stopped; marked failed", activity_id)
        return failed

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="edgewise-image-builds", daemon=True)
            self._worker.start()

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop taking builds; one in flight may finish within `timeout`, else the next start marks it failed."""
        worker, self._worker = self._worker, None
        if worker is not None:
            self._jobs.put(_STOP)
            worker.join(timeout)

    # -- builds and activities -------------------------------------------------------------------------------

    def submit_build(self, request: BuildRequest) -> Activity:
        """Check what can be checked now and queue the build; answer its activity (queued)."""
        check_name("image", request.name)
        if request.kind not in KINDS:
            raise InvalidInputError(f"unknown image kind {request.kind!r}; use one of {', '.join(KINDS)}")
        fpga = request.fpga or FpgaOptions()
        if request.kind == "fpga":
            fpga.check()
            if request.scoring_files or request.requirements is not None or request.base_manifest is not None:
                raise InvalidInputError("an FPGA image takes no scoring script, requirements or base image")
        model = self.store.get_model(request.model, request.model_version)
        for entry in request.scoring_files:
            if entry.path == REQUIREMENTS_FILE and request.requirements is not None:
                raise InvalidInputError(f"give the requirements either as --requirements or as {REQUIREMENTS_FILE}")
        missing = self.blobs.missing(
            [entry.digest for entry in request.scoring_files]
            + ([request.base_manifest] if request.base_manifest else [])
            + ([fpga.calibration.digest] if request.kind == "fpga" and fpga.calibration else [])
        )
        if missing:
            raise InvalidInputError(f"upload the blob {missing[0]} before building with it")
        if self._worker is None:
            raise WorkspaceError("this workspace does not build images (its build worker is not running)")
        parameters: dict[str, Any] = {
            "image": request.name,
            "model": model.ref,
            "scoring_files": [entry.path for entry in request.scoring_files],
            "requirements": request.requirements is not None,
            "base": request.base_name or request.base_manifest,
            "tags": dict(request.tags),
            "kind": request.kind,
        }
        if request.kind == "fpga":
            parameters["fpga"] = fpga.to_json()
        activity = self.store.create_activity(kind=BUILD, parameters=parameters)
        self._jobs.put(
            _Job(activity_id=activity.id, request=request, model_version=model.version, model_files=tuple(model.files))
        )
        return activity

    def get_activity(self, activity_id: str) -> Activity:
        return self.store.get_activity(activity_id)

    def list_activities(
        self,
        *,
        kind: str | None = None,
        status: ActivityStatus | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Activity]:
        return self.store.list_activities(kind=kind, status=status, page_size=page_size, page_token=page_token)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._build(job)
            except WorkspaceError as exc:
                self._end(job.activity_id, error=str(exc))
            except Exception as exc:  # a bug must not kill the worker; the activity says what happened
                log.exception("image build %s failed", job.activity_id)
                self._end(job.activity_id, error=f"internal error: {type(exc).__name__}: {exc}")

    def _end(self, activity_id: str, *, error: str) -> None:
        try:
            self.store.update_activity(activity_id, status=ActivityStatus.FAILED, error=error, message="build failed")
        except WorkspaceError:
            log.exception("could not record the failure of activity %s", activity_id)

    def _build(self, job: _Job) -> None:
        request, activity_id = job.request, job.activity_id
        ref = f"{request.model}:{job.model_version}"

        def step(progress: float, message: str) -> None:
            self.store.update_activity(activity_id, progress=progress, message=message)

        self.store.update_activity(activity_id, status=ActivityStatus.RUNNING, progress=0.02, message="starting")
        if request.kind == "fpga":
            self._build_fpga(job, step)
            return
        step(0.05, "checking the scoring script")
        scoring = self._scoring_files(request)
        base = None
        if request.base_manifest is not None:
            step(0.1, f"verifying the base image {request.base_name or request.base_manifest}")
            base = self._verified_base(request.base_manifest, activity_id)
        step(0.3, f"writing the layers of model {ref}")
        spec = ModelImageSpec(
            model_name=request.model,
            model_version=job.model_version,
            model_files=model_files_from_entries(self.blobs, job.model_files),
            scoring_files=scoring,
            model_config=_model_config(job.model_files, request),
            title=request.name,
            base_name=request.base_name,
        )
        built = build_model_image(self.blobs, spec, base=base)
        self._record(job, built)

    def _record(self, job: _Job, built: BuiltImage, *, details: Mapping[str, Any] | None = None) -> None:
        request, activity_id = job.request, job.activity_id
        base = request.base_name or request.base_manifest
        self.store.update_activity(activity_id, progress=0.95, message="recording the image")
        image = self.store.register_image(
            name=request.name,
            manifest_digest=built.manifest_digest,
            config_digest=built.config_digest,
            size=built.total_size,
            media_type=built.manifest.media_type,
            models=[(request.model, job.model_version)],
            model_digest=built.model_digest,
            activity_id=activity_id,
            base=base,
            tags=request.tags,
            kind=request.kind,
            details=details,
        )
        self.store.update_activity(
            activity_id,
            status=ActivityStatus.SUCCEEDED,
            message=f"built image {image.ref} ({built.manifest_digest})",
            result=image.ref,
        )

    def _build_fpga(self, job: _Job, step: Callable[[float, str], None]) -> None:
        """Compile the model for the FPGA in a scratch folder, then package the version folder it wrote."""
        request = job.request
        ref = f"{request.model}:{job.model_version}"
        scratch = Path(tempfile.mkdtemp(dir=self.data_dir / "tmp", prefix=f"fpga-{job.activity_id}-"))
        try:
            build = compile_fpga(
                blobs=self.blobs,
                model_files=job.model_files,
                model_ref=ref,
                model_name=request.model,
                options=request.fpga or FpgaOptions(),
                data_dir=self.data_dir,
                scratch=scratch,
                progress=lambda fraction, message: step(0.05 + 0.8 * fraction, message),
            )
            step(0.88, "writing the image layers")
            spec = ModelImageSpec(
                model_name=request.model,
                model_version=job.model_version,
                model_files=build.files,
                model_digest=model_digest_of(job.model_files),
                model_config=MODEL_CONFIG,
                title=request.name,
                artifact_type=ARTIFACT_TYPE,
                labels={LABEL_IMAGE_KIND: "fpga"},
                annotations=build.annotations,
            )
            built = build_model_image(self.blobs, spec)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._record(job, built, details=build.details)

    def _scoring_files(self, request: BuildRequest) -> dict[str, Source]:
        """The scoring files as layer sources; Python files must compile (a syntax error names file and line)."""
        files: dict[str, Source] = {}
        for entry in request.scoring_files:
            path = self.blobs.path(entry.digest)
            if PurePosixPath(entry.path).suffix == ".py":
                source = path.read_bytes()
                try:
                    compile(source, entry.path, "exec", dont_inherit=True)
                except SyntaxError as exc:
                    where = f"{entry.path}:{exc.lineno}" if exc.lineno else entry.path
                    raise InvalidInputError(f"{where}: syntax error: {exc.msg}") from None
                except ValueError as exc:  # e.g. NUL bytes
                    raise InvalidInputError(f"{entry.path}: not a Python source file: {exc}") from None
            files[entry.path] = path
        if request.requirements is not None:
            files[REQUIREMENTS_FILE] = request.requirements.encode()
        return files

    def _verified_base(self, manifest_digest: str, activity_id: str) -> oci.OciImage:
        """The base image from the blob store, with every blob and layer entry checked by unpacking it aside."""
        manifest_path = self.blobs.path(manifest_digest)
        size = manifest_path.stat().st_size
        if size > oci.MAX_JSON_BYTES:
            raise InvalidInputError(f"the base image manifest {manifest_digest} is larger than {oci.MAX_JSON_BYTES}")
        media_type = _declared_media_type(manifest_path.read_bytes(), manifest_digest)
        descriptor = oci.Descriptor(media_type=media_type, digest=manifest_digest, size=size)
        reader = StoreBlobs(store=self.blobs)
        try:
            image = load_image(reader, descriptor)
        except NotFoundError as exc:
            raise InvalidInputError(f"the base image is incomplete: {exc}") from None
        scratch = Path(tempfile.mkdtemp(dir=self.data_dir / "tmp", prefix=f"build-{activity_id}-"))
        try:
            unpack_image(image, scratch / "rootfs", rootfs_symlinks=True)
        except NotFoundError as exc:
            raise InvalidInputError(f"the base image is incomplete: {exc}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return image

    # -- images ----------------------------------------------------------------------------------------------

    def get_image(self, name: str, version: int | None = None) -> Image:
        return self.store.get_image(name, version)

    def list_images(
        self,
        *,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Image]:
        return self.store.list_images(name=name, tags=tags, page_size=page_size, page_token=page_token)

    def delete_image(self, name: str, version: int) -> None:
        self.store.delete_image(name, version)

    def image_references(self, name: str, version: int) -> list[ModelReference]:
        return self.store.list_image_references(name, version)


class RegistryImages:
    """The registry's images as the /v2/ pull API sees them: a repository per image name, a tag per version
    (plus `latest`)."""

    def __init__(self, *, store: SqlStore) -> None:
        self._store = store

    def _all(self, name: str | None = None) -> list[Image]:
        images: list[Image] = []
        token: str | None = None
        while True:
            page = self._store.list_images(name=name, page_size=1000, page_token=token)
            images += page.items
            token = page.next_page_token
            if token is None:
                return images

    def repositories(self) -> list[str]:
        return sorted({image.name for image in self._all()})

    def tags(self, repository: str) -> list[str]:
        versions = [str(image.version) for image in self._all(repository)]
        if not versions:
            raise NotFoundError(f"no image named {repository!r}")
        return [*versions, "latest"]

    def resolve(self, repository: str, reference: str) -> str:
        if reference.startswith("sha256:"):
            if any(image.manifest_digest == reference for image in self._all(repository)):
                return reference
            raise NotFoundError(f"image {repository!r} has no manifest {reference}")
        if reference == "latest":
            return self._store.get_image(repository, None).manifest_digest
        if reference.isdigit():
            return self._store.get_image(repository, int(reference)).manifest_digest
        raise NotFoundError(f"image {repository!r} has no tag {reference!r}; its tags are its versions and 'latest'")


def stored_image(blobs: BlobStore, image: Image) -> BuiltImage:
    """An image of the registry as the library's BuiltImage, read and verified from `blobs` (for the writers)."""
    manifest_path = blobs.path(image.manifest_digest)
    descriptor = oci.Descriptor(
        media_type=image.media_type, digest=image.manifest_digest, size=manifest_path.stat().st_size
    )
    loaded = load_image(StoreBlobs(store=blobs), descriptor)
    platform = {"architecture": str(loaded.config.get("architecture")), "os": str(loaded.config.get("os"))}
    return BuiltImage(
        manifest=oci.Descriptor(
            media_type=descriptor.media_type, digest=descriptor.digest, size=descriptor.size, platform=platform
        ),
        config=loaded.config_descriptor,
        layers=loaded.layers,
        diff_ids=tuple(loaded.diff_ids),
        ref_name=f"{image.name}-{image.version}",
        repo_tag=f"edgewise/{image.name.lower()}:{image.version}",
        model_digest=image.model_digest or "",
    )


def _declared_media_type(manifest: bytes, digest: str) -> str:
    import json

    try:
        data = json.loads(manifest)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInputError(f"the base image manifest {digest} is not valid JSON") from None
    media_type = data.get("mediaType", oci.MANIFEST) if isinstance(data, dict) else None
    if not isinstance(media_type, str):
        raise InvalidInputError(f"the base image manifest {digest} has no valid mediaType")
    return media_type


def _model_config(model_files: Sequence[FileEntry], request: BuildRequest) -> dict[str, Any]:
    """The model's config.json for the scoring server: the script backend with a score.py, else the ONNX file.

    `requirements` lists the pip requirements of the scoring script. They are not installed into the image (a
    build never reaches a package index); they are recorded here and shipped as requirements.txt beside the
    script, so that whoever runs the module can install or check them.
    """
    config: dict[str, Any] = {}
    paths = {entry.path for entry in request.scoring_files}
    if SCRIPT_FILE in paths:
        config["backend"] = "script"
    else:
        onnx = sorted(entry.path for entry in model_files if entry.path.endswith(".onnx"))
        if len(onnx) == 1 and onnx[0] != "model.onnx":
            config["default_model_filename"] = onnx[0]
    if request.requirements is not None:
        lines = [line.strip() for line in request.requirements.splitlines()]
        config["requirements"] = [line for line in lines if line and not line.startswith("#")]
    return config

"""Package a registered model as an OCI image whose entrypoint is the scoring server.

An image is up to three layers on top of an optional base image, ordered from the least to the most often
changed: the model files, the scoring code with the model's config.json, and the module configuration
(`/etc/edgewise/module.json`). Every layer, the config and the manifest are reproducible, so building the
same inputs twice gives the same manifest digest, and a new scoring script changes only its own layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.images import oci
from edgewise.cloud.images.layers import DEFAULT_MTIME, Layer, LayerFile, Source, build_layer
from edgewise.cloud.names import check_name, check_relpath
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.records import FileEntry
from edgewise.runtime.oci import oci as shared_oci

MODEL_REPOSITORY = "/var/lib/edgewise/models"
MODULE_CONFIG = "/etc/edgewise/module.json"
SCORE_COMMAND = "edgewise-score"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL_MODEL_NAME = "io.edgewise.model.name"
LABEL_MODEL_VERSION = "io.edgewise.model.version"
LABEL_MODEL_DIGEST = "io.edgewise.model.digest"
LABEL_IMAGE_KIND = "io.edgewise.image.kind"  # "fpga" on FPGA images; the agent checks it against the module type

BaseImage = oci.OciImage
"""What the builder stacks on: any source (layout, archive, registry) that yields a verified OciImage."""


@dataclass(frozen=True, kw_only=True)
class ModelImageSpec:
    """What goes into a model image. Paths in `model_files` and `scoring_files` are relative to the version folder."""

    model_name: str
    model_version: int
    model_files: Mapping[str, Source]
    model_digest: str | None = None  # default: the single file's digest, else the digest of the file listing
    scoring_files: Mapping[str, Source] = field(default_factory=dict)  # score.py and what it imports
    model_config: Mapping[str, Any] | None = None  # the model's config.json in the repository
    server_args: Sequence[str] = ()  # more edgewise-score arguments, e.g. ["--metrics"]
    http_port: int = 8000
    grpc_port: int = 8001
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    created: datetime | None = None  # default: the Unix epoch, so that rebuilds are identical
    title: str | None = None
    description: str | None = None
    source: str | None = None  # e.g. the git URL of the training code
    revision: str | None = None  # e.g. its commit
    base_name: str | None = None  # how the base image was named, recorded as an annotation
    artifact_type: str | None = None  # the manifest's artifactType (OCI 1.1): what kind of module this image is
    annotations: Mapping[str, str] = field(default_factory=dict)  # more manifest annotations
    architecture: str = "amd64"  # used only without a base image
    os: str = "linux"
    mtime: int = DEFAULT_MTIME


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """An image whose blobs are all in the blob store."""

    manifest: oci.Descriptor
    config: oci.Descriptor
    layers: tuple[oci.Descriptor, ...]
    diff_ids: tuple[str, ...]
    ref_name: str  # the name suggested for layouts (index `ref.name`)
    repo_tag: str  # the name suggested for docker archives
    model_digest: str

    @property
    def manifest_digest(self) -> str:
        return self.manifest.digest

    @property
    def config_digest(self) -> str:
        return self.config.digest

    @property
    def total_size(self) -> int:
        """Bytes of every blob of the image: manifest, config and (compressed) layers."""
        return self.manifest.size + self.config.size + sum(layer.size for layer in self.layers)

    @property
    def media_types(self) -> dict[str, str | list[str]]:
        return {
            "manifest": self.manifest.media_type,
            "config": self.config.media_type,
            "layers": [layer.media_type for layer in self.layers],
        }


class StoreBlobs:
    """The blob store as a BlobReader, so that built images can be read back like any other image."""

    def __init__(self, *, store: BlobStore) -> None:
        self.store = store

    def open_blob(self, descriptor: oci.Descriptor) -> oci.VerifiedReader:
        return oci.VerifiedReader(raw=self.store.open(descriptor.digest), descriptor=descriptor)


def model_files_from_entries(store: BlobStore, files: Sequence[FileEntry]) -> dict[str, Source]:
    """The `model_files` of a spec for a registered model version's files (whose blobs are in `store`)."""
    return {entry.path: LayerFile(source=store.path(entry.digest), mode=entry.mode & 0o777) for entry in files}


def build_model_image(store: BlobStore, spec: ModelImageSpec, *, base: BaseImage | None = None) -> BuiltImage:
    """Write the layers, config and manifest of `spec` (on top of `base`) into `store`."""
    name = check_name("model", spec.model_name)
    if isinstance(spec.model_version, bool) or not isinstance(spec.model_version, int) or spec.model_version < 1:
        raise InvalidInputError(f"invalid model version {spec.model_version!r}: use a positive integer")
    if not spec.model_files:
        raise InvalidInputError(f"model {name}:{spec.model_version} has no files to package")
    version_dir = f"{MODEL_REPOSITORY}/{name}/{spec.model_version}"
    model_paths = {check_relpath(path, what="model file path") for path in spec.model_files}
    clash = sorted(model_paths & {check_relpath(path, what="scoring file path") for path in spec.scoring_files})
    if clash:
        raise InvalidInputError(f"scoring files {clash} would replace model files of the same path; rename them")
    model_digest = spec.model_digest or _model_digest(spec.model_files)
    oci.check_digest(model_digest)
    created = _timestamp(spec.created or EPOCH)
    server_args = [
        "--model-repository",
        MODEL_REPOSITORY,
        "--host",
        "0.0.0.0",
        "--http-port",
        str(spec.http_port),
        "--grpc-port",
        str(spec.grpc_port),
        *spec.server_args,
    ]
    module = {
        "schemaVersion": 1,
        "model": {"name": name, "version": spec.model_version, "digest": model_digest},
        "modelRepository": MODEL_REPOSITORY,
        "server": {"command": SCORE_COMMAND, "arguments": server_args},
        "ports": {"http": spec.http_port, "grpc": spec.grpc_port},
    }

    layers: list[tuple[Layer, str]] = []
    model_layer = {f"{version_dir}/{path}": source for path, source in spec.model_files.items()}
    layers.append((build_layer(store, model_layer, mtime=spec.mtime), f"model files of {name}:{spec.model_version}"))
    code_layer: dict[str, Source] = {f"{version_dir}/{path}": source for path, source in spec.scoring_files.items()}
    if spec.model_config is not None:
        code_layer[f"{MODEL_REPOSITORY}/{name}/config.json"] = oci.canonical_json(dict(spec.model_config)) + b"\n"
    if code_layer:
        layers.append((build_layer(store, code_layer, mtime=spec.mtime), "scoring code and model configuration"))
    module_layer = {MODULE_CONFIG: oci.canonical_json(module) + b"\n"}
    layers.append((build_layer(store, module_layer, mtime=spec.mtime), "module configuration"))

    base_layers = _copy_base(store, base) if base is not None else []
    base_config: dict[str, Any] = dict(base.config) if base is not None else {}
    inner_base = base_config.get("config") or {}
    labels = dict(inner_base.get("Labels") or {})
    labels.update(spec.labels)
    labels.update(
        {LABEL_MODEL_NAME: name, LABEL_MODEL_VERSION: str(spec.model_version), LABEL_MODEL_DIGEST: model_digest}
    )
    env = _merge_env(inner_base.get("Env"), {"EDGEWISE_MODULE_CONFIG": MODULE_CONFIG, **spec.env}, base is None)
    ports = dict(inner_base.get("ExposedPorts") or {})
    ports.update({f"{spec.http_port}/tcp": {}, f"{spec.grpc_port}/tcp": {}})
    inner: dict[str, Any] = {
        key: value for key, value in inner_base.items() if key not in ("Cmd", "Entrypoint") and value is not None
    }
    # A new entrypoint drops the base's Cmd, as a Dockerfile ENTRYPOINT does: its arguments were for another program.
    inner.update({"Entrypoint": [SCORE_COMMAND, *server_args], "Env": env, "Labels": labels, "ExposedPorts": ports})
    inner.setdefault("WorkingDir", "/")
    history = list(base_config.get("history") or [])
    history += [{"created": created, "created_by": f"edgewise build: {what}"} for _, what in layers]
    config: dict[str, Any] = {
        "created": created,
        "architecture": base_config.get("architecture") or spec.architecture,
        "os": base_config.get("os") or spec.os,
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": [*(base.diff_ids if base else []), *(x.diff_id for x, _ in layers)]},
        "history": history,
    }
    for key in ("variant", "os.version", "os.features"):
        if key in base_config:
            config[key] = base_config[key]
    config_bytes = oci.canonical_json(config)
    config_digest, config_size = store.put_bytes(config_bytes)
    config_descriptor = oci.Descriptor(media_type=oci.CONFIG, digest=config_digest, size=config_size)

    annotations = {
        oci.CREATED: created,
        oci.TITLE: spec.title or name,
        oci.VERSION: str(spec.model_version),
    }
    optional = {
        oci.DESCRIPTION: spec.description,
        oci.SOURCE: spec.source,
        oci.REVISION: spec.revision,
        oci.BASE_NAME: spec.base_name if base is not None else None,
        oci.BASE_DIGEST: base.manifest_digest if base is not None else None,
    }
    annotations.update({key: value for key, value in optional.items() if value})
    annotations.update(spec.annotations)
    all_layers = (*base_layers, *(layer.descriptor for layer, _ in layers))
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        **({"artifactType": spec.artifact_type} if spec.artifact_type else {}),
        "config": config_descriptor.to_json(),
        "layers": [layer.to_json() for layer in all_layers],
        "annotations": annotations,
    }
    manifest_digest, manifest_size = store.put_bytes(oci.canonical_json(manifest))
    platform = {"architecture": str(config["architecture"]), "os": str(config["os"])}
    return BuiltImage(
        manifest=oci.Descriptor(media_type=oci.MANIFEST, digest=manifest_digest, size=manifest_size, platform=platform),
        config=config_descriptor,
        layers=all_layers,
        diff_ids=tuple(config["rootfs"]["diff_ids"]),
        ref_name=f"{name}-{spec.model_version}",
        repo_tag=f"edgewise/{name.lower()}:{spec.model_version}",
        model_digest=model_digest,
    )


def _copy_base(store: BlobStore, base: BaseImage) -> list[oci.Descriptor]:
    """Store the base's layers (verified on the way) and describe them with OCI media types."""
    if len(base.layers) != len(base.diff_ids):
        raise InvalidInputError(
            f"base image {base.manifest_digest} has {len(base.layers)} layers but {len(base.diff_ids)} diff_ids"
        )
    copied: list[oci.Descriptor] = []
    for layer in base.layers:
        if layer.media_type not in oci.LAYERS:
            raise InvalidInputError(
                f"base image layer {layer.digest} has media type {layer.media_type!r}; supported: {list(oci.LAYERS)}"
            )
        if not store.exists(layer.digest):
            with base.blobs.open_blob(layer) as reader:
                store.put_stream(_chunks(reader), expected_digest=layer.digest)
        media_type = oci.LAYER_GZIP if layer.media_type in oci.GZIP_LAYERS else oci.LAYER_TAR
        copied.append(oci.Descriptor(media_type=media_type, digest=layer.digest, size=layer.size))
    return copied


def _chunks(reader: shared_oci.VerifiedReader) -> Iterator[bytes]:
    while chunk := reader.read(1 << 20):
        yield chunk
    reader.read_to_end()


def _merge_env(base_env: object, overrides: Mapping[str, str], add_path: bool) -> list[str]:
    merged: dict[str, str] = {}
    if isinstance(base_env, list):
        for item in base_env:
            key, _, value = str(item).partition("=")
            merged[key] = value
    elif add_path:
        merged["PATH"] = DEFAULT_PATH
    for key in sorted(overrides):
        if not key or "=" in key:
            raise InvalidInputError(f"invalid environment variable name {key!r}")
        merged[key] = overrides[key]
    return [f"{key}={value}" for key, value in merged.items()]


def _model_digest(files: Mapping[str, Source]) -> str:
    digests = {check_relpath(path, what="model file path"): _file_digest(source) for path, source in files.items()}
    return _listing_digest(digests)


def model_digest_of(files: Sequence[FileEntry]) -> str:
    """A registered model version's digest as images record it: its file's, or its file listing's."""
    return _listing_digest({entry.path: entry.digest for entry in files})


def _listing_digest(digests: Mapping[str, str]) -> str:
    if len(digests) == 1:
        return next(iter(digests.values()))
    listing = [{"path": path, "digest": digest} for path, digest in sorted(digests.items())]
    return oci.sha256_digest(oci.canonical_json(listing))


def _file_digest(source: Source) -> str:
    content = source.source if isinstance(source, LayerFile) else source
    return oci.sha256_digest(content) if isinstance(content, bytes) else oci.file_digest(Path(content))


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise InvalidInputError("the image's creation time needs a time zone (e.g. datetime.now(UTC))")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

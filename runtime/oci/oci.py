"""The OCI vocabulary shared by the builder, the writers and the safe readers: media types, descriptors, digests.

Standard library and `errors` only, so that the device can read images with the same definitions.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgewise.runtime.oci.errors import InvalidImageError

OCI_LAYOUT_VERSION = "1.0.0"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

IMAGE_MANIFESTS = (MANIFEST, DOCKER_MANIFEST)
IMAGE_CONFIGS = (CONFIG, DOCKER_CONFIG)
GZIP_LAYERS = (LAYER_GZIP, DOCKER_LAYER_GZIP)
LAYERS = (LAYER_TAR, *GZIP_LAYERS)

REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
TITLE = "org.opencontainers.image.title"
VERSION = "org.opencontainers.image.version"
SOURCE = "org.opencontainers.image.source"
REVISION = "org.opencontainers.image.revision"
DESCRIPTION = "org.opencontainers.image.description"
BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"

# Manifests and configs are small; a bigger one is hostile or broken, and is not read into memory.
MAX_JSON_BYTES = 4 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_digest(digest: object) -> str:
    """Return `digest` if it is `sha256:<64 lowercase hex>`, else raise InvalidImageError."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidImageError(f"invalid digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits")
    return digest


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces: the same document always has the same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, kw_only=True)
class Descriptor:
    """A pointer to a blob by media type, digest and size, as in manifests and indexes."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        if self.platform:
            data["platform"] = dict(self.platform)
        return data

    @classmethod
    def from_json(cls, data: object, *, where: str) -> Descriptor:
        """Parse and check a descriptor; `where` names it in errors (e.g. 'layer 2 of the manifest')."""
        if not isinstance(data, Mapping):
            raise InvalidImageError(f"{where} is not a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidImageError(f"{where} has no mediaType")
        check_digest(digest)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidImageError(f"{where} has no valid size (got {size!r})")
        annotations = data.get("annotations") or {}
        platform = data.get("platform")
        if not isinstance(annotations, Mapping) or not all(isinstance(v, str) for v in annotations.values()):
            raise InvalidImageError(f"{where} has annotations that are not strings")
        return cls(
            media_type=media_type,
            digest=str(digest),
            size=size,
            annotations={str(k): str(v) for k, v in annotations.items()},
            platform={str(k): str(v) for k, v in platform.items()} if isinstance(platform, Mapping) else None,
        )


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class BlobReader(Protocol):
    """Where an image's blobs come from: a layout directory, an archive, a blob store, later a registry.

    `open_blob` answers a VerifiedReader, which raises InvalidImageError when the bytes do not match the
    descriptor's digest and size, so a consumer never accepts a tampered blob without noticing.
    """

    def open_blob(self, descriptor: Descriptor) -> VerifiedReader: ...


@dataclass(frozen=True, kw_only=True)
class OciImage:
    """One image read from somewhere: its manifest and config, parsed and verified, and where its layers are."""

    manifest_digest: str
    manifest_media_type: str
    manifest: dict[str, Any]
    config_descriptor: Descriptor
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]
    blobs: BlobReader

    @property
    def diff_ids(self) -> list[str]:
        rootfs = self.config.get("rootfs") or {}
        return [str(d) for d in rootfs.get("diff_ids") or []]


class VerifiedReader:
    """A read-only stream over a blob that checks its size and digest as it goes, and at the end."""

    def __init__(self, *, raw: Readable, descriptor: Descriptor, close_raw: bool = True) -> None:
        self._raw = raw
        self._closer = getattr(raw, "close", None)
        self._descriptor = descriptor
        self._hasher = hashlib.sha256()
        self._seen = 0
        self._checked = False
        self._close_raw = close_raw

    @property
    def digest(self) -> str:
        return self._descriptor.digest

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self._read_chunk(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        return self._read_chunk(size)

    def _read_chunk(self, size: int) -> bytes:
        # Ask for one byte more than the descriptor allows, so an overlong blob is noticed.
        remaining = self._descriptor.size - self._seen
        chunk = self._raw.read(min(size, remaining + 1)) if size > 0 else b""
        self._hasher.update(chunk)
        self._seen += len(chunk)
        if self._seen > self._descriptor.size:
            raise InvalidImageError(
                f"blob {self._descriptor.digest} is longer than the {self._descriptor.size} bytes its descriptor "
                "says: the image is corrupt or was tampered with"
            )
        if size > 0 and (not chunk or self._seen == self._descriptor.size):
            self._finish()
        return chunk

    def _finish(self) -> None:
        if self._checked:
            return
        if self._seen == self._descriptor.size and self._raw.read(1):
            self._seen += 1
            raise InvalidImageError(
                f"blob {self._descriptor.digest} is longer than the {self._descriptor.size} bytes its descriptor "
                "says: the image is corrupt or was tampered with"
            )
        if self._seen != self._descriptor.size:
            raise InvalidImageError(
                f"blob {self._descriptor.digest} has {self._seen} bytes, not the {self._descriptor.size} its "
                "descriptor says: the image is corrupt or truncated"
            )
        actual = "sha256:" + self._hasher.hexdigest()
        if actual != self._descriptor.digest:
            raise InvalidImageError(
                f"blob {self._descriptor.digest} hashes to {actual}: the image is corrupt or was tampered with"
            )
        self._checked = True

    def read_to_end(self) -> None:
        """Consume and verify whatever is left (a consumer may stop reading early, e.g. at a tar's end)."""
        while self.read(1 << 20):
            pass
        self._finish()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._close_raw and self._closer is not None:
            self._closer()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_json_blob(blobs: BlobReader, descriptor: Descriptor, *, what: str) -> dict[str, Any]:
    """Read, verify and parse a small JSON blob (manifest, config, index)."""
    if descriptor.size > MAX_JSON_BYTES:
        raise InvalidImageError(f"{what} {descriptor.digest} has {descriptor.size} bytes, over {MAX_JSON_BYTES}")
    with blobs.open_blob(descriptor) as reader:
        data = reader.read()
        reader.read_to_end()
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidImageError(f"{what} {descriptor.digest} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidImageError(f"{what} {descriptor.digest} is not a JSON object")
    return value

"""The OCI vocabulary of `edgewise.runtime.oci.oci` (shared with the device), raising the workspace's errors.

The device code raises `edgewise.runtime.oci.errors`; here every function that can fail turns them into the
workspace's own classes (`workspace_errors`), so the service, the SDK and the HTTP API keep one error tree:
an invalid image is `InvalidInputError` (400), an unsafe entry `UnsafePathError` (400), a missing blob
`NotFoundError` (404).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar

from edgewise.cloud.errors import InvalidInputError, NotFoundError, UnsafePathError, WorkspaceError
from edgewise.runtime.oci import oci as _oci
from edgewise.runtime.oci.errors import ImageNotFoundError, OciError, UnsafeImagePathError
from edgewise.runtime.oci.oci import (
    BASE_DIGEST,
    BASE_NAME,
    CONFIG,
    CREATED,
    DESCRIPTION,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    GZIP_LAYERS,
    IMAGE_CONFIGS,
    IMAGE_MANIFESTS,
    INDEX,
    LAYER_GZIP,
    LAYER_TAR,
    LAYER_ZSTD,
    LAYERS,
    MANIFEST,
    MAX_JSON_BYTES,
    OCI_LAYOUT_VERSION,
    REF_NAME,
    REVISION,
    SOURCE,
    TITLE,
    VERSION,
    Descriptor,
    OciImage,
    Readable,
    canonical_json,
    file_digest,
    sha256_digest,
)

__all__ = [
    "BASE_DIGEST",
    "BASE_NAME",
    "CONFIG",
    "CREATED",
    "DESCRIPTION",
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "GZIP_LAYERS",
    "IMAGE_CONFIGS",
    "IMAGE_MANIFESTS",
    "INDEX",
    "LAYERS",
    "LAYER_GZIP",
    "LAYER_TAR",
    "LAYER_ZSTD",
    "MANIFEST",
    "MAX_JSON_BYTES",
    "OCI_LAYOUT_VERSION",
    "REF_NAME",
    "REVISION",
    "SOURCE",
    "TITLE",
    "VERSION",
    "BlobReader",
    "Descriptor",
    "OciImage",
    "Readable",
    "VerifiedReader",
    "canonical_json",
    "check_digest",
    "file_digest",
    "read_json_blob",
    "sha256_digest",
    "translated",
    "workspace_error",
    "workspace_errors",
]

P = ParamSpec("P")
R = TypeVar("R")


def workspace_error(error: OciError) -> WorkspaceError:
    """The workspace error carrying the same message as an OCI reader's error."""
    if isinstance(error, UnsafeImagePathError):
        return UnsafePathError(str(error))
    if isinstance(error, ImageNotFoundError):
        return NotFoundError(str(error))
    return InvalidInputError(str(error))


@contextlib.contextmanager
def workspace_errors() -> Iterator[None]:
    """Raise the workspace's error class for any OCI reader error raised inside."""
    try:
        yield
    except OciError as error:
        raise workspace_error(error) from error


def translated(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, raising the workspace's errors instead of the OCI reader's."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with workspace_errors():
            return function(*args, **kwargs)

    return wrapper


check_digest = translated(_oci.check_digest)
read_json_blob = translated(_oci.read_json_blob)


class BlobReader(Protocol):
    """Where an image's blobs come from; `open_blob` verifies, raising `InvalidInputError` on a mismatch."""

    def open_blob(self, descriptor: Descriptor) -> VerifiedReader: ...


class VerifiedReader(_oci.VerifiedReader):
    """The device's verifying stream, raising `InvalidInputError` when a blob does not match its descriptor."""

    def read(self, size: int = -1) -> bytes:
        with workspace_errors():
            return super().read(size)

    def read_to_end(self) -> None:
        with workspace_errors():
            super().read_to_end()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

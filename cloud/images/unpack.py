"""Read and unpack untrusted images: `edgewise.runtime.oci.unpack` (shared with the device), raising the
workspace's errors (`InvalidInputError`, `UnsafePathError`, `NotFoundError`) instead of the OCI reader's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from edgewise.cloud.images import oci
from edgewise.cloud.images.oci import translated, workspace_errors
from edgewise.runtime.oci import unpack as _unpack

__all__ = ["LayoutDir", "OciArchive", "load_image", "open_image", "select_manifest", "unpack_image"]


class LayoutDir(_unpack.LayoutDir):
    """An OCI image layout directory as a BlobReader; blobs that are links or not files are refused."""

    def __init__(self, *, path: Path) -> None:
        with workspace_errors():
            super().__init__(path=path)

    def open_blob(self, descriptor: oci.Descriptor) -> oci.VerifiedReader:
        with workspace_errors():
            path = self._file("blobs/sha256/" + oci.check_digest(descriptor.digest).removeprefix("sha256:"))
            return oci.VerifiedReader(raw=path.open("rb"), descriptor=descriptor)

    def read_file(self, relative: str) -> bytes:
        with workspace_errors():
            return super().read_file(relative)

    def image(self, ref_name: str | None = None) -> oci.OciImage:
        with workspace_errors():
            return super().image(ref_name)


class OciArchive(_unpack.OciArchive):
    """An OCI archive (a tar of a layout), read in place; every entry is checked when it is opened."""

    def __init__(self, *, path: Path) -> None:
        with workspace_errors():
            super().__init__(path=path)

    def __enter__(self) -> OciArchive:
        return self

    def open_blob(self, descriptor: oci.Descriptor) -> oci.VerifiedReader:
        with workspace_errors():
            name = "blobs/sha256/" + oci.check_digest(descriptor.digest).removeprefix("sha256:")
            return oci.VerifiedReader(raw=self._open(name), descriptor=descriptor)

    def image(self, ref_name: str | None = None) -> oci.OciImage:
        with workspace_errors():
            return super().image(ref_name)


select_manifest = translated(_unpack.select_manifest)
load_image = translated(_unpack.load_image)
unpack_image = translated(_unpack.unpack_image)


@contextlib.contextmanager
def open_image(path: Path, ref_name: str | None = None) -> Iterator[oci.OciImage]:
    """The runtime's `open_image`, raising the workspace's errors."""
    with workspace_errors(), _unpack.open_image(path, ref_name) as image:
        yield image

"""Reproducible tar layers: the same files always give byte-identical blobs, so an unchanged layer is stored once.

Entries are sorted, owned by 0:0 with empty owner names, stamped with one fixed mtime, and written in GNU
format (long names without pax headers, hence no pax timestamps). Parent folders are written as entries too.
Gzip runs with mtime 0, no file name and a fixed level.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.images import oci
from edgewise.cloud.names import check_relpath
from edgewise.cloud.store.blobs import BlobStore

DEFAULT_MTIME = 0
GZIP_LEVEL = 6
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class LayerFile:
    """A file to put in a layer: its content (bytes, or a file to copy) and its mode."""

    source: bytes | Path
    mode: int = 0o644


Source = bytes | Path | LayerFile


@dataclass(frozen=True, kw_only=True)
class Layer:
    """A layer blob: its descriptor (compressed digest and size) and its diff_id (digest of the plain tar)."""

    descriptor: oci.Descriptor
    diff_id: str

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size


class _HashingWriter:
    """Counts and hashes what passes through on its way to `target`."""

    def __init__(self, target: BinaryIO | None) -> None:
        self.target = target
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        if self.target is not None:
            self.target.write(data)
        return len(data)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def _normalise(files: Mapping[str, Source]) -> dict[str, LayerFile]:
    entries: dict[str, LayerFile] = {}
    for raw_path, source in files.items():
        path = check_relpath(raw_path.lstrip("/"), what="image path")
        if path in entries:
            raise InvalidInputError(f"image path {raw_path!r} is given twice")
        entry = source if isinstance(source, LayerFile) else LayerFile(source=source)
        if not 0 <= entry.mode <= 0o777:
            raise InvalidInputError(f"mode {entry.mode:o} of {raw_path!r} is not a plain permission mode (0-0777)")
        if isinstance(entry.source, Path) and not entry.source.is_file():
            raise InvalidInputError(f"{entry.source} (for image path {raw_path!r}) is not a readable file")
        entries[path] = entry
    for path in entries:
        for parent in PurePosixPath(path).parents:
            if str(parent) != "." and str(parent) in entries:
                raise InvalidInputError(f"image path {str(parent)!r} is both a file and a folder")
    return entries


def write_tar(out: BinaryIO, files: Mapping[str, Source], *, mtime: int = DEFAULT_MTIME) -> None:
    """Write a reproducible tar of `files` (image path → content) with their parent folders."""
    entries = _normalise(files)
    folders = {str(p) for path in entries for p in PurePosixPath(path).parents if str(p) != "."}
    names = sorted([(name, True) for name in folders] + [(name, False) for name in entries])
    # GNU format: long names need no pax headers; the stream is written once, never seeked.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for name, is_folder in names:
            info = tarfile.TarInfo(name + "/" if is_folder else name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            if is_folder:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            entry = entries[name]
            info.mode = entry.mode
            if isinstance(entry.source, bytes):
                info.size = len(entry.source)
                tar.addfile(info, io.BytesIO(entry.source))
            else:
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as content:
                    tar.addfile(info, content)


def write_layer_to(out: BinaryIO, files: Mapping[str, Source], *, mtime: int = DEFAULT_MTIME) -> tuple[str, str, int]:
    """Write a gzip-compressed layer to `out`; answer (digest, diff_id, size)."""
    compressed = _HashingWriter(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL) as zipped:
        plain = _HashingWriter(zipped)  # type: ignore[arg-type]
        write_tar(plain, files, mtime=mtime)  # type: ignore[arg-type]
    return compressed.digest, plain.digest, compressed.size


def build_layer(
    store: BlobStore,
    files: Mapping[str, Source],
    *,
    mtime: int = DEFAULT_MTIME,
    annotations: Mapping[str, str] | None = None,
) -> Layer:
    """Write a layer of `files` into the blob store and describe it."""
    with tempfile.TemporaryFile(dir=store.root) as spool:
        digest, diff_id, size = write_layer_to(spool, files, mtime=mtime)
        spool.seek(0)
        stored, stored_size = store.put_stream(iter(lambda: spool.read(_COPY_CHUNK), b""), expected_digest=digest)
    assert (stored, stored_size) == (digest, size)
    return Layer(
        descriptor=oci.Descriptor(
            media_type=oci.LAYER_GZIP, digest=digest, size=size, annotations=dict(annotations or {})
        ),
        diff_id=diff_id,
    )

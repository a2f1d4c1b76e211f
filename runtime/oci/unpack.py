"""Read and unpack untrusted images: OCI layout directories, OCI archives and their layers.

Nothing here trusts its input. Every blob is checked against its digest and size (and every layer against its
diff_id); manifests must have a known media type; archive entries and layer entries that could escape their
folder (`..`, absolute names, links pointing out, writes through links) or that are device files are refused
with UnsafeImagePathError naming the entry. Unpacking happens in a scratch folder beside the destination that
is renamed into place only when every layer is in, so a refused image leaves nothing behind (extract.py
applies the layers).

Only the standard library, `errors` and `oci` are used, so the device can run the same checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from edgewise.runtime.oci import oci
from edgewise.runtime.oci.errors import ImageNotFoundError, InvalidImageError, UnsafeImagePathError
from edgewise.runtime.oci.extract import apply_layer, check_link_chains, entry_kind, entry_parts


class LayoutDir:
    """An OCI image layout directory as a BlobReader; blobs that are links or not files are refused."""

    def __init__(self, *, path: Path) -> None:
        self.path = path
        if not (path / "oci-layout").is_file():
            raise InvalidImageError(f"{path} is not an OCI image layout: it has no oci-layout file")

    def _file(self, relative: str) -> Path:
        current = self.path
        for part in entry_parts(relative, where=str(self.path)):
            current = current / part
            if current.is_symlink():
                raise UnsafeImagePathError(f"{self.path}: {relative!r} goes through the symbolic link {current.name!r}")
        if not current.is_file():
            raise ImageNotFoundError(f"{self.path} has no {relative}: the layout is incomplete")
        return current

    def open_blob(self, descriptor: oci.Descriptor) -> oci.VerifiedReader:
        path = self._file("blobs/sha256/" + oci.check_digest(descriptor.digest).removeprefix("sha256:"))
        return oci.VerifiedReader(raw=path.open("rb"), descriptor=descriptor)

    def read_file(self, relative: str) -> bytes:
        path = self._file(relative)
        if path.stat().st_size > oci.MAX_JSON_BYTES:
            raise InvalidImageError(f"{self.path}/{relative} is larger than {oci.MAX_JSON_BYTES} bytes")
        return path.read_bytes()

    def image(self, ref_name: str | None = None) -> oci.OciImage:
        """The image named `ref_name` in index.json (or the only one there), parsed and verified."""
        return load_image(self, select_manifest(self.read_file("index.json"), ref_name, where=str(self.path)))


class OciArchive:
    """An OCI archive (a tar of a layout), read in place; every entry is checked when it is opened."""

    def __init__(self, *, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 - open for the archive's lifetime
        except (OSError, tarfile.TarError) as error:
            raise InvalidImageError(f"{path} is not a readable tar archive: {error}") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self._tar:
                parts = entry_parts(member.name, where=str(path))
                if not (member.isfile() or member.isdir()):
                    raise UnsafeImagePathError(
                        f"{path}: entry {member.name!r} is a {entry_kind(member)}; archives hold only files, folders"
                    )
                if parts and member.isfile():
                    key = "/".join(parts)
                    if key in self._members:
                        raise InvalidImageError(f"{path}: entry {member.name!r} appears twice")
                    self._members[key] = member
        except BaseException:
            self._tar.close()
            raise

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> OciArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, name: str) -> IO[bytes]:
        member = self._members.get(name)
        stream = self._tar.extractfile(member) if member is not None else None
        if stream is None:
            raise ImageNotFoundError(f"{self.path} has no {name}: the archive is incomplete")
        return stream

    def open_blob(self, descriptor: oci.Descriptor) -> oci.VerifiedReader:
        name = "blobs/sha256/" + oci.check_digest(descriptor.digest).removeprefix("sha256:")
        return oci.VerifiedReader(raw=self._open(name), descriptor=descriptor)

    def image(self, ref_name: str | None = None) -> oci.OciImage:
        member = self._members.get("index.json")
        if member is not None and member.size > oci.MAX_JSON_BYTES:
            raise InvalidImageError(f"{self.path}: index.json is larger than {oci.MAX_JSON_BYTES} bytes")
        with self._open("index.json") as stream:
            index = stream.read()
        return load_image(self, select_manifest(index, ref_name, where=str(self.path)))


def select_manifest(index_bytes: bytes, ref_name: str | None, *, where: str) -> oci.Descriptor:
    """The manifest descriptor of index.json named `ref_name`; without a name, the only one there."""
    try:
        index = json.loads(index_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidImageError(f"{where}: index.json is not valid JSON: {error}") from None
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise InvalidImageError(f"{where}: index.json has no 'manifests' list")
    descriptors = [oci.Descriptor.from_json(e, where=f"{where}: index.json entry {i}") for i, e in enumerate(entries)]
    names = [d.annotations.get(oci.REF_NAME) for d in descriptors]
    if ref_name is None:
        if len(descriptors) != 1:
            raise InvalidImageError(f"{where} holds {len(descriptors)} images {names}; say which one by its ref name")
        return descriptors[0]
    for descriptor, name in zip(descriptors, names, strict=True):
        if name == ref_name:
            return descriptor
    raise ImageNotFoundError(f"{where} has no image named {ref_name!r}; it has {sorted(n for n in names if n)}")


def load_image(blobs: oci.BlobReader, descriptor: oci.Descriptor) -> oci.OciImage:
    """Read and verify the manifest `descriptor` points at and its config; check every media type."""
    if descriptor.media_type in (oci.INDEX, oci.DOCKER_MANIFEST_LIST):
        raise InvalidImageError(
            f"manifest {descriptor.digest} is a multi-platform index ({descriptor.media_type}); copy one platform "
            "out of it first (e.g. skopeo copy --override-arch)"
        )
    if descriptor.media_type not in oci.IMAGE_MANIFESTS:
        raise InvalidImageError(
            f"manifest {descriptor.digest} has the unknown media type {descriptor.media_type!r}; "
            f"supported: {list(oci.IMAGE_MANIFESTS)}"
        )
    manifest = oci.read_json_blob(blobs, descriptor, what="manifest")
    declared = manifest.get("mediaType", descriptor.media_type)
    if declared != descriptor.media_type:
        raise InvalidImageError(
            f"manifest {descriptor.digest} says it is {declared!r} but is listed as {descriptor.media_type!r}"
        )
    if manifest.get("schemaVersion") != 2:
        version = manifest.get("schemaVersion")
        raise InvalidImageError(f"manifest {descriptor.digest} has schemaVersion {version!r}, not 2")
    config_descriptor = oci.Descriptor.from_json(manifest.get("config"), where=f"the config of {descriptor.digest}")
    if config_descriptor.media_type not in oci.IMAGE_CONFIGS:
        raise InvalidImageError(
            f"manifest {descriptor.digest} has a config of unknown media type {config_descriptor.media_type!r}"
        )
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list):
        raise InvalidImageError(f"manifest {descriptor.digest} has no 'layers' list")
    layers = tuple(
        oci.Descriptor.from_json(layer, where=f"layer {i} of {descriptor.digest}") for i, layer in enumerate(raw_layers)
    )
    for layer in layers:
        if layer.media_type not in oci.LAYERS:
            raise InvalidImageError(
                f"layer {layer.digest} has the unsupported media type {layer.media_type!r}; "
                f"supported: {list(oci.LAYERS)}"
            )
    config = oci.read_json_blob(blobs, config_descriptor, what="image config")
    image = oci.OciImage(
        manifest_digest=descriptor.digest,
        manifest_media_type=descriptor.media_type,
        manifest=manifest,
        config_descriptor=config_descriptor,
        config=config,
        layers=layers,
        blobs=blobs,
    )
    if len(image.diff_ids) != len(layers):
        raise InvalidImageError(
            f"image {descriptor.digest} has {len(layers)} layers but its config lists {len(image.diff_ids)} diff_ids"
        )
    for diff_id in image.diff_ids:
        oci.check_digest(diff_id)
    return image


def unpack_image(image: oci.OciImage, destination: Path, *, rootfs_symlinks: bool = False) -> Path:
    """Unpack every layer of `image` into the new folder `destination`, atomically: all of it or nothing."""
    if destination.exists() or destination.is_symlink():
        raise InvalidImageError(f"{destination} exists already; unpack into a new folder")
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.unpack-"))
    try:
        for layer, diff_id in zip(image.layers, image.diff_ids, strict=True):
            with image.blobs.open_blob(layer) as stream:
                apply_layer(
                    stream, media_type=layer.media_type, diff_id=diff_id, root=scratch, rootfs_symlinks=rootfs_symlinks
                )
        check_link_chains(scratch, rootfs=rootfs_symlinks)
        os.chmod(scratch, 0o755)
        os.rename(scratch, destination)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return destination


@contextlib.contextmanager
def open_image(path: Path, ref_name: str | None = None) -> Iterator[oci.OciImage]:
    """Yield the image at `path` (a layout directory or an OCI archive); an archive stays open meanwhile."""
    if path.is_dir():
        yield LayoutDir(path=path).image(ref_name)
        return
    with OciArchive(path=path) as archive:
        yield archive.image(ref_name)

"""Export a built image as a single file: an OCI archive (a tar of a layout) or a docker-archive (`docker save`).

Both are reproducible tars (see layers.py), written aside and renamed into place. A docker-archive holds the
uncompressed layer tars that `docker load` expects, named by their diff_ids, so it is larger than the blobs.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.images import oci
from edgewise.cloud.images.builder import BuiltImage
from edgewise.cloud.images.layers import Source, write_tar
from edgewise.cloud.images.layout import layout_files
from edgewise.cloud.store.blobs import BlobStore


def write_oci_archive(store: BlobStore, image: BuiltImage, path: Path, *, ref_name: str | None = None) -> Path:
    """Write `image` as an OCI archive at `path` (what `skopeo ... oci-archive:PATH` reads)."""
    files: dict[str, Source] = dict(layout_files(store, image, ref_name=ref_name))
    _write_tar_atomic(path, files)
    return path


def write_docker_archive(
    store: BlobStore, image: BuiltImage, path: Path, *, repo_tags: Sequence[str] | None = None
) -> Path:
    """Write `image` in the `docker save` format at `path` (what `docker load` and `docker-archive:` read)."""
    tags = list(repo_tags) if repo_tags is not None else [image.repo_tag]
    for tag in tags:
        if not tag or tag != tag.strip() or tag.split(":")[0] != tag.split(":")[0].lower():
            raise InvalidInputError(f"invalid docker tag {tag!r}: use a lowercase repository name, e.g. 'models/x:1'")
    if len(image.layers) != len(image.diff_ids):
        raise InvalidInputError(
            f"image {image.manifest_digest} has {len(image.layers)} layers but {len(image.diff_ids)} diff_ids"
        )
    config_name = image.config_digest.removeprefix("sha256:") + ".json"
    files: dict[str, Source] = {config_name: store.path(image.config_digest)}
    layer_names: list[str] = []
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        for layer, diff_id in zip(image.layers, image.diff_ids, strict=True):
            name = diff_id.removeprefix("sha256:") + "/layer.tar"
            layer_names.append(name)
            if name in files:
                continue
            plain = Path(scratch) / (diff_id.removeprefix("sha256:") + ".tar")
            _decompress(store.path(layer.digest), layer.media_type, plain, diff_id)
            files[name] = plain
        manifest = [{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]
        files["manifest.json"] = oci.canonical_json(manifest)
        _write_tar_atomic(path, files)
    return path


def _decompress(blob: Path, media_type: str, target: Path, diff_id: str) -> None:
    """Write the plain tar of a layer blob to `target`, checking it against its diff_id."""
    if media_type == oci.LAYER_TAR:
        shutil.copyfile(blob, target)
    elif media_type in oci.GZIP_LAYERS:
        with gzip.open(blob, "rb") as source, target.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    else:
        raise InvalidInputError(f"cannot export a layer of media type {media_type!r} to a docker-archive")
    if oci.file_digest(target) != diff_id:
        raise InvalidInputError(f"layer {blob.name} does not match its diff_id {diff_id}: the image is corrupt")


def _write_tar_atomic(path: Path, files: dict[str, Source]) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            write_tar(out, files)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise

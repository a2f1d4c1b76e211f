"""Export a built image as an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`).

A layout may hold many images; writing one under a ref name already there replaces that entry only. Blobs
and `index.json` appear atomically (written aside, then renamed), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.images import oci
from edgewise.cloud.images.builder import BuiltImage
from edgewise.cloud.store.blobs import BlobStore

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"


def image_blobs(image: BuiltImage) -> list[oci.Descriptor]:
    """Every blob of the image, each once: manifest, config, then layers."""
    seen: set[str] = set()
    result: list[oci.Descriptor] = []
    for descriptor in (image.manifest, image.config, *image.layers):
        if descriptor.digest not in seen:
            seen.add(descriptor.digest)
            result.append(descriptor)
    return result


def index_entry(image: BuiltImage, ref_name: str) -> dict[str, Any]:
    """The index.json entry naming `image` as `ref_name`."""
    entry = image.manifest.to_json()
    entry["annotations"] = {oci.REF_NAME: check_ref_name(ref_name)}
    return entry


def layout_files(store: BlobStore, image: BuiltImage, *, ref_name: str | None = None) -> dict[str, bytes | Path]:
    """The files of a layout holding only `image`: what an OCI archive contains."""
    index = {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": [index_entry(image, ref_name or image.ref_name)]}
    files: dict[str, bytes | Path] = {
        OCI_LAYOUT_FILE: oci.canonical_json({"imageLayoutVersion": oci.OCI_LAYOUT_VERSION}),
        INDEX_FILE: oci.canonical_json(index),
    }
    for descriptor in image_blobs(image):
        files[blob_path(descriptor.digest)] = store.path(descriptor.digest)
    return files


def blob_path(digest: str) -> str:
    return "blobs/sha256/" + oci.check_digest(digest).removeprefix("sha256:")


def check_ref_name(ref_name: str) -> str:
    """Ref names follow the OCI layout grammar: alphanumeric components joined by - . _ : @ / +."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:@/+")
    if not ref_name or not set(ref_name) <= allowed or not ref_name[0].isalnum() or not ref_name[-1].isalnum():
        raise InvalidInputError(
            f"invalid image ref name {ref_name!r}: use letters and digits joined by '-', '.', '_', ':', '@', '/', '+'"
        )
    return ref_name


def write_layout(store: BlobStore, image: BuiltImage, directory: Path, *, ref_name: str | None = None) -> Path:
    """Add `image` to the OCI layout at `directory` (created if missing) under `ref_name`."""
    name = check_ref_name(ref_name or image.ref_name)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / OCI_LAYOUT_FILE
    if marker.exists():
        try:
            version = json.loads(marker.read_text()).get("imageLayoutVersion")
        except (OSError, ValueError, AttributeError):
            version = None
        if version != oci.OCI_LAYOUT_VERSION:
            raise InvalidInputError(f"{directory} holds an OCI layout of unsupported version {version!r}")
    else:
        _write_atomic(marker, oci.canonical_json({"imageLayoutVersion": oci.OCI_LAYOUT_VERSION}))
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for descriptor in image_blobs(image):
        target = directory / blob_path(descriptor.digest)
        if not target.exists():
            _copy_atomic(store.path(descriptor.digest), target)
    index_file = directory / INDEX_FILE
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": []}
    if index_file.exists():
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError) as error:
            raise InvalidInputError(f"{index_file} is not valid JSON ({error}); repair or remove it") from None
        index.setdefault("mediaType", oci.INDEX)
    manifests = [
        entry
        for entry in index.get("manifests") or []
        if not (isinstance(entry, dict) and (entry.get("annotations") or {}).get(oci.REF_NAME) == name)
    ]
    manifests.append(index_entry(image, name))
    index["manifests"] = manifests
    _write_atomic(index_file, json.dumps(index, indent=2).encode() + b"\n")
    return directory


def _write_atomic(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _copy_atomic(source: Path, target: Path) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise

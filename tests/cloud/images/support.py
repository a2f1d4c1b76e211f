"""Hand-made images for the tests: arbitrary layer tars (even hostile ones) wrapped in valid manifests."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from edgewise.cloud.images import BuiltImage, Descriptor, ModelImageSpec, oci
from edgewise.cloud.store.blobs import BlobStore


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (CI installs it)")
    return path


def tar_bytes(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        add(tar)
    return buffer.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    tar.addfile(info)


def raw_image(
    store: BlobStore,
    layer_tars: list[bytes],
    *,
    config: dict[str, Any] | None = None,
    ref_name: str = "base",
) -> BuiltImage:
    """An image of the given plain layer tars (gzipped here), with a config that may carry Env, Cmd, ..."""
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    for plain in layer_tars:
        compressed = gzip.compress(plain, mtime=0)
        digest, size = store.put_bytes(compressed)
        layers.append(Descriptor(media_type=oci.LAYER_GZIP, digest=digest, size=size))
        diff_ids.append(oci.sha256_digest(plain))
    image_config: dict[str, Any] = {
        "architecture": "arm64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layer_tars))],
    }
    image_config.update(config or {})
    config_digest, config_size = store.put_bytes(oci.canonical_json(image_config))
    config_descriptor = Descriptor(media_type=oci.CONFIG, digest=config_digest, size=config_size)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    manifest_digest, manifest_size = store.put_bytes(oci.canonical_json(manifest))
    return BuiltImage(
        manifest=Descriptor(media_type=oci.MANIFEST, digest=manifest_digest, size=manifest_size),
        config=config_descriptor,
        layers=tuple(layers),
        diff_ids=tuple(diff_ids),
        ref_name=ref_name,
        repo_tag=f"test/{ref_name}:latest",
        model_digest=manifest_digest,
    )


def tree(root: Path) -> list[str]:
    """Every path under `root`, relative and sorted (links not followed)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def make_spec(model_dir: Path, *, score: str = "def run(x):\n    return x\n", **changes: object) -> ModelImageSpec:
    values: dict[str, object] = {
        "model_name": "iris",
        "model_version": 3,
        "model_files": {"model.onnx": model_dir / "model.onnx", "labels.txt": model_dir / "labels.txt"},
        "scoring_files": {"score.py": score.encode()},
        "model_config": {"backend": "script", "max_batch_size": 8},
        "source": "https://git.example/iris.git",
        "revision": "0123abcd",
    }
    values.update(changes)
    return ModelImageSpec(**values)  # type: ignore[arg-type]

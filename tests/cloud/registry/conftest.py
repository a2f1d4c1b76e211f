"""Images built once per module into a blob store, served by our router; external registries started on demand."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from edgewise.cloud.images import BuiltImage, ModelImageSpec, build_model_image
from edgewise.cloud.store.blobs import BlobStore

from tests.cloud.registry.support import DictResolver, DockerRegistry, RouterServer


@dataclass
class Served:
    store: BlobStore
    server: RouterServer
    resolver: DictResolver
    v1: BuiltImage
    v2: BuiltImage
    other: BuiltImage
    stray_digest: str  # a blob in the store that belongs to no image


def build(store: BlobStore, name: str, version: int, payload: bytes) -> BuiltImage:
    spec = ModelImageSpec(
        model_name=name,
        model_version=version,
        model_files={"model.onnx": payload, "labels.txt": b"cat\ndog\n"},
        scoring_files={"score.py": b"def run(x):\n    return x\n"},
        model_config={"backend": "script"},
    )
    return build_model_image(store, spec)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = BlobStore(root=tmp_path_factory.mktemp("served") / "blobs")
    v1 = build(store, "iris", 1, random.Random(7).randbytes(300_000))  # incompressible: a layer of 300 kB
    v2 = build(store, "iris", 2, b"\x08\x07second-model" * 100)
    other = build(store, "resnet", 1, b"\x08\x07resnet" * 100)
    stray_digest, _ = store.put_bytes(b"a snapshot file nobody may pull")
    resolver = DictResolver(
        images={
            "iris": {"1": v1.manifest_digest, "2": v2.manifest_digest, "latest": v2.manifest_digest},
            "team/vision/resnet": {"1": other.manifest_digest, "latest": other.manifest_digest},
        }
    )
    server = RouterServer(resolver=resolver, blobs=store).start()
    yield Served(store=store, server=server, resolver=resolver, v1=v1, v2=v2, other=other, stray_digest=stray_digest)
    server.stop()


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    server = DockerRegistry(root=tmp_path / "own-registry", auth=False).start()
    yield server
    server.stop()

"""Registries for the image store tests: CNCF Distribution (docker-registry) and the small hand-made server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from edgewise.cloud.store.blobs import BlobStore

from tests.cloud.registry.support import DockerRegistry
from tests.runtime.agent.images.support import TinyRegistry


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    """CNCF Distribution on 127.0.0.1 without auth, for a test module."""
    server = DockerRegistry(root=tmp_path_factory.mktemp("distribution"), auth=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def build_store(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    """Where model images are built before they are pushed."""
    return BlobStore(root=tmp_path_factory.mktemp("build") / "blobs")


@pytest.fixture
def tiny() -> Iterator[TinyRegistry]:
    server = TinyRegistry().start()
    yield server
    server.stop()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "images"

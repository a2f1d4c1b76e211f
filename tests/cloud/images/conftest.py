from __future__ import annotations

from pathlib import Path

import pytest
from edgewise.cloud.store.blobs import BlobStore


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(root=tmp_path / "blobs")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model version's files on disk, as the registry would hand them over."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"\x08\x07onnx-model-bytes" * 100)
    (folder / "labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    return folder

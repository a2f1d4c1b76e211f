"""The agent pulls what the workspace built, from the workspace's own /v2/ (Basic auth, the token as password)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgewise.runtime.agent.images import ImageStore, RegistryCredentials

from examples.models import matmul_model
from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.service import WorkspaceProcess, start_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcess]:
    service = start_workspace(tmp_path_factory.mktemp("workspace") / "data")
    yield service
    service.stop()


def test_pulls_an_image_built_by_the_workspace(workspace: WorkspaceProcess, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    model = matmul_model(tmp_path / "model.onnx")
    edgewise("model", "register", "--name", f"m-{suffix}", "--file", str(model), env=workspace.env)
    edgewise("image", "build", "--model", f"m-{suffix}", "--name", f"img-{suffix}", env=workspace.env)
    digest = edgewise_json("image", "show", f"img-{suffix}", env=workspace.env)["manifest_digest"]
    host = workspace.url.removeprefix("http://")
    store = ImageStore(
        root=tmp_path / "images",
        budget_bytes=1 << 30,
        credentials=RegistryCredentials(username="device", password=workspace.token),
        registry_url=workspace.url,
    )

    image = store.ensure(f"{host}/img-{suffix}@{digest}")

    assert image.digest == digest
    assert any((image.rootfs / "var/lib/edgewise/models").rglob("*.onnx"))
    assert (image.rootfs / "etc/edgewise/module.json").is_file()
    assert image.config["Entrypoint"][0] == "edgewise-score"

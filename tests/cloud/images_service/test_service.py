"""Image builds on a real service through the real CLI: activities, reproducibility, export, bases, deletion."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from edgewise.cloud.images import ModelImageSpec, build_model_image, write_layout
from edgewise.cloud.store.blobs import BlobStore
from edgewise.cloud.store.records import ActivityStatus
from edgewise.cloud.store.sql import SqlStore

from examples.models import matmul_model
from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.images.support import add_file, need_tool, raw_image, tar_bytes
from tests.cloud.service import WorkspaceProcess

SCORE = "import numpy as np\n\n\ndef predict(x):\n    return np.asarray(x) * 2\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def model(workspace: WorkspaceProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registered ONNX model (version 1)."""
    folder = tmp_path_factory.mktemp("model")
    path = matmul_model(folder / "matmul.onnx")
    name = unique("matmul")
    edgewise("model", "register", "--name", name, "--file", str(path), env=workspace.env)
    return name


@pytest.fixture(scope="module")
def score(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("score") / "score.py"
    path.write_text(SCORE)
    return path


def _blob_files(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "blobs" / "sha256").rglob("*") if p.is_file()}


def _build(workspace: WorkspaceProcess, *args: str) -> dict[str, object]:
    result: dict[str, object] = edgewise_json("image", "build", *args, env=workspace.env)
    return result


def test_same_inputs_give_the_same_digest_and_store_blobs_once(
    workspace: WorkspaceProcess, model: str, score: Path, tmp_path: Path
) -> None:
    name = unique("img")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.24\n# a comment\n")
    args = ("--model", f"{model}:1", "--name", name, "--score", str(score), "--requirements", str(requirements))
    first = _build(workspace, *args, "--tag", "stage=dev")
    blobs_after_first = _blob_files(workspace.data_dir)
    second = _build(workspace, *args)
    assert (first["version"], second["version"]) == (1, 2)
    assert first["manifest_digest"] == second["manifest_digest"]
    assert first["models"] == [f"{model}:1"] and first["tags"] == {"stage": "dev"}
    assert _blob_files(workspace.data_dir) == blobs_after_first  # nothing new: every layer is stored once
    listed = edgewise_json("image", "list", "--name", name, env=workspace.env)
    assert [i["version"] for i in listed] == [2, 1]
    assert [i["version"] for i in edgewise_json("image", "list", "--tag", "stage=dev", env=workspace.env)] == [1]
    shown = edgewise_json("image", "show", f"{name}:1", env=workspace.env)
    assert shown["manifest_digest"] == first["manifest_digest"] and shown["references"] == []
    activity = edgewise_json("activity", "show", str(first["activity_id"]), env=workspace.env)
    assert activity["status"] == "succeeded" and activity["result"] == f"{name}:1" and activity["progress"] == 1.0
    with workspace.client() as client:
        refs = {(r.kind, r.name) for r in client.model_references(model, 1)}
    assert {("image", f"{name}:1"), ("image", f"{name}:2")} <= refs
    text = edgewise("image", "show", name, env=workspace.env).stdout
    assert f"image {name}:2" in text and str(first["manifest_digest"]) in text


def test_no_wait_returns_the_activity_to_poll(workspace: WorkspaceProcess, model: str) -> None:
    name = unique("nowait")
    activity_id = edgewise("image", "build", "--model", model, "--name", name, "--no-wait", env=workspace.env)
    activity_id_text = activity_id.stdout.strip()
    with workspace.client() as client:
        ended = client.wait_activity(activity_id_text, timeout=120, poll=0.1)
    assert ended.status is ActivityStatus.SUCCEEDED and ended.result == f"{name}:1"
    listed = edgewise_json("activity", "list", "--kind", "image-build", "--status", "succeeded", env=workspace.env)
    assert activity_id_text in {a["id"] for a in listed}
    assert "succeeded" in edgewise("activity", "show", activity_id_text, env=workspace.env).stdout


def test_a_syntax_error_fails_the_build_with_file_and_line(
    workspace: WorkspaceProcess, model: str, tmp_path: Path
) -> None:
    bad = tmp_path / "score.py"
    bad.write_text("def predict(x):\n    return x +\n")
    name = unique("broken")
    result = edgewise(
        "image", "build", "--model", model, "--name", name, "--score", str(bad), env=workspace.env, expect=1
    )
    assert "score.py:2" in result.stderr and "syntax error" in result.stderr
    failed = edgewise_json("activity", "list", "--status", "failed", env=workspace.env)
    assert any(a["parameters"]["image"] == name and "score.py:2" in a["error"] for a in failed)
    assert edgewise_json("image", "list", "--name", name, env=workspace.env) == []


def test_unknown_model_is_a_clear_error(workspace: WorkspaceProcess) -> None:
    result = edgewise("image", "build", "--model", "no-such-model", "--name", "x", env=workspace.env, expect=1)
    assert "no model named 'no-such-model'" in result.stderr
    result = edgewise("image", "show", "no-such-image", env=workspace.env, expect=1)
    assert "no image named 'no-such-image'" in result.stderr


def test_export_in_three_formats_readable_by_skopeo_and_umoci(
    workspace: WorkspaceProcess, model: str, score: Path, tmp_path: Path
) -> None:
    skopeo, umoci = need_tool("skopeo"), need_tool("umoci")
    name = unique("export")
    built = _build(workspace, "--model", model, "--name", name, "--score", str(score))
    ref = f"{name}:1"
    layout, oci_archive, docker_archive = tmp_path / "layout", tmp_path / "image.tar", tmp_path / "docker.tar"
    edgewise("image", "export", ref, "--format", "oci", "-o", str(layout), env=workspace.env)
    edgewise("image", "export", ref, "--format", "oci-archive", "-o", str(oci_archive), env=workspace.env)
    edgewise("image", "export", ref, "--format", "docker-archive", "-o", str(docker_archive), env=workspace.env)
    for target in (f"oci:{layout}:{name}-1", f"oci-archive:{oci_archive}"):
        inspected = json.loads(_run([skopeo, "inspect", target]))
        assert inspected["Digest"] == built["manifest_digest"]
        assert inspected["Labels"]["io.edgewise.model.name"] == model
    inspected = json.loads(_run([skopeo, "inspect", f"docker-archive:{docker_archive}"]))
    assert inspected["Labels"]["io.edgewise.model.version"] == "1"
    _run([umoci, "unpack", "--rootless", "--image", f"{layout}:{name}-1", str(tmp_path / "bundle")])
    version_dir = tmp_path / "bundle" / "rootfs" / "var" / "lib" / "edgewise" / "models" / model / "1"
    assert (version_dir / "matmul.onnx").is_file() and (version_dir / "score.py").read_text() == SCORE
    config = json.loads((version_dir.parent / "config.json").read_text())
    assert config["backend"] == "script"


def test_delete_is_refused_while_a_deployment_uses_the_image(workspace: WorkspaceProcess, model: str) -> None:
    name = unique("deployed")
    _build(workspace, "--model", model, "--name", name)
    store = SqlStore.open(f"sqlite:///{workspace.data_dir / 'workspace.db'}")
    try:
        store.add_image_reference(name, 1, kind="deployment", ref="berlin-prod")
        result = edgewise("image", "delete", f"{name}:1", "--yes", env=workspace.env, expect=1)
        assert "berlin-prod" in result.stderr
        store.set_model_reference_active("deployment", "berlin-prod", False)
    finally:
        store.close()
    edgewise("image", "delete", f"{name}:1", "--yes", env=workspace.env)
    assert edgewise_json("image", "list", "--name", name, env=workspace.env) == []
    with workspace.client() as client:
        assert f"{name}:1" not in {r.name for r in client.model_references(model, 1)}


@pytest.fixture
def base_layout(tmp_path: Path) -> Callable[[str], Path]:
    """An OCI layout holding one image built by the library, with `text` in base.txt (its own model layer)."""

    def build(text: str) -> Path:
        root = tmp_path / unique("base")
        store = BlobStore(root=root / "blobs")
        spec = ModelImageSpec(model_name="base", model_version=1, model_files={"base.txt": text.encode()})
        return write_layout(store, build_model_image(store, spec), root / "layout", ref_name="base")

    return build


def test_build_on_a_base_from_an_oci_layout(
    workspace: WorkspaceProcess, model: str, base_layout: Callable[[str], Path], tmp_path: Path
) -> None:
    layout = base_layout("from the base image\n")
    base_manifest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    name = unique("based")
    built = _build(workspace, "--model", model, "--name", name, "--base", f"oci:{layout}:base")
    assert built["base"] == f"oci:{layout}:base"
    with workspace.client() as client:
        dest = client.export_image(name, 1, format="oci", dest=tmp_path / "out")
    manifest_digest = str(built["manifest_digest"]).removeprefix("sha256:")
    manifest = json.loads((dest / "blobs" / "sha256" / manifest_digest).read_text())
    assert manifest["annotations"]["org.opencontainers.image.base.digest"] == base_manifest
    umoci = need_tool("umoci")
    _run([umoci, "unpack", "--rootless", "--image", f"{dest}:{name}-1", str(tmp_path / "bundle")])
    rootfs = tmp_path / "bundle" / "rootfs" / "var" / "lib" / "edgewise" / "models"
    assert (rootfs / "base" / "1" / "base.txt").read_text() == "from the base image\n"
    assert (rootfs / model / "1" / "matmul.onnx").is_file()


def test_a_base_with_a_corrupt_blob_leaves_no_image(
    workspace: WorkspaceProcess, model: str, base_layout: Callable[[str], Path]
) -> None:
    layout = base_layout(unique("a base the service has never seen"))
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.removeprefix("sha256:")).read_text())
    layer = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.chmod(0o644)
    layer.write_bytes(bytes(data))
    name = unique("corrupt")
    result = edgewise(
        "image", "build", "--model", model, "--name", name, "--base", str(layout), env=workspace.env, expect=1
    )
    assert "corrupt" in result.stderr or "tampered" in result.stderr
    assert edgewise_json("image", "list", "--name", name, env=workspace.env) == []


def test_a_base_with_an_escaping_entry_fails_the_build(workspace: WorkspaceProcess, model: str, tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path / "blobs")
    hostile = tar_bytes(lambda tar: add_file(tar, "../../escape.txt", unique("payload").encode()))
    layout = write_layout(store, raw_image(store, [hostile]), tmp_path / "layout", ref_name="base")
    name = unique("hostile")
    result = edgewise(
        "image", "build", "--model", model, "--name", name, "--base", f"oci:{layout}", env=workspace.env, expect=1
    )
    assert "escape.txt" in result.stderr and "failed" in result.stderr
    assert edgewise_json("image", "list", "--name", name, env=workspace.env) == []


def test_builds_in_flight_at_a_stop_are_failed_at_the_next_start(
    workspace_factory: Callable[..., WorkspaceProcess], tmp_path: Path
) -> None:
    service = workspace_factory(data_dir=tmp_path / "data")
    service.stop()
    store = SqlStore.open(f"sqlite:///{service.data_dir / 'workspace.db'}")
    try:
        stale = store.create_activity(kind="image-build", parameters={"image": "x"})
    finally:
        store.close()
    restarted = workspace_factory(data_dir=tmp_path / "data")
    with restarted.client() as client:
        activity = client.get_activity(stale.id)
    assert activity.status is ActivityStatus.FAILED and "stopped" in (activity.error or "")


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{argv} exited with {result.returncode}: {result.stderr}"
    return result.stdout

"""Images leave the workspace: skopeo reads them from the service's own /v2/, and `edgewise image push` sends them
to CNCF Distribution (with and without basic auth), uploading only the blobs the registry lacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from examples.models import matmul_model
from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.registry.support import REGISTRY_PASSWORD, REGISTRY_USER, DockerRegistry, skopeo
from tests.cloud.service import WorkspaceProcess


@pytest.fixture(scope="module")
def image(workspace: WorkspaceProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    """A built image of a registered model: (image name, `image show` as JSON)."""
    suffix = uuid.uuid4().hex[:8]
    model = matmul_model(tmp_path_factory.mktemp("model") / "model.onnx")
    edgewise("model", "register", "--name", f"m-{suffix}", "--file", str(model), env=workspace.env)
    name = f"img-{suffix}"
    edgewise("image", "build", "--model", f"m-{suffix}", "--name", name, env=workspace.env)
    return name, edgewise_json("image", "show", name, env=workspace.env)


def test_skopeo_reads_images_from_the_workspace(
    workspace: WorkspaceProcess, image: tuple[str, dict[str, object]], tmp_path: Path
) -> None:
    name, shown = image
    host = workspace.url.removeprefix("http://")
    creds = f"--creds=edgewise:{workspace.token}"
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", creds, f"docker://{host}/{name}:1"))
    assert inspected["Digest"] == shown["manifest_digest"]
    assert inspected["Labels"]["io.edgewise.model.name"].startswith("m-")
    latest = json.loads(skopeo("inspect", "--tls-verify=false", creds, f"docker://{host}/{name}:latest"))
    assert latest["Digest"] == shown["manifest_digest"]
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        f"edgewise:{workspace.token}",
        f"docker://{host}/{name}:1",
        f"oci:{tmp_path / 'copy'}:copied",
    )
    assert (tmp_path / "copy" / "index.json").exists()


def test_the_workspace_registry_needs_the_token(workspace: WorkspaceProcess, image: tuple[str, object]) -> None:
    import httpx

    with httpx.Client(trust_env=False) as client:
        response = client.get(f"{workspace.url}/v2/{image[0]}/manifests/1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


def test_push_to_a_registry_skips_what_it_has(
    workspace: WorkspaceProcess, image: tuple[str, dict[str, object]], registry: DockerRegistry
) -> None:
    name, shown = image
    target = f"{registry.host}/team/{name}"
    first = edgewise("image", "push", f"{name}:1", "--to", target, env=workspace.env)
    assert first.stdout.strip() == shown["manifest_digest"]
    assert "0 already there" in first.stderr
    again = edgewise("image", "push", f"{name}:1", "--to", f"{target}:again", env=workspace.env)
    assert "0 blob(s) uploaded" in again.stderr
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}:1"))
    assert inspected["Digest"] == shown["manifest_digest"]


def test_push_with_basic_auth(
    workspace: WorkspaceProcess, image: tuple[str, dict[str, object]], auth_registry: DockerRegistry
) -> None:
    name, shown = image
    target = f"{auth_registry.host}/{name}:v1"
    refused = edgewise("image", "push", f"{name}:1", "--to", target, env=workspace.env, expect=1)
    assert "error:" in refused.stderr
    pushed = edgewise(
        "image",
        "push",
        f"{name}:1",
        "--to",
        target,
        "--username",
        REGISTRY_USER,
        "--password-stdin",
        env=workspace.env,
        stdin=REGISTRY_PASSWORD + "\n",
    )
    assert pushed.stdout.strip() == shown["manifest_digest"]
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", *auth_registry.creds(), f"docker://{target}"))
    assert inspected["Digest"] == shown["manifest_digest"]


def test_build_on_a_base_pulled_from_a_registry(
    workspace: WorkspaceProcess, image: tuple[str, dict[str, object]], registry: DockerRegistry, tmp_path: Path
) -> None:
    name, shown = image
    edgewise("image", "push", f"{name}:1", "--to", f"{registry.host}/bases/{name}:1", env=workspace.env)
    model = edgewise_json("image", "show", name, env=workspace.env)["models"][0]
    stacked = f"{name}-on-base"
    edgewise(
        "image",
        "build",
        "--model",
        model,
        "--name",
        stacked,
        "--base",
        f"docker://{registry.host}/bases/{name}:1",
        env=workspace.env,
    )
    built = edgewise_json("image", "show", stacked, env=workspace.env)
    assert built["base"] and name in str(built["base"])
    edgewise("image", "export", stacked, "--format", "oci", "-o", str(tmp_path / "layout"), env=workspace.env)
    inspected = json.loads(skopeo("inspect", f"oci:{tmp_path / 'layout'}:{stacked}-1"))
    base_layers = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/bases/{name}:1"))
    assert inspected["Layers"][: len(base_layers["Layers"])] == base_layers["Layers"]
    assert len(inspected["Layers"]) > len(base_layers["Layers"])
    assert shown["manifest_digest"] != built["manifest_digest"]


def test_podman_loads_the_docker_archive(
    request: pytest.FixtureRequest, workspace: WorkspaceProcess, image: tuple[str, dict[str, object]], tmp_path: Path
) -> None:
    """`podman load` reads the format `docker save` writes and `docker load` reads."""
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed (Debian package podman)")
    name, shown = image
    archive = tmp_path / "image.tar"
    edgewise("image", "export", f"{name}:1", "--format", "docker-archive", "-o", str(archive), env=workspace.env)
    runroot = Path(tempfile.mkdtemp(prefix="ew-podman-"))  # podman wants a short run root
    request.addfinalizer(lambda: shutil.rmtree(runroot, ignore_errors=True))
    storage = [
        f"--root={tmp_path / 'root'}",
        f"--runroot={runroot}",
        "--storage-driver=vfs",
        "--cgroup-manager=cgroupfs",
        "--events-backend=none",
    ]
    loaded = subprocess.run([podman, *storage, "load", "-i", str(archive)], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert f"edgewise/{name}:1" in loaded.stdout
    inspected = subprocess.run(
        [podman, *storage, "image", "inspect", f"edgewise/{name}:1"], capture_output=True, text=True, check=True
    )
    (details,) = json.loads(inspected.stdout)
    assert f"sha256:{details['Id']}" == shown["config_digest"]
    assert details["Config"]["Labels"]["io.edgewise.model.version"] == "1"

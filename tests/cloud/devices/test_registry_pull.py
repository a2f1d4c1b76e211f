"""A device pulls images from the workspace's /v2/ with its own id and secret, and those credentials open
nothing else: not the rest of the API, not after the device is removed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from edgewise.cloud.images import oci

from examples.models import matmul_model
from tests.cloud.cli.cli import edgewise, edgewise_json
from tests.cloud.devices.conftest import add_device, unique
from tests.cloud.service import WorkspaceProcess


@pytest.fixture(scope="module")
def image(mosquitto_workspace: WorkspaceProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A built image of a registered model, as `image show` answers it."""
    service, suffix = mosquitto_workspace, uuid.uuid4().hex[:8]
    model = matmul_model(tmp_path_factory.mktemp("model") / "model.onnx")
    edgewise("model", "register", "--name", f"m-{suffix}", "--file", str(model), env=service.env)
    edgewise("image", "build", "--model", f"m-{suffix}", "--name", f"img-{suffix}", env=service.env)
    shown: dict[str, Any] = edgewise_json("image", "show", f"img-{suffix}", env=service.env)
    return shown


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def test_a_device_pulls_with_its_credentials(
    mosquitto_workspace: WorkspaceProcess, image: dict[str, Any], http: httpx.Client
) -> None:
    device = add_device(mosquitto_workspace, unique("puller"))
    assert device.registry is not None
    auth = (device.device_id, device.secret)
    base = f"{device.registry}/v2/{image['name']}"
    manifest = http.get(f"{base}/manifests/{image['version']}", auth=auth, headers={"accept": oci.MANIFEST})
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["docker-content-digest"] == image["manifest_digest"]
    assert oci.sha256_digest(manifest.content) == image["manifest_digest"]
    for descriptor in [manifest.json()["config"], *manifest.json()["layers"]]:
        blob = http.get(f"{base}/blobs/{descriptor['digest']}", auth=auth)
        assert blob.status_code == 200
        assert oci.sha256_digest(blob.content) == descriptor["digest"]


def test_device_credentials_open_nothing_but_pulls(
    mosquitto_workspace: WorkspaceProcess, image: dict[str, Any], http: httpx.Client
) -> None:
    service = mosquitto_workspace
    device = add_device(service, unique("limited"))
    auth = (device.device_id, device.secret)
    for path in ("/api/v1/devices", f"/api/v1/devices/{device.device_id}", "/api/v1/models"):
        assert http.get(f"{service.url}{path}", auth=auth).status_code == 401, path
        bearer = {"authorization": f"Bearer {device.secret}"}
        assert http.get(f"{service.url}{path}", headers=bearer).status_code == 401, path
    assert http.delete(f"{service.url}/api/v1/devices/{device.device_id}", auth=auth).status_code == 401
    # The registry has no push routes, so a device cannot write there either.
    upload = http.post(f"{service.url}/v2/{image['name']}/blobs/uploads/", auth=auth)
    assert upload.is_redirect or upload.status_code in (404, 405)
    overwrite = http.put(f"{service.url}/v2/{image['name']}/manifests/{image['version']}", auth=auth, content=b"{}")
    assert overwrite.status_code == 405
    assert http.get(f"{service.url}/v2/", auth=(device.device_id, "wrong-secret")).status_code == 401
    assert http.get(f"{service.url}/v2/", auth=("edgewise-service", _service_password(service))).status_code == 401


def test_a_removed_device_can_no_longer_pull(
    mosquitto_workspace: WorkspaceProcess, image: dict[str, Any], http: httpx.Client
) -> None:
    service = mosquitto_workspace
    device = add_device(service, unique("pulled-then-removed"))
    url = f"{service.url}/v2/{image['name']}/manifests/{image['version']}"
    assert http.get(url, auth=(device.device_id, device.secret)).status_code == 200
    with service.client() as client:
        client.remove_device(device.device_id)
    refused = http.get(url, auth=(device.device_id, device.secret))
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"


def _service_password(service: WorkspaceProcess) -> str:
    return (service.data_dir / "broker" / "service-password").read_text().strip()

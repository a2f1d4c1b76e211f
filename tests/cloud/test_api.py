"""The workspace HTTP API on a real `edgewise up`: token, errors, blobs, pagination, registry rules, OpenAPI."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from tests.cloud.service import WorkspaceProcess

API = "/api/v1"


@pytest.fixture
def http(workspace: WorkspaceProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {workspace.token}"}
    with httpx.Client(base_url=workspace.url, headers=headers, timeout=30, trust_env=False) as client:
        yield client


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(http: httpx.Client, data: bytes) -> str:
    digest = digest_of(data)
    response = http.put(f"{API}/blobs/{digest}", content=data)
    assert response.status_code == 201, response.text
    return digest


def test_health_needs_no_token_and_everything_else_does(workspace: WorkspaceProcess) -> None:
    with httpx.Client(base_url=workspace.url, trust_env=False) as anonymous:
        assert anonymous.get(f"{API}/health").json()["status"] == "ok"
        for method, path in [
            ("GET", "/experiments"),
            ("GET", "/runs"),
            ("GET", "/models"),
            ("POST", "/models"),
            ("POST", "/blobs/missing"),
        ]:
            response = anonymous.request(method, API + path, json={"digests": []})
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "unauthenticated"
            assert "EDGEWISE_TOKEN" in response.json()["error"]["message"]
        wrong = anonymous.get(f"{API}/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        wrong = anonymous.post(f"{API}/models", json={"name": "m"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


def test_token_file_is_private(workspace: WorkspaceProcess) -> None:
    assert (workspace.data_dir / "token").stat().st_mode & 0o077 == 0


def test_openapi_schema_documents_every_route(workspace: WorkspaceProcess) -> None:
    with httpx.Client(base_url=workspace.url, trust_env=False) as anonymous:
        schema = anonymous.get("/openapi.json").json()
    paths = schema["paths"]
    for path in [
        "/runs",
        "/runs/{run_id}/metrics",
        "/runs/{run_id}/logs",
        "/models",
        "/blobs/{digest}",
        "/experiments",
    ]:
        assert API + path in paths, path
    register = paths[f"{API}/models"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(register["required"]) == {"name"}
    files = register["properties"]["files"]["anyOf"][0]["items"]["$ref"]
    assert schema["components"]["schemas"][files.rsplit("/", 1)[-1]]["required"] == ["path", "digest", "size"]


def test_blob_upload_is_content_addressed(http: httpx.Client, workspace: WorkspaceProcess) -> None:
    data = b"weights" * 1000
    digest = digest_of(data)
    assert http.post(f"{API}/blobs/missing", json={"digests": [digest]}).json() == {"missing": [digest]}
    upload(http, data)
    upload(http, data)  # a second upload of the same bytes stores nothing new
    assert http.post(f"{API}/blobs/missing", json={"digests": [digest]}).json() == {"missing": []}
    assert http.get(f"{API}/blobs/{digest}").content == data
    files = [p for p in (workspace.data_dir / "blobs").rglob("*") if p.is_file() and p.name == digest[7:]]
    assert len(files) == 1


def test_blob_with_wrong_digest_is_refused_and_leaves_nothing(http: httpx.Client, workspace: WorkspaceProcess) -> None:
    claimed = digest_of(b"something else")
    response = http.put(f"{API}/blobs/{claimed}", content=b"these bytes")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"
    assert http.post(f"{API}/blobs/missing", json={"digests": [claimed]}).json() == {"missing": [claimed]}
    assert not any(p.name == claimed[7:] for p in (workspace.data_dir / "blobs").rglob("*"))
    bad = http.put(f"{API}/blobs/md5:abc", content=b"x")
    assert bad.status_code == 400


def test_models_register_from_files_version_up_and_page(http: httpx.Client) -> None:
    digest = upload(http, b"not really onnx but a file")
    body = {"name": "paged-model", "files": [{"path": "weights.bin", "digest": digest, "size": 26}]}
    versions = [http.post(f"{API}/models", json={**body, "tags": {"n": str(i)}}).json()["version"] for i in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    seen: list[int] = []
    token = None
    while True:
        params: dict[str, str | int] = {"name": "paged-model", "page_size": 2}
        if token:
            params["page_token"] = token
        page = http.get(f"{API}/models", params=params).json()
        seen += [item["version"] for item in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    latest = http.get(f"{API}/models/paged-model/versions/latest").json()
    assert latest["version"] == 5 and latest["format"] == "file" and latest["tags"] == {"n": "4"}
    by_tag = http.get(f"{API}/models", params={"tag": "n=2"}).json()["items"]
    assert [(m["name"], m["version"]) for m in by_tag] == [("paged-model", 3)]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "../evil", "files": []}, "invalid_input"),
        ({"name": "ok-name"}, "invalid_input"),
        ({"name": "ok-name", "files": [{"path": "../x", "digest": "sha256:" + "0" * 64, "size": 1}]}, "unsafe_path"),
        ({"name": "ok-name", "files": [{"path": "/etc/x", "digest": "sha256:" + "0" * 64, "size": 1}]}, "unsafe_path"),
        ({"name": "ok-name", "files": [{"path": "x", "digest": "sha256:" + "0" * 64, "size": 1}]}, "invalid_input"),
        ({"name": "ok-name", "run_id": "0000000000000000", "path": "outputs/model.onnx"}, "not_found"),
        ({"name": "ok-name", "tags": ["a"]}, "invalid_input"),
        ({"files": []}, "invalid_input"),
    ],
)
def test_bad_registrations_get_clear_errors(http: httpx.Client, body: dict[str, object], code: str) -> None:
    response = http.post(f"{API}/models", json=body)
    assert response.json()["error"]["code"] == code, response.text
    assert response.status_code in (400, 404)
    assert http.get(f"{API}/models", params={"name": "ok-name"}).json()["items"] == []


def test_a_registration_body_that_is_not_json_is_400(http: httpx.Client) -> None:
    response = http.post(f"{API}/models", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"


def test_unknown_things_are_404_with_a_message(http: httpx.Client) -> None:
    for path in [
        "/runs/ffffffffffffffff",
        "/experiments/nope",
        "/models/nope/versions/latest",
        "/models/nope/versions/3",
    ]:
        response = http.get(API + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["message"]
    assert http.get(f"{API}/models/x/versions/zero").status_code == 400


def test_malformed_requests_are_400_not_500(http: httpx.Client) -> None:
    assert (
        http.post(f"{API}/models", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert http.post(f"{API}/runs", json={"experiment": "e"}).status_code == 400
    response = http.get(f"{API}/runs", params={"filter": "metrics.acc >>> 3"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"
    assert http.get(f"{API}/runs", params={"page_size": 0}).status_code == 400


def test_metric_batches_are_checked_point_by_point(http: httpx.Client) -> None:
    digest = upload(http, b"print('metrics')\n")
    body = {
        "experiment": "metric-checks",
        "spec": {"script": "train.py"},
        "snapshot": [{"path": "train.py", "digest": digest, "size": 17}],
    }
    run_id = http.post(f"{API}/runs", json=body).json()["id"]
    good = {"name": "loss", "timestamp": 1.0, "value": 0.5, "step": 0}
    for bad, words in [
        ({"name": "loss", "timestamp": "yesterday", "value": 1}, "timestamp"),
        ({"name": "", "timestamp": 1.0}, "name"),
        ({"name": "loss", "timestamp": 1.0, "value": "high"}, "value"),
        ({"name": "loss", "timestamp": 1.0, "step": 1.5}, "step"),
        ({"name": "loss", "timestamp": 1.0, "kind": "histogram"}, "kind"),
    ]:
        response = http.post(f"{API}/runs/{run_id}/metrics", json={"points": [good, bad]})
        assert response.status_code == 400, bad
        message = response.json()["error"]["message"]
        assert "points[1]" in message and words in message, message
    assert http.post(f"{API}/runs/{run_id}/metrics", content=b"[1, 2").status_code == 400
    assert http.post(f"{API}/runs/{run_id}/metrics", json={"points": [good]}).status_code == 204
    assert http.get(f"{API}/runs/{run_id}/metrics").json()["metrics"][0]["value"] == 0.5
    assert http.post(f"{API}/runs/ffffffffffffffff/metrics", json={"points": [good]}).status_code == 404

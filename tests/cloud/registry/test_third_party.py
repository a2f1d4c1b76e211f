"""skopeo reads the workspace's `/v2/` and copies from it into an OCI layout and into CNCF Distribution."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from edgewise.cloud.images import LABEL_MODEL_NAME, LayoutDir, oci

from tests.cloud.registry.conftest import Served
from tests.cloud.registry.support import TOKEN, DockerRegistry, need_tool, skopeo


def test_skopeo_inspects_our_registry(served: Served) -> None:
    source = f"docker://{served.server.host}/iris:1"
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"--creds=anyone:{TOKEN}", source))
    assert info["Digest"] == served.v1.manifest_digest
    assert info["Layers"] == [layer.digest for layer in served.v1.layers]
    assert info["Labels"][LABEL_MODEL_NAME] == "iris"
    assert sorted(info["RepoTags"]) == ["1", "2", "latest"]
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"--creds=anyone:{TOKEN}", source)
    assert oci.sha256_digest(raw.encode()) == served.v1.manifest_digest


def test_skopeo_is_refused_without_the_token(served: Served) -> None:
    result = subprocess.run(
        [need_tool("skopeo"), "inspect", "--tls-verify=false", f"docker://{served.server.host}/iris:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower() or "authentication" in result.stderr.lower()


def test_skopeo_copies_to_an_oci_layout(served: Served, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        f"--src-creds=anyone:{TOKEN}",
        f"docker://{served.server.host}/team/vision/resnet:latest",
        f"oci:{layout}:resnet",
    )
    image = LayoutDir(path=layout).image("resnet")
    assert image.manifest_digest == served.other.manifest_digest
    for layer in image.layers:
        with image.blobs.open_blob(layer) as reader:
            reader.read_to_end()


def test_skopeo_copies_into_cncf_distribution(served: Served, registry: DockerRegistry) -> None:
    skopeo(
        "copy",
        "--src-tls-verify=false",
        f"--src-creds=anyone:{TOKEN}",
        "--dest-tls-verify=false",
        f"docker://{served.server.host}/iris:2",
        f"docker://{registry.host}/copied/iris:2",
    )
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/copied/iris:2"))
    assert info["Digest"] == served.v2.manifest_digest
    assert info["Layers"] == [layer.digest for layer in served.v2.layers]

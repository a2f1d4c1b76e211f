"""Exports read by third-party tools: skopeo (layout, OCI archive, docker-archive) and umoci."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

from edgewise.cloud.images import (
    LABEL_MODEL_NAME,
    BuiltImage,
    LayoutDir,
    OciArchive,
    build_model_image,
    oci,
    unpack_image,
    write_docker_archive,
    write_layout,
    write_oci_archive,
)
from edgewise.cloud.store.blobs import BlobStore

from tests.cloud.images.support import make_spec, need_tool, tree


def skopeo(*args: str) -> str:
    result = subprocess.run([need_tool("skopeo"), *args], check=True, capture_output=True, text=True)
    return result.stdout


def built(store: BlobStore, model_dir: Path) -> BuiltImage:
    return build_model_image(store, make_spec(model_dir))


def test_layout_index_and_blobs(store: BlobStore, model_dir: Path, tmp_path: Path) -> None:
    image = built(store, model_dir)
    layout = write_layout(store, image, tmp_path / "layout")
    other = build_model_image(store, make_spec(model_dir, model_version=4))
    write_layout(store, other, layout)
    write_layout(store, image, layout)  # the same name again replaces, not duplicates
    index = json.loads((layout / "index.json").read_text())
    names = [entry["annotations"][oci.REF_NAME] for entry in index["manifests"]]
    assert sorted(names) == ["iris-3", "iris-4"]
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    for descriptor in (image.manifest, image.config, *image.layers):
        blob = layout / "blobs" / "sha256" / descriptor.digest.removeprefix("sha256:")
        assert oci.file_digest(blob) == descriptor.digest
    assert LayoutDir(path=layout).image("iris-4").manifest_digest == other.manifest_digest


def test_skopeo_reads_the_layout_and_copies_it(store: BlobStore, model_dir: Path, tmp_path: Path) -> None:
    image = built(store, model_dir)
    layout = write_layout(store, image, tmp_path / "layout")
    info = json.loads(skopeo("inspect", f"oci:{layout}:iris-3"))
    assert info["Digest"] == image.manifest_digest
    assert info["Labels"][LABEL_MODEL_NAME] == "iris"
    assert info["Layers"] == [layer.digest for layer in image.layers]
    raw = skopeo("inspect", "--raw", f"oci:{layout}:iris-3")
    assert oci.sha256_digest(raw.encode()) == image.manifest_digest
    skopeo("copy", f"oci:{layout}:iris-3", f"oci:{tmp_path / 'copy'}:copied")
    copied = LayoutDir(path=tmp_path / "copy").image("copied")
    assert copied.diff_ids == list(image.diff_ids)


def test_oci_archive_is_reproducible_and_readable(store: BlobStore, model_dir: Path, tmp_path: Path) -> None:
    image = built(store, model_dir)
    first = write_oci_archive(store, image, tmp_path / "a.tar")
    second = write_oci_archive(store, image, tmp_path / "b.tar")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        assert {(m.uid, m.gid, m.mtime) for m in tar.getmembers()} == {(0, 0, 0)}
    info = json.loads(skopeo("inspect", f"oci-archive:{first}"))
    assert info["Digest"] == image.manifest_digest
    skopeo("copy", f"oci-archive:{first}", f"oci:{tmp_path / 'from-archive'}:x")
    with OciArchive(path=first) as archive:
        assert archive.image("iris-3").manifest_digest == image.manifest_digest


def test_docker_archive_loads_with_skopeo(store: BlobStore, model_dir: Path, tmp_path: Path) -> None:
    image = built(store, model_dir)
    path = write_docker_archive(store, image, tmp_path / "docker.tar", repo_tags=["models/iris:3"])
    assert write_docker_archive(store, image, tmp_path / "again.tar", repo_tags=["models/iris:3"]).read_bytes() == (
        path.read_bytes()
    )
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    assert manifest[0]["RepoTags"] == ["models/iris:3"]
    assert manifest[0]["Config"] == image.config_digest.removeprefix("sha256:") + ".json"
    assert len(manifest[0]["Layers"]) == 3
    info = json.loads(skopeo("inspect", f"docker-archive:{path}"))
    assert info["Labels"][LABEL_MODEL_NAME] == "iris"
    skopeo("copy", f"docker-archive:{path}", f"oci:{tmp_path / 'from-docker'}:iris")
    copied = LayoutDir(path=tmp_path / "from-docker").image("iris")
    assert copied.diff_ids == list(image.diff_ids)  # same plain layers, whatever the compression
    rootfs = unpack_image(copied, tmp_path / "rootfs")
    assert (rootfs / "var/lib/edgewise/models/iris/3/score.py").read_text().startswith("def run")


def test_umoci_unpacks_the_image(store: BlobStore, model_dir: Path, tmp_path: Path) -> None:
    umoci = need_tool("umoci")
    image = built(store, model_dir)
    layout = write_layout(store, image, tmp_path / "layout")
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--rootless", "--image", f"{layout}:iris-3", str(bundle)], check=True)
    rootfs = bundle / "rootfs"
    version = rootfs / "var/lib/edgewise/models/iris/3"
    assert (version / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()
    assert (version / "labels.txt").read_text() == (model_dir / "labels.txt").read_text()
    assert (version / "score.py").read_text() == "def run(x):\n    return x\n"
    assert json.loads((rootfs / "var/lib/edgewise/models/iris/config.json").read_text())["backend"] == "script"
    module = json.loads((rootfs / "etc/edgewise/module.json").read_text())
    assert module["model"]["name"] == "iris"
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["args"][:3] == ["edgewise-score", "--model-repository", "/var/lib/edgewise/models"]
    assert "EDGEWISE_MODULE_CONFIG=/etc/edgewise/module.json" in runtime["process"]["env"]
    # our own unpacker gives the same tree
    ours = unpack_image(LayoutDir(path=layout).image("iris-3"), tmp_path / "ours")
    assert tree(ours) == tree(rootfs)

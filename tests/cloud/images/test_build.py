"""The builder: reproducible layers and images, configuration, base images."""

from __future__ import annotations

import gzip
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.images import (
    LABEL_MODEL_DIGEST,
    LABEL_MODEL_NAME,
    LABEL_MODEL_VERSION,
    LayerFile,
    LayoutDir,
    OciArchive,
    Source,
    StoreBlobs,
    build_layer,
    build_model_image,
    load_image,
    oci,
    write_layout,
)
from edgewise.cloud.store.blobs import BlobStore

from tests.cloud.images.support import add_file, make_spec, need_tool, raw_image, tar_bytes


def read_json(store: BlobStore, digest: str) -> dict:  # type: ignore[type-arg]
    return json.loads(store.path(digest).read_bytes())  # type: ignore[no-any-return]


def test_same_inputs_give_byte_identical_layers(store: BlobStore, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"w" * 5000)
    files: dict[str, Source] = {
        "/opt/b.txt": b"b",
        "/opt/a/x.bin": LayerFile(source=tmp_path / "weights.bin", mode=0o600),
    }
    first = build_layer(store, files)
    second = build_layer(store, dict(reversed(list(files.items()))))
    assert first == second
    raw = store.path(first.digest).read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime
    assert not raw[3] & 0x08  # no file name in the gzip header
    plain = gzip.decompress(raw)
    assert oci.sha256_digest(plain) == first.diff_id
    with tarfile.open(fileobj=gzip.open(store.path(first.digest)), mode="r:") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["opt", "opt/a", "opt/a/x.bin", "opt/b.txt"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}
    assert [m.mode for m in members] == [0o755, 0o755, 0o600, 0o644]
    assert all(not m.pax_headers for m in members)


def test_layer_paths_are_checked(store: BlobStore) -> None:
    with pytest.raises(InvalidInputError, match="escapes"):
        build_layer(store, {"/opt/../../etc/passwd": b"x"})
    with pytest.raises(InvalidInputError, match="both a file and a folder"):
        build_layer(store, {"/opt/a": b"x", "/opt/a/b": b"y"})


def test_two_builds_give_the_same_manifest_digest(store: BlobStore, model_dir: Path) -> None:
    first = build_model_image(store, make_spec(model_dir))
    second = build_model_image(store, make_spec(model_dir))
    assert first == second
    assert first.manifest_digest == second.manifest_digest
    assert len(first.layers) == 3
    assert first.total_size == sum(
        store.path(d.digest).stat().st_size for d in (first.manifest, first.config, *first.layers)
    )


def test_changed_scoring_code_changes_only_its_layer(store: BlobStore, model_dir: Path) -> None:
    before = build_model_image(store, make_spec(model_dir))
    after = build_model_image(store, make_spec(model_dir, score="def run(x):\n    return [x]\n"))
    assert after.manifest_digest != before.manifest_digest
    assert after.layers[0] == before.layers[0]  # model files
    assert after.layers[1] != before.layers[1]  # scoring code
    assert after.layers[2] == before.layers[2]  # module configuration
    stored = sorted(p.name for p in (store.root / "sha256").rglob("*") if p.is_file())
    assert len(stored) == 3 + 2 + 2 + 1  # shared layers are stored once


def test_config_manifest_and_module_json(store: BlobStore, model_dir: Path) -> None:
    created = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    image = build_model_image(
        store, make_spec(model_dir, created=created, server_args=["--metrics"], env={"OMP_NUM_THREADS": "2"})
    )
    config = read_json(store, image.config_digest)
    manifest = read_json(store, image.manifest_digest)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["created"] == "2026-05-01T12:30:00Z"
    inner = config["config"]
    assert inner["Entrypoint"][:3] == ["edgewise-score", "--model-repository", "/var/lib/edgewise/models"]
    assert inner["Entrypoint"][-1] == "--metrics"
    assert "OMP_NUM_THREADS=2" in inner["Env"] and "EDGEWISE_MODULE_CONFIG=/etc/edgewise/module.json" in inner["Env"]
    assert inner["Labels"][LABEL_MODEL_NAME] == "iris"
    assert inner["Labels"][LABEL_MODEL_VERSION] == "3"
    assert inner["Labels"][LABEL_MODEL_DIGEST] == image.model_digest
    assert config["rootfs"]["diff_ids"] == list(image.diff_ids)
    assert len(config["history"]) == 3
    assert manifest["mediaType"] == oci.MANIFEST
    assert manifest["config"]["digest"] == image.config_digest
    annotations = manifest["annotations"]
    assert annotations[oci.CREATED] == "2026-05-01T12:30:00Z"
    assert annotations[oci.TITLE] == "iris" and annotations[oci.VERSION] == "3"
    assert annotations[oci.SOURCE] == "https://git.example/iris.git" and annotations[oci.REVISION] == "0123abcd"
    assert image.media_types["layers"] == [oci.LAYER_GZIP] * 3

    with gzip.open(store.path(image.layers[2].digest)) as plain, tarfile.open(fileobj=plain, mode="r:") as tar:
        member = tar.extractfile("etc/edgewise/module.json")
        assert member is not None
        module = json.loads(member.read())
    assert module["model"] == {"name": "iris", "version": 3, "digest": image.model_digest}
    assert module["server"]["arguments"] == inner["Entrypoint"][1:]


def test_model_digest_of_a_single_file_is_its_blob_digest(store: BlobStore) -> None:
    spec = make_spec(Path("/"), model_files={"model.onnx": b"abc"}, scoring_files={}, model_config=None)
    image = build_model_image(store, spec)
    assert image.model_digest == oci.sha256_digest(b"abc")
    assert len(image.layers) == 2  # without scoring code or config.json there is no code layer


def test_bad_specs_are_refused(store: BlobStore, model_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="model name"):
        build_model_image(store, make_spec(model_dir, model_name="../x"))
    with pytest.raises(InvalidInputError, match="would replace model files"):
        build_model_image(store, make_spec(model_dir, scoring_files={"model.onnx": b"x"}))
    with pytest.raises(InvalidInputError, match="time zone"):
        build_model_image(store, make_spec(model_dir, created=datetime(2026, 1, 1)))


def base_layout(store: BlobStore, directory: Path) -> Path:
    base = raw_image(
        store,
        [tar_bytes(lambda tar: add_file(tar, "usr/bin/edgewise-score", b"#!/bin/sh\n", 0o755))],
        config={
            "config": {
                "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
                "Cmd": ["/bin/sh"],
                "WorkingDir": "/srv",
                "Labels": {"vendor": "base-maker"},
            }
        },
    )
    return write_layout(store, base, directory, ref_name="latest")


def test_layers_stack_on_a_base_image_from_a_layout(store: BlobStore, model_dir: Path, tmp_path: Path) -> None:
    layout = base_layout(BlobStore(root=tmp_path / "other-blobs"), tmp_path / "base")
    base = LayoutDir(path=layout).image("latest")
    image = build_model_image(store, make_spec(model_dir, base_name="example/base:latest"), base=base)
    config = read_json(store, image.config_digest)
    assert image.layers[0] == base.layers[0]
    assert store.exists(base.layers[0].digest)  # copied into the store
    assert config["rootfs"]["diff_ids"][0] == base.diff_ids[0]
    assert len(config["rootfs"]["diff_ids"]) == len(config["history"]) == 4
    assert config["architecture"] == "arm64"
    inner = config["config"]
    assert inner["Env"][:2] == ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
    assert inner["WorkingDir"] == "/srv"
    assert "Cmd" not in inner  # a new entrypoint drops the base's arguments
    assert inner["Labels"]["vendor"] == "base-maker" and inner["Labels"][LABEL_MODEL_NAME] == "iris"
    manifest = read_json(store, image.manifest_digest)
    assert manifest["annotations"][oci.BASE_DIGEST] == base.manifest_digest
    assert manifest["annotations"][oci.BASE_NAME] == "example/base:latest"
    # the result reads back like any image
    again = load_image(StoreBlobs(store=store), image.manifest)
    assert again.diff_ids == list(image.diff_ids)


def test_base_image_from_an_oci_archive_made_by_skopeo(store: BlobStore, model_dir: Path, tmp_path: Path) -> None:
    skopeo = need_tool("skopeo")
    import subprocess

    layout = base_layout(store, tmp_path / "base")
    archive = tmp_path / "base.tar"
    subprocess.run([skopeo, "copy", f"oci:{layout}:latest", f"oci-archive:{archive}:latest"], check=True)
    with OciArchive(path=archive) as opened:
        base = opened.image("latest")
        image = build_model_image(store, make_spec(model_dir), base=base)
    assert image.diff_ids[0] == base.diff_ids[0]
    assert len(image.layers) == 4

"""Reading untrusted images: unsafe entries, tampered blobs and unknown media types are refused, and leave nothing."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from edgewise.cloud.errors import InvalidInputError, NotFoundError, UnsafePathError
from edgewise.cloud.images import LayoutDir, OciArchive, oci, open_image, unpack_image, write_layout, write_oci_archive
from edgewise.cloud.store.blobs import BlobStore

from tests.cloud.images.support import add_file, add_special, raw_image, tar_bytes, tree


def layout_of(store: BlobStore, tmp_path: Path, *layers: Callable[[tarfile.TarFile], None]) -> Path:
    image = raw_image(store, [tar_bytes(add) for add in layers])
    return write_layout(store, image, tmp_path / "layout", ref_name="evil")


def assert_refused(layout: Path, tmp_path: Path, entry: str, **options: bool) -> None:
    destination = tmp_path / "out" / "rootfs"
    with pytest.raises(UnsafePathError, match=entry):
        unpack_image(LayoutDir(path=layout).image("evil"), destination, **options)
    assert not destination.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no scratch folder left behind
    assert not (tmp_path / "etc").exists() and not (tmp_path / "escaped").exists()


def test_a_benign_image_unpacks(store: BlobStore, tmp_path: Path) -> None:
    def files(tar: tarfile.TarFile) -> None:
        add_special(tar, "./app", tarfile.DIRTYPE)
        add_file(tar, "./app/run.sh", b"#!/bin/sh\n", 0o4755)
        add_special(tar, "app/link", tarfile.SYMTYPE, "run.sh")
        add_special(tar, "app/hard", tarfile.LNKTYPE, "app/run.sh")

    layout = layout_of(store, tmp_path, files)
    rootfs = unpack_image(LayoutDir(path=layout).image("evil"), tmp_path / "rootfs")
    assert tree(rootfs) == ["app", "app/hard", "app/link", "app/run.sh"]
    assert os.readlink(rootfs / "app/link") == "run.sh"
    assert (rootfs / "app/hard").read_bytes() == b"#!/bin/sh\n"
    assert (rootfs / "app/run.sh").stat().st_mode & 0o7777 == 0o755  # setuid dropped


def test_whiteouts_remove_files_of_lower_layers(store: BlobStore, tmp_path: Path) -> None:
    def lower(tar: tarfile.TarFile) -> None:
        add_file(tar, "a/keep.txt")
        add_file(tar, "a/gone.txt")
        add_file(tar, "b/old.txt")

    def upper(tar: tarfile.TarFile) -> None:
        add_file(tar, "a/.wh.gone.txt", b"")
        add_file(tar, "b/new.txt")
        add_file(tar, "b/.wh..wh..opq", b"")

    layout = layout_of(store, tmp_path, lower, upper)
    rootfs = unpack_image(LayoutDir(path=layout).image("evil"), tmp_path / "rootfs")
    assert tree(rootfs) == ["a", "a/keep.txt", "b", "b/new.txt"]


@pytest.mark.parametrize(
    ("entry", "add"),
    [
        ("../escaped", lambda tar: add_file(tar, "../escaped")),
        ("ok/../../escaped", lambda tar: add_file(tar, "ok/../../escaped")),
        ("/etc/passwd", lambda tar: add_file(tar, "/etc/passwd")),
        ("out", lambda tar: add_special(tar, "out", tarfile.SYMTYPE, "../../escaped")),
        ("deep/out", lambda tar: add_special(tar, "deep/out", tarfile.SYMTYPE, "../x/../../escaped")),
        ("abs", lambda tar: add_special(tar, "abs", tarfile.SYMTYPE, "/etc/passwd")),
        ("hard", lambda tar: add_special(tar, "hard", tarfile.LNKTYPE, "../escaped")),
        ("hard", lambda tar: add_special(tar, "hard", tarfile.LNKTYPE, "/etc/passwd")),
        ("null", lambda tar: add_special(tar, "null", tarfile.CHRTYPE)),
        ("disk", lambda tar: add_special(tar, "disk", tarfile.BLKTYPE)),
        ("pipe", lambda tar: add_special(tar, "pipe", tarfile.FIFOTYPE)),
    ],
)
def test_unsafe_layer_entries_are_refused(
    store: BlobStore, tmp_path: Path, entry: str, add: Callable[[tarfile.TarFile], None]
) -> None:
    def layer(tar: tarfile.TarFile) -> None:
        add_file(tar, "app/first.txt")  # something is written before the bad entry
        add(tar)

    assert_refused(layout_of(store, tmp_path, layer), tmp_path, entry.replace(".", r"\."))


def test_writing_through_a_symlink_is_refused(store: BlobStore, tmp_path: Path) -> None:
    def lower(tar: tarfile.TarFile) -> None:
        add_special(tar, "etc", tarfile.SYMTYPE, "/etc")

    def upper(tar: tarfile.TarFile) -> None:
        add_file(tar, "etc/cron.d/evil", b"* * * * * root sh")

    # with container semantics an absolute link is allowed, but nothing may be written through it
    assert_refused(layout_of(store, tmp_path, lower, upper), tmp_path, "etc/cron.d/evil", rootfs_symlinks=True)


def test_symlink_escaping_through_another_symlink_is_refused(store: BlobStore, tmp_path: Path) -> None:
    def layer(tar: tarfile.TarFile) -> None:
        add_special(tar, "d/up", tarfile.SYMTYPE, "..")  # the root itself: fine alone
        add_special(tar, "out", tarfile.SYMTYPE, "d/up/../escaped")  # lexically inside, really outside

    assert_refused(layout_of(store, tmp_path, layer), tmp_path, "'out'")


def test_absolute_symlinks_inside_the_rootfs_are_allowed_on_request(store: BlobStore, tmp_path: Path) -> None:
    layout = layout_of(store, tmp_path, lambda tar: add_special(tar, "bin/sh", tarfile.SYMTYPE, "/usr/bin/dash"))
    image = LayoutDir(path=layout).image("evil")
    rootfs = unpack_image(image, tmp_path / "rootfs", rootfs_symlinks=True)
    assert os.readlink(rootfs / "bin/sh") == "/usr/bin/dash"
    with pytest.raises(UnsafePathError):
        unpack_image(image, tmp_path / "strict")


def test_tampered_layer_is_refused(store: BlobStore, tmp_path: Path) -> None:
    layout = layout_of(store, tmp_path, lambda tar: add_file(tar, "model.onnx", b"m" * 1000))
    image = LayoutDir(path=layout).image("evil")
    blob = layout / "blobs" / "sha256" / image.layers[0].digest.removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[-9] ^= 0xFF  # inside the gzip trailer: the tar still reads, the digest does not match
    blob.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match=image.layers[0].digest):
        unpack_image(image, tmp_path / "rootfs")
    assert not (tmp_path / "rootfs").exists()


def test_wrong_diff_id_is_refused(store: BlobStore, tmp_path: Path) -> None:
    image = raw_image(store, [tar_bytes(lambda tar: add_file(tar, "a"))])
    layout = write_layout(store, image, tmp_path / "layout", ref_name="evil")
    opened = LayoutDir(path=layout).image("evil")
    forged = oci.OciImage(
        manifest_digest=opened.manifest_digest,
        manifest_media_type=opened.manifest_media_type,
        manifest=opened.manifest,
        config_descriptor=opened.config_descriptor,
        config={**opened.config, "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}},
        layers=opened.layers,
        blobs=opened.blobs,
    )
    with pytest.raises(InvalidInputError, match="diff_id"):
        unpack_image(forged, tmp_path / "rootfs")
    assert not (tmp_path / "rootfs").exists()


def test_tampered_config_and_manifest_are_refused(store: BlobStore, tmp_path: Path) -> None:
    layout = layout_of(store, tmp_path, lambda tar: add_file(tar, "a"))
    image = LayoutDir(path=layout).image("evil")
    config_blob = layout / "blobs" / "sha256" / image.config_descriptor.digest.removeprefix("sha256:")
    config_blob.write_bytes(config_blob.read_bytes().replace(b"arm64", b"amd64"))
    with pytest.raises(InvalidInputError, match="hashes to"):
        LayoutDir(path=layout).image("evil")
    manifest_blob = layout / "blobs" / "sha256" / image.manifest_digest.removeprefix("sha256:")
    manifest_blob.write_bytes(manifest_blob.read_bytes() + b" ")
    with pytest.raises(InvalidInputError, match="longer than"):
        LayoutDir(path=layout).image("evil")


def rewrite_index(layout: Path, change: Callable[[dict[str, object]], None]) -> None:
    index = json.loads((layout / "index.json").read_text())
    change(index["manifests"][0])
    (layout / "index.json").write_text(json.dumps(index))


def test_unknown_manifest_media_type_is_refused(store: BlobStore, tmp_path: Path) -> None:
    layout = layout_of(store, tmp_path, lambda tar: add_file(tar, "a"))
    rewrite_index(layout, lambda entry: entry.update(mediaType="application/vnd.example.weird+json"))
    with pytest.raises(InvalidInputError, match=r"application/vnd\.example\.weird"):
        LayoutDir(path=layout).image("evil")
    rewrite_index(layout, lambda entry: entry.update(mediaType=oci.INDEX))
    with pytest.raises(InvalidInputError, match="multi-platform"):
        LayoutDir(path=layout).image("evil")


def test_unknown_layer_media_type_is_refused(store: BlobStore, tmp_path: Path) -> None:
    image = raw_image(store, [tar_bytes(lambda tar: add_file(tar, "a"))])
    manifest = json.loads(store.path(image.manifest_digest).read_bytes())
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+lz4"
    data = oci.canonical_json(manifest)
    digest, size = store.put_bytes(data)
    layout = write_layout(store, image, tmp_path / "layout", ref_name="evil")
    (layout / "blobs/sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    rewrite_index(layout, lambda entry: entry.update(digest=digest, size=size))
    with pytest.raises(InvalidInputError, match=r"tar\+lz4"):
        LayoutDir(path=layout).image("evil")


def test_missing_ref_names_the_available_ones(store: BlobStore, tmp_path: Path) -> None:
    layout = layout_of(store, tmp_path, lambda tar: add_file(tar, "a"))
    with pytest.raises(NotFoundError, match="evil"):
        LayoutDir(path=layout).image("other")


def test_blob_that_is_a_symlink_is_refused(store: BlobStore, tmp_path: Path) -> None:
    layout = layout_of(store, tmp_path, lambda tar: add_file(tar, "a"))
    image = LayoutDir(path=layout).image("evil")
    blob = layout / "blobs" / "sha256" / image.layers[0].digest.removeprefix("sha256:")
    (tmp_path / "secret").write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        unpack_image(image, tmp_path / "rootfs")


def archive_with(tmp_path: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    path = tmp_path / "evil.tar"
    path.write_bytes(tar_bytes(add))
    return path


@pytest.mark.parametrize(
    ("entry", "add"),
    [
        ("../index.json", lambda tar: add_file(tar, "../index.json", b"{}")),
        ("/oci-layout", lambda tar: add_file(tar, "/oci-layout", b"{}")),
        ("index.json", lambda tar: add_special(tar, "index.json", tarfile.SYMTYPE, "/etc/passwd")),
        ("blobs", lambda tar: add_special(tar, "blobs", tarfile.LNKTYPE, "oci-layout")),
        ("dev", lambda tar: add_special(tar, "dev", tarfile.CHRTYPE)),
    ],
)
def test_unsafe_archive_entries_are_refused(tmp_path: Path, entry: str, add: Callable[[tarfile.TarFile], None]) -> None:
    def layout(tar: tarfile.TarFile) -> None:
        add_file(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar)

    with pytest.raises(UnsafePathError, match=entry.replace(".", r"\.")):
        OciArchive(path=archive_with(tmp_path, layout))


def test_archive_with_a_tampered_blob_is_refused(store: BlobStore, tmp_path: Path) -> None:
    image = raw_image(store, [tar_bytes(lambda tar: add_file(tar, "a"))], ref_name="evil")
    good = write_oci_archive(store, image, tmp_path / "good.tar")
    buffer = io.BytesIO()
    with tarfile.open(good) as source, tarfile.open(fileobj=buffer, mode="w") as target:
        for member in source.getmembers():
            content = source.extractfile(member) if member.isfile() else None
            if member.name.endswith(image.config_digest.removeprefix("sha256:")) and content is not None:
                data = content.read().replace(b"arm64", b"amd64")
                target.addfile(member, io.BytesIO(data))
            else:
                target.addfile(member, content)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(buffer.getvalue())
    with pytest.raises(InvalidInputError, match="hashes to"), open_image(bad):
        pass
    with open_image(good) as opened:
        assert opened.manifest_digest == image.manifest_digest

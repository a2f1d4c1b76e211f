"""push_image and pull_image against CNCF Distribution (with and without htpasswd auth) and our own `/v2/`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from edgewise.cloud.errors import AuthenticationError, InvalidInputError, NotFoundError
from edgewise.cloud.images import StoreBlobs, VerifiedReader, oci, unpack_image
from edgewise.cloud.images.distribution import TransferEvent, parse_reference, pull_image, push_image
from edgewise.cloud.store.blobs import BlobStore

from tests.cloud.registry.conftest import Served, build
from tests.cloud.registry.support import REGISTRY_PASSWORD, REGISTRY_USER, TOKEN, DockerRegistry, skopeo
from tests.support import wait_until


def test_parse_reference() -> None:
    ref = parse_reference("docker://127.0.0.1:5000/team/iris:3")
    assert (ref.host, ref.repository, ref.tag, ref.digest, ref.reference) == (
        "127.0.0.1:5000",
        "team/iris",
        "3",
        None,
        "3",
    )
    digest = "sha256:" + "a" * 64
    pinned = parse_reference(f"localhost:5000/iris@{digest}")
    assert (pinned.repository, pinned.reference) == ("iris", digest)
    assert parse_reference("localhost:5000/iris").reference == "latest"
    for bad in ("iris:3", "localhost:5000/", "localhost:5000/iris@sha256:xyz", "localhost:5000/iris:bad tag"):
        with pytest.raises(InvalidInputError):
            parse_reference(bad)


def _uploads(registry: DockerRegistry, repository: str) -> int:
    """POSTs that started uploads, counted in the registry's access log after a marker request shows up."""
    marker = f"/v2/{repository}/tags/list?marker={len(registry.log())}"
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        client.get(f"http://{registry.host}{marker}")
    wait_until(lambda: marker in registry.log(), what="the registry to log the marker request")
    return registry.log().count(f'"POST /v2/{repository}/blobs/uploads/ ')


def _chunks(reader: VerifiedReader) -> Iterator[bytes]:
    while chunk := reader.read(1 << 16):
        yield chunk


def test_push_without_auth_skips_blobs_the_second_time(served: Served, registry: DockerRegistry) -> None:
    events: list[TransferEvent] = []
    target = f"{registry.host}/pushed/iris:1"
    digest = push_image(
        blobs=served.store, manifest=served.v1.manifest, target=target, progress=events.append, chunk_size=64 << 10
    )
    assert digest == served.v1.manifest_digest
    blobs = {served.v1.config_digest, *(layer.digest for layer in served.v1.layers)}
    uploaded = {event.digest for event in events if not event.skipped}
    assert uploaded == blobs
    big = max(served.v1.layers, key=lambda layer: layer.size)
    chunks = [event for event in events if event.digest == big.digest]
    assert len(chunks) > 1  # several PATCHes of 64 kB
    assert chunks[-1].done == big.size
    assert _uploads(registry, "pushed/iris") == len(blobs)

    again: list[TransferEvent] = []
    push_image(blobs=StoreBlobs(store=served.store), manifest=served.v1.manifest, target=target, progress=again.append)
    assert again and all(event.skipped for event in again)
    assert {event.digest for event in again} == blobs
    assert _uploads(registry, "pushed/iris") == len(blobs)

    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert info["Digest"] == served.v1.manifest_digest
    assert info["Layers"] == [layer.digest for layer in served.v1.layers]


def test_push_with_basic_auth(served: Served, auth_registry: DockerRegistry) -> None:
    target = f"{auth_registry.host}/secure/iris:2"
    with pytest.raises(AuthenticationError, match="401"):
        push_image(blobs=served.store, manifest=served.v2.manifest, target=target)
    with pytest.raises(AuthenticationError):
        push_image(
            blobs=served.store, manifest=served.v2.manifest, target=target, username=REGISTRY_USER, password="no"
        )
    digest = push_image(
        blobs=served.store,
        manifest=served.v2.manifest,
        target=target,
        username=REGISTRY_USER,
        password=REGISTRY_PASSWORD,
        chunk_size=1000,
    )
    assert digest == served.v2.manifest_digest
    info = json.loads(skopeo("inspect", "--tls-verify=false", *auth_registry.creds(), f"docker://{target}"))
    assert info["Digest"] == served.v2.manifest_digest

    image = pull_image(source=f"docker://{target}", username=REGISTRY_USER, password=REGISTRY_PASSWORD)
    assert image.manifest_digest == served.v2.manifest_digest
    with pytest.raises(AuthenticationError):
        pull_image(source=target)


def test_pull_from_cncf_distribution_verifies_every_layer(
    served: Served, registry: DockerRegistry, tmp_path: Path
) -> None:
    target = f"{registry.host}/pulled/iris:1"
    push_image(blobs=served.store, manifest=served.v1.manifest, target=target)
    image = pull_image(source=f"docker://{target}")
    assert image.manifest_digest == served.v1.manifest_digest
    assert image.manifest_media_type == oci.MANIFEST
    assert image.config_descriptor.digest == served.v1.config_digest
    assert tuple(image.diff_ids) == served.v1.diff_ids
    local = BlobStore(root=tmp_path / "copy")
    for layer in image.layers:
        with image.blobs.open_blob(layer) as reader:
            stored, size = local.put_stream(_chunks(reader), expected_digest=layer.digest)
            reader.read_to_end()
        assert (stored, size) == (layer.digest, layer.size)
    root = unpack_image(image, tmp_path / "rootfs")
    assert (root / "etc/edgewise/module.json").is_file()
    with pytest.raises(NotFoundError):
        pull_image(source=f"{registry.host}/pulled/iris:404")


def test_pull_from_our_registry(served: Served) -> None:
    image = pull_image(source=f"{served.server.host}/team/vision/resnet", username="device", password=TOKEN)
    assert image.manifest_digest == served.other.manifest_digest
    pinned = pull_image(source=f"{served.server.host}/iris@{served.v1.manifest_digest}", password=TOKEN)
    assert pinned.layers == served.v1.layers


def test_a_tampered_blob_in_the_registry_is_refused(
    served: Served, fresh_registry: DockerRegistry, tmp_path: Path
) -> None:
    image = build(served.store, "tampered", 1, b"\x08\x07tamper-me" * 1000)
    target = f"{fresh_registry.host}/tampered:1"
    push_image(blobs=served.store, manifest=image.manifest, target=target)
    layer = image.layers[0]
    stored = fresh_registry.blob_file(layer.digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    stored.chmod(0o644)
    stored.write_bytes(bytes(data))
    pulled = pull_image(source=target)  # manifest and config are intact
    with pytest.raises(InvalidInputError, match="tampered"), pulled.blobs.open_blob(layer) as reader:
        reader.read_to_end()
    with pytest.raises(InvalidInputError):
        unpack_image(pulled, tmp_path / "rootfs")
    assert not (tmp_path / "rootfs").exists()
    config_file = fresh_registry.blob_file(image.config_digest)
    config = bytearray(config_file.read_bytes())
    config[-2] ^= 0x01
    config_file.write_bytes(bytes(config))
    with pytest.raises(InvalidInputError, match="tampered"):
        pull_image(source=target)


def test_index_push_and_platform_pick(served: Served, registry: DockerRegistry) -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": oci.INDEX,
        "manifests": [
            {**served.v2.manifest.to_json(), "platform": {"os": "linux", "architecture": "arm64"}},
            {**served.v1.manifest.to_json(), "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }
    digest, size = served.store.put_bytes(oci.canonical_json(index))
    descriptor = oci.Descriptor(media_type=oci.INDEX, digest=digest, size=size)
    target = f"{registry.host}/multi/iris:both"
    assert push_image(blobs=served.store, manifest=descriptor, target=target) == digest
    assert pull_image(source=target).manifest_digest == served.v1.manifest_digest
    assert pull_image(source=target, platform="linux/arm64").manifest_digest == served.v2.manifest_digest
    with pytest.raises(NotFoundError, match="linux/amd64"):
        pull_image(source=target, platform="windows/amd64")

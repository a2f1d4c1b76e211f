"""ImageStore against real registries: CNCF Distribution, the workspace's /v2/, and a small server that misbehaves."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest
from edgewise.cloud.store.blobs import BlobStore
from edgewise.runtime.agent.errors import ImageError, ImageIntegrityError, RegistryUnavailableError
from edgewise.runtime.agent.images import ImageStore, RegistryCredentials, host_platform, parse_reference

from tests.cloud.registry.support import REGISTRY_PASSWORD, REGISTRY_USER, DockerRegistry
from tests.runtime.agent.images.support import (
    Entry,
    TinyRegistry,
    hand_image,
    index_of,
    push_model_image,
    rootfs_entries,
)
from tests.support import free_port

BUDGET = 1 << 30
MODEL_FILES = ("var/lib/edgewise/models", "etc/edgewise/module.json")


def _store(root: Path, registry_url: str, **kwargs: object) -> ImageStore:
    return ImageStore(root=root, budget_bytes=int(kwargs.pop("budget", BUDGET)), registry_url=registry_url, **kwargs)  # type: ignore[arg-type]


def _writable(root: Path) -> list[str]:
    return [
        str(p.relative_to(root))
        for p in [root, *root.rglob("*")]
        if not p.is_symlink() and p.lstat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    ]


# -- CNCF Distribution ------------------------------------------------------------------------------------------


def test_pulls_a_model_image_from_distribution(distribution: DockerRegistry, build_store: BlobStore, store_root: Path):
    reference = push_model_image(build_store, distribution.host, version=1)
    store = _store(store_root, f"http://{distribution.host}")
    seen: list[tuple[int, int]] = []

    image = store.ensure(reference, progress=lambda done, total: seen.append((done, total)))

    assert image.digest == parse_reference(reference).digest
    assert image.rootfs == store_root / "rootfs" / image.digest.replace(":", "-")
    for name in MODEL_FILES:
        assert (image.rootfs / name).exists(), name
    assert json.loads((image.rootfs / "etc/edgewise/module.json").read_text())
    assert image.config["Entrypoint"][0] == "edgewise-score"
    assert image.size >= 256 * 64
    assert _writable(image.rootfs) == []  # read-only to modules
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert store.cached(image.digest) == image
    assert store.usage_bytes() >= image.size
    assert [n for n in rootfs_entries(store_root / "rootfs") if n.startswith(".")] == []  # no scratch left


def test_basic_auth_and_refused_credentials(tmp_path: Path, build_store: BlobStore) -> None:
    registry = DockerRegistry(root=tmp_path / "auth", auth=True).start()
    try:
        reference = push_model_image(
            build_store, registry.host, version=2, username=REGISTRY_USER, password=REGISTRY_PASSWORD
        )
        good = RegistryCredentials(username=REGISTRY_USER, password=REGISTRY_PASSWORD)
        image = _store(tmp_path / "a", f"http://{registry.host}", credentials=good).ensure(reference)
        assert (image.rootfs / MODEL_FILES[0]).is_dir()

        bad = RegistryCredentials(username=REGISTRY_USER, password="wrong")
        with pytest.raises(ImageError, match="HTTP 401") as refused:
            _store(tmp_path / "b", f"http://{registry.host}", credentials=bad).ensure(reference)
        assert not isinstance(refused.value, RegistryUnavailableError)
        assert reference in str(refused.value)
    finally:
        registry.stop()


def test_a_tampered_blob_is_refused_and_nothing_is_unpacked(
    tmp_path: Path, build_store: BlobStore, store_root: Path
) -> None:
    registry = DockerRegistry(root=tmp_path / "tampered", auth=False).start()
    try:
        reference = push_model_image(build_store, registry.host, version=3)
        manifest = json.loads(registry.blob_file(parse_reference(reference).digest).read_bytes())
        layer = manifest["layers"][0]["digest"]
        path = registry.blob_file(layer)
        path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes()))
        store = _store(store_root, f"http://{registry.host}")

        with pytest.raises(ImageIntegrityError, match=layer):
            store.ensure(reference)

        assert store.cached(parse_reference(reference).digest) is None
        assert list(rootfs_entries(store_root / "rootfs")) == []
        blobs = {p.name for p in (store_root / "blobs/sha256").iterdir()}
        assert layer.removeprefix("sha256:") not in blobs
        assert layer.removeprefix("sha256:") + ".part" not in blobs
    finally:
        registry.stop()


def test_garbage_collection_and_the_disk_budget(
    distribution: DockerRegistry, build_store: BlobStore, tmp_path: Path
) -> None:
    first = push_model_image(build_store, distribution.host, version=4)
    second = push_model_image(build_store, distribution.host, version=5)
    url = f"http://{distribution.host}"

    store = _store(tmp_path / "gc", url)
    a, b = store.ensure(first), store.ensure(second)
    before = store.usage_bytes()
    freed = store.collect_garbage(keep={a.digest})
    assert freed >= b.size
    assert store.usage_bytes() == before - freed
    assert store.cached(b.digest) is None and not b.rootfs.exists()
    assert store.cached(a.digest) == a
    assert store.is_clean(keep={a.digest}) and store.is_clean(keep={a.digest, b.digest})
    assert not store.is_clean(keep=set())  # a would go
    assert store.collect_garbage(keep={a.digest}) == 0
    again = store.ensure(second)  # a pull since the last collection: the next one looks again
    assert not store.is_clean(keep={a.digest})
    assert store.collect_garbage(keep={a.digest}) >= again.size and store.cached(b.digest) is None
    crashed = tmp_path / "gc/rootfs" / f".{b.digest.replace(':', '-')}.pull-x1y2"
    (crashed / "root").mkdir(parents=True)
    store = _store(tmp_path / "gc", url)  # the agent that starts after the crash collects it
    store.collect_garbage(keep={a.digest})
    assert not crashed.exists()
    assert store.collect_garbage(keep=set()) > 0
    assert store.usage_bytes() == 0 and store.cached(a.digest) is None

    with pytest.raises(ImageError, match="disk budget") as refused:
        _store(tmp_path / "tiny-budget", url, budget=1000).ensure(first)
    assert not isinstance(refused.value, ImageIntegrityError)
    assert list(rootfs_entries(tmp_path / "tiny-budget/rootfs")) == []

    # One byte short of holding both images with their layers: the first image's layers make way.
    roomy = _store(tmp_path / "roomy", url)
    roomy.ensure(first), roomy.ensure(second)
    tight = _store(tmp_path / "tight", url, budget=roomy.usage_bytes() - 1)
    a = tight.ensure(first)
    b = tight.ensure(second)
    assert tight.usage_bytes() <= tight.budget_bytes
    assert tight.cached(a.digest) == a and tight.cached(b.digest) == b
    manifest = json.loads((tmp_path / "tight/blobs/sha256" / a.digest.removeprefix("sha256:")).read_bytes())
    cached_layers = [
        (tmp_path / "tight/blobs/sha256" / x["digest"].removeprefix("sha256:")).exists() for x in manifest["layers"]
    ]
    assert not all(cached_layers)


def test_a_second_ensure_makes_no_request(tiny: TinyRegistry, store_root: Path) -> None:
    reference = tiny.add(hand_image([Entry("var/lib/edgewise/models/m/1/model.onnx", b"onnx")]))
    store = _store(store_root, tiny.url)
    first = store.ensure(reference)
    asked = len(tiny.requests)
    tiny.stop()

    again = store.ensure(reference)
    assert again == first
    assert len(tiny.requests) == asked
    reopened = _store(store_root, tiny.url)  # a restarted agent finds it too
    assert reopened.ensure(reference) == first


def test_concurrent_ensures_unpack_once(tiny: TinyRegistry, store_root: Path) -> None:
    image = hand_image([Entry(f"data/{i}", bytes([i]) * 5000) for i in range(20)])
    reference = tiny.add(image)
    store = _store(store_root, tiny.url)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(store.ensure(reference))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 4 and all(r == results[0] for r in results)
    manifest_requests = [p for p, _ in tiny.requests if "/manifests/" in p]
    assert len(manifest_requests) == 1


# -- resuming ---------------------------------------------------------------------------------------------------


def test_a_part_file_is_continued_with_a_range_request(tiny: TinyRegistry, store_root: Path) -> None:
    image = hand_image([Entry("big", bytes(range(256)) * 4000)], env={"A": "1"})
    reference = tiny.add(image)
    layer = image.layer()
    data = image.blobs[layer][1]
    part = store_root / "blobs/sha256" / (layer.removeprefix("sha256:") + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    inode = part.stat().st_ino

    result = _store(store_root, tiny.url).ensure(reference)

    assert tiny.ranges() == ["bytes=1000-"]
    final = store_root / "blobs/sha256" / layer.removeprefix("sha256:")
    assert final.stat().st_ino == inode  # the same file, extended, then renamed
    assert final.read_bytes() == data
    assert (result.rootfs / "big").stat().st_size == 256 * 4000
    assert result.config["Env"] == ["A=1"]


def test_a_broken_download_resumes_on_the_next_ensure(tiny: TinyRegistry, store_root: Path) -> None:
    image = hand_image([Entry("big", bytes(range(256)) * 4000)])
    reference = tiny.add(image)
    layer = image.layer()
    tiny.cut_after[layer] = 3000
    store = _store(store_root, tiny.url)

    with pytest.raises(RegistryUnavailableError):
        store.ensure(reference)
    part = store_root / "blobs/sha256" / (layer.removeprefix("sha256:") + ".part")
    assert part.stat().st_size == 3000
    assert list(rootfs_entries(store_root / "rootfs")) == []

    assert (store.ensure(reference).rootfs / "big").is_file()
    assert tiny.ranges() == ["bytes=3000-"]


def test_a_damaged_part_file_is_fetched_again_from_the_start(tiny: TinyRegistry, store_root: Path) -> None:
    image = hand_image([Entry("big", bytes(range(256)) * 400)])
    reference = tiny.add(image)
    layer = image.layer()
    part = store_root / "blobs/sha256" / (layer.removeprefix("sha256:") + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 500)
    assert (_store(store_root, tiny.url).ensure(reference).rootfs / "big").is_file()
    blob_requests = [h.get("Range") for p, h in tiny.requests if p.endswith(layer)]
    assert blob_requests == ["bytes=500-", None]


# -- unsafe and malformed images ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entries",
    [
        [Entry("../x", b"out")],
        [Entry("ok", b"fine"), Entry("a/../../x", b"out")],
        [Entry("up", link="../../etc")],
        [Entry("abs", link="/etc/passwd")],
        [Entry("d", link=".."), Entry("d/x", b"through the link")],
    ],
    ids=["dotdot", "nested-dotdot", "symlink-up", "symlink-absolute", "write-through-link"],
)
def test_an_entry_escaping_its_root_is_refused(tiny: TinyRegistry, store_root: Path, entries: list[Entry]) -> None:
    reference = tiny.add(hand_image(entries))
    store = _store(store_root, tiny.url)
    with pytest.raises(ImageIntegrityError, match="unsafe"):
        store.ensure(reference)
    assert list(rootfs_entries(store_root / "rootfs")) == []
    assert not (store_root.parent / "x").exists()


def test_served_bytes_that_do_not_match_are_refused(tiny: TinyRegistry, store_root: Path) -> None:
    image = hand_image([Entry("f", b"content")])
    reference = tiny.add(image)
    tiny.tamper.add(image.layer())
    with pytest.raises(ImageIntegrityError, match="hashes to"):
        _store(store_root, tiny.url).ensure(reference)
    assert list(rootfs_entries(store_root / "rootfs")) == []

    tiny.tamper = {image.manifest}
    with pytest.raises(ImageIntegrityError, match="manifest"):
        _store(store_root, tiny.url).ensure(reference)


def test_docker_manifests_and_platform_indexes(tiny: TinyRegistry, store_root: Path) -> None:
    docker = hand_image([Entry("which", b"docker")], docker=True)
    assert (_store(store_root, tiny.url).ensure(tiny.add(docker)).rootfs / "which").read_bytes() == b"docker"

    mine, other = host_platform(), "linux/s390x"
    index = index_of({other: hand_image([Entry("which", b"other")]), mine: hand_image([Entry("which", b"mine")])})
    image = _store(store_root, tiny.url).ensure(tiny.add(index))
    assert image.digest == index.manifest
    assert (image.rootfs / "which").read_bytes() == b"mine"

    only_other = index_of({other: hand_image([Entry("which", b"nope")])})
    with pytest.raises(ImageError, match=mine):
        _store(store_root, tiny.url).ensure(tiny.add(only_other))


# -- auth and registry errors --------------------------------------------------------------------------------------


def test_bearer_token_challenge(tiny: TinyRegistry, store_root: Path) -> None:
    tiny.token = "tok-123"
    reference = tiny.add(hand_image([Entry("f", b"x")]))
    creds = RegistryCredentials(username="device", password="secret")
    assert (_store(store_root / "a", tiny.url, credentials=creds).ensure(reference).rootfs / "f").is_file()
    token_requests = [h for p, h in tiny.requests if p.startswith("/token")]
    assert len(token_requests) == 1
    assert "scope=repository%3Ahand%2Fmade%3Apull" in next(p for p, _ in tiny.requests if p.startswith("/token"))

    wrong = RegistryCredentials(username="device", password="nope")
    with pytest.raises(ImageError, match="401"):
        _store(store_root / "b", tiny.url, credentials=wrong).ensure(reference)


def test_registry_errors(tiny: TinyRegistry, store_root: Path) -> None:
    missing = f"{tiny.host}/hand/made@sha256:{'0' * 64}"
    with pytest.raises(ImageError, match="HTTP 404") as not_found:
        _store(store_root, tiny.url).ensure(missing)
    assert missing in str(not_found.value)
    assert not isinstance(not_found.value, RegistryUnavailableError)

    tiny.fail_with = 503
    with pytest.raises(RegistryUnavailableError, match="HTTP 503"):
        _store(store_root, tiny.url).ensure(missing)

    refused = f"127.0.0.1:{free_port()}/hand/made@sha256:{'0' * 64}"
    with pytest.raises(RegistryUnavailableError, match="could not fetch"):
        _store(store_root, f"http://{refused.split('/')[0]}").ensure(refused)


def test_references_must_be_pinned_by_digest() -> None:
    ref = parse_reference(f"127.0.0.1:5000/models/iris@sha256:{'a' * 64}")
    assert (ref.host, ref.repository) == ("127.0.0.1:5000", "models/iris")
    for bad in ("127.0.0.1:5000/iris:1", "iris@sha256:" + "a" * 64, f"h/iris@sha256:{'A' * 64}", "h/Iris@sha256:x"):
        with pytest.raises(ImageError, match="by digest"):
            parse_reference(bad)

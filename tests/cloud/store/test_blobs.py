"""The blob store: content addressing, dedup, refused uploads leave nothing, digest checks, read-only files."""

from __future__ import annotations

import hashlib
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgewise.cloud.errors import InvalidInputError, NotFoundError
from edgewise.cloud.store.blobs import BlobStore


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_and_read_back(blobs: BlobStore, tmp_path: Path) -> None:
    data = b"weights" * 1000
    digest, size = blobs.put_bytes(data)
    assert (digest, size) == (_digest(data), len(data))
    hex_digits = digest.removeprefix("sha256:")
    assert blobs.path(digest) == blobs.root / "sha256" / hex_digits[:2] / hex_digits
    assert blobs.path(digest).read_bytes() == data
    with blobs.open(digest) as handle:
        assert handle.read() == data
    assert stat.S_IMODE(blobs.path(digest).stat().st_mode) == 0o444
    source = tmp_path / "model.onnx"
    source.write_bytes(b"\x00" * (3 << 20))
    assert blobs.put_file(source) == (_digest(source.read_bytes()), 3 << 20)


def test_same_content_is_stored_once(blobs: BlobStore) -> None:
    first = blobs.put_bytes(b"shared")
    inode = blobs.path(first[0]).stat().st_ino
    assert blobs.put_stream([b"sha", b"red"]) == first
    assert blobs.put_stream([b"shared"], expected_digest=first[0]) == first
    assert blobs.path(first[0]).stat().st_ino == inode  # never rewritten
    assert [p.name for p in _files(blobs.root)] == [first[0].removeprefix("sha256:")]


def test_concurrent_puts_of_one_content(blobs: BlobStore) -> None:
    data = b"x" * 100_000
    results: list[tuple[str, int]] = []
    threads = [threading.Thread(target=lambda: results.append(blobs.put_bytes(data))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results) == {(_digest(data), len(data))}
    assert len(_files(blobs.root)) == 1


def test_digest_mismatch_leaves_nothing(blobs: BlobStore) -> None:
    wrong = _digest(b"something else")
    with pytest.raises(InvalidInputError, match="hashes to"):
        blobs.put_stream([b"actual ", b"content"], expected_digest=wrong)
    assert _files(blobs.root) == []
    assert not blobs.exists(wrong) and not blobs.exists(_digest(b"actual content"))


def test_failing_stream_leaves_nothing(blobs: BlobStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        blobs.put_stream(chunks())
    assert _files(blobs.root) == []


@pytest.mark.parametrize(
    "digest",
    ["", "sha256:", "sha256:abc", "sha512:" + "a" * 64, "sha256:" + "A" * 64, "a" * 64, "sha256:" + "g" * 64],
)
def test_bad_digest_strings(blobs: BlobStore, digest: str) -> None:
    for call in (blobs.exists, blobs.path, lambda d: blobs.missing([d])):
        with pytest.raises(InvalidInputError, match="invalid digest"):
            call(digest)
    with pytest.raises(InvalidInputError):
        blobs.put_stream([b"x"], expected_digest=digest)
    assert _files(blobs.root) == []


def test_missing_and_not_found(blobs: BlobStore) -> None:
    have, _ = blobs.put_bytes(b"have")
    absent = _digest(b"absent")
    assert blobs.missing([have, absent, absent, have]) == [absent]
    assert blobs.exists(have) and not blobs.exists(absent)
    with pytest.raises(NotFoundError, match="upload it first"):
        blobs.path(absent)
    with pytest.raises(NotFoundError):
        blobs.open(absent)

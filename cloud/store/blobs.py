"""Content-addressed blobs on the local filesystem: `root/sha256/<2 hex>/<64 hex>`.

Snapshots, artifacts and model files all point at blobs by digest, so a content shared by many runs is
stored once. A blob appears only complete: it is written to a temporary file on the same filesystem, synced,
checked and then linked into place, and an existing blob is never rewritten. Blobs are read-only (0444).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from edgewise.cloud.errors import InvalidInputError, NotFoundError

CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def check_digest(digest: str) -> str:
    """Return the 64 hex digits of an OCI-style `sha256:<hex>` digest, or raise InvalidInputError."""
    match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise InvalidInputError(f"invalid digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits")
    return match.group(1)


class BlobStore:
    """The blobs of one workspace; safe to share between threads and processes."""

    def __init__(self, *, root: Path) -> None:
        self.root = root
        self._blobs = root / "sha256"
        self._incoming = root / "incoming"  # same filesystem as the blobs, so the final link is atomic
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._incoming.mkdir(parents=True, exist_ok=True)

    def _location(self, digest: str) -> Path:
        hex_digits = check_digest(digest)
        return self._blobs / hex_digits[:2] / hex_digits

    def exists(self, digest: str) -> bool:
        return self._location(digest).is_file()

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests that have no blob yet, each once, in the order given."""
        seen: set[str] = set()
        result: list[str] = []
        for digest in digests:
            if digest in seen:
                continue
            seen.add(digest)
            if not self.exists(digest):
                result.append(digest)
        return result

    def path(self, digest: str) -> Path:
        location = self._location(digest)
        if not location.is_file():
            raise NotFoundError(f"no blob {digest}; upload it first")
        return location

    def open(self, digest: str) -> BinaryIO:
        return self.path(digest).open("rb")

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put_stream([data])

    def put_file(self, path: Path) -> tuple[str, int]:
        """Store a copy of the file at `path`; answer its digest and size."""
        with path.open("rb") as source:
            return self.put_stream(_chunks(source))

    def put_stream(self, chunks: Iterable[bytes], *, expected_digest: str | None = None) -> tuple[str, int]:
        """Store the concatenated chunks; with `expected_digest`, refuse content that does not hash to it.

        Nothing is left behind when the content is refused or the chunks fail midway.
        """
        if expected_digest is not None:
            check_digest(expected_digest)
        hasher = hashlib.sha256()
        size = 0
        fd, temp_name = tempfile.mkstemp(dir=self._incoming, prefix="blob-")
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = f"sha256:{hasher.hexdigest()}"
            if expected_digest is not None and digest != expected_digest:
                raise InvalidInputError(
                    f"the uploaded content hashes to {digest}, not {expected_digest}: it was corrupted or "
                    "the digest is wrong; upload it again"
                )
            target = self._location(digest)
            if not target.exists():
                os.chmod(temp, 0o444)
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_into_place(temp, target)
            return digest, size
        finally:
            temp.unlink(missing_ok=True)


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk


def _link_into_place(temp: Path, target: Path) -> None:
    """Make `temp` visible as `target` atomically, leaving an existing `target` untouched."""
    try:
        os.link(temp, target)
    except FileExistsError:
        return  # stored meanwhile by someone else: same content
    except OSError:
        if target.exists():
            return
        os.rename(temp, target)  # filesystems without hard links; content-addressed, so a race is harmless
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

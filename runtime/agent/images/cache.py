"""Blobs by digest on disk: `blobs/sha256/<hex>`, verified while they stream in, resumable across restarts.

A download goes to `<hex>.part` and is hashed as it is written; a broken-off download leaves the part file,
and the next attempt asks the registry for the rest with an HTTP Range request (hashing the part's bytes
first). Only a blob whose size and digest match is renamed to its final name, so a file under a digest's
name always holds that digest's bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from edgewise.runtime.agent.errors import ImageIntegrityError, RegistryUnavailableError
from edgewise.runtime.agent.images.registry import BlobResponse
from edgewise.runtime.oci import oci

PART = ".part"
_CHUNK = 1 << 20

Opener = Callable[[int], BlobResponse]
"""Opens the blob from a byte offset (the registry may answer from 0 instead)."""


class BlobCache:
    """The blob folder of the image store. Not locked: the store serialises work on one digest."""

    def __init__(self, *, root: Path) -> None:
        self.root = root
        self._folder = root / "sha256"
        self._folder.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self._folder / oci.check_digest(digest).removeprefix("sha256:")

    def part_path(self, digest: str) -> Path:
        return self._folder / (oci.check_digest(digest).removeprefix("sha256:") + PART)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, digest: str, data: bytes) -> Path:
        """Store small verified content (a manifest) under its digest."""
        if oci.sha256_digest(data) != digest:
            raise ImageIntegrityError(f"content stored as {digest} hashes to {oci.sha256_digest(data)}")
        path = self.path(digest)
        if not path.is_file():
            part = self.part_path(digest)
            part.write_bytes(data)
            os.replace(part, path)
        return path

    def fetch(self, digest: str, size: int, opener: Opener, *, progress: Callable[[int], None] | None = None) -> Path:
        """The blob's file, downloaded (or its part file continued) and verified when not cached yet.

        A continued download that does not verify is fetched once more from the start before giving up, in
        case the part file itself was damaged.
        """
        path = self.path(digest)
        if path.is_file():
            return path
        part = self.part_path(digest)
        resumed = part.is_file() and 0 < part.stat().st_size < size
        try:
            self._download(digest, size, opener, part, progress)
        except ImageIntegrityError:
            part.unlink(missing_ok=True)
            if not resumed:
                raise
            self._download(digest, size, opener, part, progress)
        os.replace(part, path)
        return path

    def _download(
        self, digest: str, size: int, opener: Opener, part: Path, progress: Callable[[int], None] | None
    ) -> None:
        hasher = hashlib.sha256()
        have = part.stat().st_size if part.is_file() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size and size > 0:
            # A complete part file (the agent stopped before renaming it): just verify it.
            _hash_file(part, hasher, have)
            _verify(digest, size, have, hasher)
            return
        response = opener(have)
        try:
            if response.offset != have:
                have = 0  # the registry sent the whole blob
            else:
                _hash_file(part, hasher, have)
            with part.open("r+b" if have else "wb") as out:
                out.seek(have)
                out.truncate()
                if progress is not None and have:
                    progress(have)
                while chunk := response.read(min(_CHUNK, size - have + 1)):
                    hasher.update(chunk)
                    have += len(chunk)
                    if have > size:
                        raise ImageIntegrityError(
                            f"blob {digest} is longer than the {size} bytes its manifest says: the registry served "
                            "other content"
                        )
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                    if have == size:
                        break
                out.flush()
                os.fsync(out.fileno())
        finally:
            response.close()
        if have < size:
            raise RegistryUnavailableError(
                f"blob {digest} ended after {have} of {size} bytes; the rest is fetched on the next try"
            )
        _verify(digest, size, have, hasher)

    def remove(self, digest: str) -> int:
        """Delete the blob and its part file; the bytes freed."""
        freed = 0
        for path in (self.path(digest), self.part_path(digest)):
            with contextlib.suppress(FileNotFoundError):
                freed += path.stat().st_size
                path.unlink()
        return freed

    def entries(self) -> Iterator[tuple[str, Path]]:
        """(digest, file) of every blob and part file in the cache."""
        for path in sorted(self._folder.iterdir()):
            name = path.name.removesuffix(PART)
            if len(name) == 64 and path.is_file():
                yield "sha256:" + name, path

    def usage_bytes(self) -> int:
        total = 0
        for _, path in self.entries():
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total


def _hash_file(path: Path, hasher: hashlib._Hash, length: int) -> None:
    if length <= 0:
        return
    with path.open("rb") as stream:
        remaining = length
        while remaining > 0 and (chunk := stream.read(min(_CHUNK, remaining))):
            hasher.update(chunk)
            remaining -= len(chunk)


def _verify(digest: str, size: int, have: int, hasher: hashlib._Hash) -> None:
    actual = "sha256:" + hasher.hexdigest()
    if have != size or actual != digest:
        raise ImageIntegrityError(
            f"blob {digest} hashes to {actual} ({have} bytes): the registry served other content, "
            "or it was damaged on the way"
        )

"""Images on the device: pulled by digest, verified, unpacked once into a read-only root, kept within a budget.

    ROOT/blobs/sha256/<hex>[.part]    manifests, configs and layers (layers only until their image is unpacked
                                      and room is needed)
    ROOT/rootfs/sha256-<hex>/         an unpacked image, files read-only
    ROOT/rootfs/sha256-<hex>.json     what the agent knows of it: config, size, the blobs it was made of

An image exists when its `.json` does: the root is renamed into place first and the record written after it,
so a crash in between leaves a root without record, which the next `ensure` replaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgewise.runtime.agent.errors import ImageError, ImageIntegrityError
from edgewise.runtime.agent.images.cache import BlobCache
from edgewise.runtime.agent.images.registry import (
    ImageReference,
    RegistryClient,
    RegistryCredentials,
    parse_reference,
)
from edgewise.runtime.oci import oci, unpack
from edgewise.runtime.oci.errors import ImageNotFoundError, InvalidImageError, OciError

T = TypeVar("T")
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True, kw_only=True)
class UnpackedImage:
    """An image ready to run: its root folder (read-only to modules) and its config."""

    digest: str
    rootfs: Path
    config: Mapping[str, Any]
    size: int


def host_platform() -> str:
    """`linux/amd64` or `linux/arm64`: the platform picked from a multi-platform index."""
    machine = platform.machine().lower()
    return f"linux/{_ARCHITECTURES.get(machine, machine)}"


class ImageStore:
    """Pulls, verifies, unpacks and collects images under `root`, within `budget_bytes` of disk. Thread-safe."""

    def __init__(
        self,
        *,
        root: Path,
        budget_bytes: int,
        credentials: RegistryCredentials | None = None,
        registry_url: str | None = None,
    ) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self._blobs = BlobCache(root=root / "blobs")
        self._rootfs = root / "rootfs"
        self._rootfs.mkdir(parents=True, exist_ok=True)
        self._client = RegistryClient(credentials=credentials, registry_url=registry_url)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._busy: dict[str, int] = {}  # image digest -> ensure calls running on it
        self._pulls = 0  # pulls finished (or failed) so far: each may leave images and blobs behind
        # (keep, pulls) of the last collection that left nothing but `keep`: one asked again with as much kept
        # and no pull since would find nothing, so it is skipped (a module start asks after every pass)
        self._clean: tuple[frozenset[str], int] | None = None

    # -- public ------------------------------------------------------------------------------------------------

    def ensure(self, reference: str, *, progress: Callable[[int, int], None] | None = None) -> UnpackedImage:
        """The unpacked image `reference` names, pulled and unpacked first when it is not cached (blocking)."""
        ref = parse_reference(reference)
        with self._working_on(ref.digest), self._lock(ref.digest):
            image = self.cached(ref.digest)
            if image is not None:
                return image
            try:
                return self._pull(ref, progress)
            finally:
                with self._guard:
                    self._pulls += 1

    def cached(self, digest: str) -> UnpackedImage | None:
        """The unpacked image `digest`, or None when it is not (completely) on disk."""
        record = self._read_record(digest)
        rootfs = self._root_of(digest)
        if record is None or not rootfs.is_dir():
            return None
        config = record.get("config")
        return UnpackedImage(
            digest=digest,
            rootfs=rootfs,
            config=config if isinstance(config, dict) else {},
            size=int(record.get("size", 0)),
        )

    def is_clean(self, *, keep: Collection[str]) -> bool:
        """Whether `collect_garbage(keep=keep)` would find nothing: no pull since the last collection, and it kept
        no more than `keep`. Cheap enough for the event loop, so a caller can skip a worker thread's hop."""
        kept = frozenset(keep)
        with self._guard:
            return self._clean is not None and kept >= self._clean[0] and self._pulls == self._clean[1]

    def collect_garbage(self, *, keep: Collection[str]) -> int:
        """Remove every image whose digest is not in `keep` (and not being pulled), and blobs no kept image uses."""
        if self.is_clean(keep=keep):
            return 0
        kept = frozenset(keep)
        with self._guard:
            pulls = self._pulls
            protected = set(kept) | set(self._busy)
        freed = 0
        for digest in self._image_digests():
            if digest not in protected:
                freed += self._remove_image(digest)
        for leftover in self._rootfs.glob(".sha256-*.pull-*"):
            if leftover.name[1:].split(".", 1)[0].replace("-", ":", 1) not in protected:
                _remove_tree(leftover)  # a pull interrupted by a crash
        used = self._blobs_in_use(protected)
        for digest, path in list(self._blobs.entries()):
            if digest not in used:
                freed += _unlink(path)
        with self._guard:
            self._clean = (kept, pulls) if protected == kept else None
        return freed

    def usage_bytes(self) -> int:
        """Bytes of blobs, part files and unpacked images under `root`."""
        total = self._blobs.usage_bytes()
        for digest in self._image_digests():
            record = self._read_record(digest)
            total += int(record.get("size", 0)) if record else 0
        return total

    # -- pulling -----------------------------------------------------------------------------------------------

    def _pull(self, ref: ImageReference, progress: Callable[[int, int], None] | None) -> UnpackedImage:
        descriptor, manifests = self._fetch_manifest(ref)
        manifest = _json_object(self._blobs.path(descriptor.digest).read_bytes(), ref)
        config = _mapped(lambda: oci.Descriptor.from_json(manifest.get("config"), where=f"the config of {ref}"), ref)
        if config.size > oci.MAX_JSON_BYTES:
            raise ImageError(f"the config of {ref} has {config.size} bytes, over {oci.MAX_JSON_BYTES}")
        kept = [*manifests, config.digest]
        with self._working_on(*kept):
            self._fetch(ref, config, None)
            image = _mapped(lambda: unpack.load_image(_CacheBlobs(cache=self._blobs), descriptor), ref)
            layers = [layer.digest for layer in image.layers]
            with self._working_on(*layers):
                missing = [layer for layer in image.layers if not self._blobs.has(layer.digest)]
                total, done = sum(layer.size for layer in missing), 0
                self._make_room(total, ref=ref)

                def advanced(count: int) -> None:
                    nonlocal done
                    done += count
                    if progress is not None:
                        progress(done, total)

                for layer in missing:
                    self._fetch(ref, layer, advanced)
                size = self._unpack(ref, image)
                record = {"reference": str(ref), "config": image.config.get("config") or {}, "size": size}
                _write_json(self._record_path(ref.digest), {**record, "blobs": kept, "layers": layers})
        try:
            self._make_room(0, ref=ref)
        except ImageError:
            self._remove_image(ref.digest)
            raise
        result = self.cached(ref.digest)
        assert result is not None
        return result

    def _fetch(self, ref: ImageReference, blob: oci.Descriptor, progress: Callable[[int], None] | None) -> None:
        with self._lock(blob.digest):
            self._blobs.fetch(
                blob.digest,
                blob.size,
                lambda offset: self._client.blob(ref, blob.digest, offset=offset),
                progress=progress,
            )

    def _fetch_manifest(self, ref: ImageReference) -> tuple[oci.Descriptor, list[str]]:
        """The image manifest to unpack (from an index: the host's platform), and the manifest blobs on the way."""
        body, media_type = self._client.manifest(ref, ref.digest)
        self._blobs.put(ref.digest, body)
        seen = [ref.digest]
        if media_type in (oci.INDEX, oci.DOCKER_MANIFEST_LIST):
            child = _pick_platform(body, ref=ref)
            body, media_type = self._client.manifest(ref, child.digest)
            self._blobs.put(child.digest, body)
            seen.append(child.digest)
        return oci.Descriptor(media_type=media_type, digest=seen[-1], size=len(body)), seen

    def _unpack(self, ref: ImageReference, image: oci.OciImage) -> int:
        """Unpack into a scratch folder, make it read-only, rename it into place; answers its size."""
        destination = self._root_of(ref.digest)
        if destination.exists():
            _remove_tree(destination)  # left by a crash before its record was written
        scratch = Path(tempfile.mkdtemp(dir=self._rootfs, prefix=f".{destination.name}.pull-"))
        try:
            root = scratch / "root"
            _mapped(lambda: unpack.unpack_image(image, root), ref)
            size = _make_read_only(root)
            os.rename(root, destination)
        finally:
            _remove_tree(scratch)
        return size

    # -- disk budget -------------------------------------------------------------------------------------------

    def _make_room(self, needed: int, *, ref: ImageReference) -> None:
        """Free space for `needed` more bytes, or raise ImageError naming the budget.

        Blobs no image uses go first (abandoned downloads too), then layers of images already unpacked (they can
        be fetched again). Manifests and configs of kept images, and whatever a running pull uses, stay.
        """
        if self.usage_bytes() + needed <= self.budget_bytes:
            return
        with self._guard:
            busy = set(self._busy)
        records = [r for d in self._image_digests() if (r := self._read_record(d)) is not None]
        small = {str(b) for r in records for b in r.get("blobs", [])}
        layers = {str(b) for r in records for b in r.get("layers", [])}
        entries = list(self._blobs.entries())
        orphans = [(d, p) for d, p in entries if d not in small and d not in layers]
        redundant = [(d, p) for d, p in entries if d in layers and d not in small]
        for digest, path in (*orphans, *redundant):
            if self.usage_bytes() + needed <= self.budget_bytes:
                return
            if digest not in busy:
                _unlink(path)
        usage = self.usage_bytes()
        if usage + needed <= self.budget_bytes:
            return
        raise ImageError(
            f"image {ref} needs {needed} more bytes but the disk budget of {self.budget_bytes} bytes has "
            f"{max(self.budget_bytes - usage, 0)} left ({usage} in use); remove unused modules or raise the "
            "agent's --disk-budget-bytes"
        )

    # -- bookkeeping -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _working_on(self, *digests: str) -> Iterator[None]:
        """Mark images or blobs as in use by a pull, so that collection and the budget leave them alone."""
        with self._guard:
            for digest in digests:
                self._busy[digest] = self._busy.get(digest, 0) + 1
        try:
            yield
        finally:
            with self._guard:
                for digest in digests:
                    self._busy[digest] -= 1
                    if not self._busy[digest]:
                        del self._busy[digest]

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())

    def _root_of(self, digest: str) -> Path:
        return self._rootfs / oci.check_digest(digest).replace(":", "-")

    def _record_path(self, digest: str) -> Path:
        return self._rootfs / (oci.check_digest(digest).replace(":", "-") + ".json")

    def _read_record(self, digest: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self._record_path(digest).read_bytes())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _image_digests(self) -> list[str]:
        found = set()
        for path in self._rootfs.iterdir():
            name = path.name.removesuffix(".json")
            if name.startswith("sha256-") and len(name) == 71:
                found.add(name.replace("-", ":", 1))
        return sorted(found)

    def _blobs_in_use(self, images: Collection[str]) -> set[str]:
        used = set(images)
        for digest in images:
            record = self._read_record(digest)
            if record is not None:
                used.update(str(b) for b in (*record.get("blobs", []), *record.get("layers", [])))
        return used

    def _remove_image(self, digest: str) -> int:
        record = self._read_record(digest)
        freed = int(record.get("size", 0)) if record else 0
        self._record_path(digest).unlink(missing_ok=True)
        root = self._root_of(digest)
        if root.exists():
            if record is None:
                freed += _tree_size(root)
            _remove_tree(root)
        return freed


class _CacheBlobs:
    """The blob cache as an OCI BlobReader: verified reads, ImageNotFoundError for blobs not fetched yet."""

    def __init__(self, *, cache: BlobCache) -> None:
        self._cache = cache

    def open_blob(self, descriptor: oci.Descriptor) -> oci.VerifiedReader:
        path = self._cache.path(descriptor.digest)
        try:
            stream = path.open("rb")
        except FileNotFoundError:
            raise ImageNotFoundError(f"blob {descriptor.digest} is not in the cache") from None
        return oci.VerifiedReader(raw=stream, descriptor=descriptor)


def _pick_platform(index_bytes: bytes, *, ref: ImageReference) -> oci.Descriptor:
    wanted = host_platform()
    try:
        index = json.loads(index_bytes)
        entries = index["manifests"]
        children = [oci.Descriptor.from_json(e, where=f"entry {i} of index {ref}") for i, e in enumerate(entries)]
    except (ValueError, KeyError, TypeError, OciError) as error:
        raise ImageIntegrityError(f"the image index {ref} is malformed: {error}") from None
    offered = []
    for child in children:
        plat = child.platform or {}
        name = f"{plat.get('os', '?')}/{plat.get('architecture', '?')}"
        offered.append(name)
        if name == wanted and child.media_type in oci.IMAGE_MANIFESTS:
            return child
    raise ImageError(f"image {ref} has no {wanted} variant; it offers {sorted(set(offered))}")


def _json_object(body: bytes, ref: ImageReference) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ImageIntegrityError(f"the manifest of {ref} is not a JSON object")
    return value


def _mapped(action: Callable[[], T], ref: ImageReference) -> T:
    """Run an OCI reader step; malformed, tampered or unsafe content is ImageIntegrityError."""
    try:
        return action()
    except InvalidImageError as error:
        raise ImageIntegrityError(f"image {ref} is corrupt or unsafe: {error}") from None
    except OciError as error:
        raise ImageError(f"image {ref} cannot be used: {error}") from None


def _make_read_only(root: Path) -> int:
    """chmod a-w over the tree (links untouched); answers its size in bytes, hard links counted once."""
    size = 0
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in (*files, *dirs):
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                size += info.st_size
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o222)
    os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) & ~0o222)
    return size


def _tree_size(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(folder, name))
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def _remove_tree(path: Path) -> None:
    """rmtree that first gives folders back the write bit it needs (roots are made read-only)."""
    if not path.exists():
        return
    for folder, dirs, _ in os.walk(path):
        for name in dirs:
            target = os.path.join(folder, name)
            if not os.path.islink(target):
                with contextlib.suppress(OSError):
                    os.chmod(target, 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _unlink(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(value, sort_keys=True))
    os.replace(scratch, path)

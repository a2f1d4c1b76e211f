"""Apply one layer of an untrusted image to a scratch folder, refusing every entry that could escape it.

Refused (UnsafeImagePathError naming the entry): absolute names and `..`, symbolic links whose target climbs out
of the folder (directly or through other links), hard links to anything but a file of the image, writes through a
symbolic link, device files and named pipes. Setuid, setgid and sticky bits are dropped; owners are ignored.
Whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove what lower layers put there.

Only the standard library, `errors` and `oci` are used, so the device can run the same checks.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import IO, cast

from edgewise.runtime.oci import oci
from edgewise.runtime.oci.errors import InvalidImageError, UnsafeImagePathError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def entry_parts(name: str, *, where: str) -> list[str]:
    """The components of an entry name, or UnsafeImagePathError if it is absolute or climbs out with '..'."""
    if "\x00" in name or "\\" in name:
        raise UnsafeImagePathError(f"{where}: entry {name!r} has a NUL or backslash in its name")
    if name.startswith("/"):
        raise UnsafeImagePathError(f"{where}: entry {name!r} is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeImagePathError(f"{where}: entry {name!r} climbs out of its folder with '..'")
    return parts


class _HashingReader:
    """Hashes the plain tar on its way from the decompressor to tarfile, to check it against the diff_id."""

    def __init__(self, raw: oci.Readable) -> None:
        self.raw = raw
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.hasher.update(chunk)
        return chunk

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.hasher.hexdigest()


def apply_layer(
    stream: oci.VerifiedReader, *, media_type: str, diff_id: str, root: Path, rootfs_symlinks: bool = False
) -> None:
    """Apply one layer to the scratch folder `root`, refusing unsafe entries; whiteouts remove lower files.

    `rootfs_symlinks` accepts absolute symlink targets as a container sees them (relative to `root`); by
    default they are refused, since on the host they point outside the folder.
    """
    decompressed: oci.Readable
    if media_type in oci.GZIP_LAYERS:
        decompressed = gzip.GzipFile(fileobj=cast("IO[bytes]", stream), mode="rb")
    elif media_type == oci.LAYER_TAR:
        decompressed = stream
    else:
        raise InvalidImageError(f"layer {stream.digest} has the unsupported media type {media_type!r}")
    plain = _HashingReader(decompressed)
    where = f"layer {stream.digest}"
    written: set[str] = set()
    try:
        with tarfile.open(fileobj=plain, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                _apply_entry(tar, member, root=root, where=where, written=written, rootfs_symlinks=rootfs_symlinks)
        actual = plain.drain()
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InvalidImageError(f"{where} is not a valid {media_type}: {error}") from None
    stream.read_to_end()
    if actual != diff_id:
        raise InvalidImageError(f"{where} unpacks to {actual}, not its diff_id {diff_id}: the image was tampered with")


def _apply_entry(
    tar: tarfile.TarFile, member: tarfile.TarInfo, *, root: Path, where: str, written: set[str], rootfs_symlinks: bool
) -> None:
    parts = entry_parts(member.name, where=where)
    if not parts:
        return  # the root folder itself
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeImagePathError(
            f"{where}: entry {member.name!r} is a {entry_kind(member)}, which images may not contain"
        )
    parent = _safe_parent(root, parts, where=where, name=member.name)
    base = parts[-1]
    key = "/".join(parts)
    if base == OPAQUE:
        for child in parent.iterdir() if parent.is_dir() else []:
            if posixpath.join(*parts[:-1], child.name) not in written:
                _remove(child)
        return
    if base.startswith(WHITEOUT):
        hidden = base.removeprefix(WHITEOUT)
        if hidden in ("", ".", ".."):
            raise UnsafeImagePathError(f"{where}: whiteout entry {member.name!r} names no file")
        _remove(parent / hidden)
        return
    target = parent / base
    written.add(key)
    if member.isdir():
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            _remove(target)
        target.mkdir(exist_ok=True)
        os.chmod(target, (member.mode & 0o777) | 0o700)
        return
    if target.is_symlink() or target.exists():
        _remove(target)
    if member.issym():
        _check_link_target(parts, member.linkname, where=where, name=member.name, rootfs=rootfs_symlinks)
        os.symlink(member.linkname, target)
    elif member.islnk():
        try:
            link_parts = entry_parts(member.linkname, where=where)
        except UnsafeImagePathError:
            raise UnsafeImagePathError(
                f"{where}: hard link {member.name!r} points outside the image, at {member.linkname!r}"
            ) from None
        source = _safe_parent(root, link_parts, where=where, name=member.name) / link_parts[-1] if link_parts else root
        if not link_parts or source.is_symlink() or not source.is_file():
            raise UnsafeImagePathError(
                f"{where}: hard link {member.name!r} points at {member.linkname!r}, which is not a file of the image"
            )
        os.link(source, target, follow_symlinks=False)
    elif member.isfile():
        content = tar.extractfile(member)
        assert content is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(content, out, 1 << 20)
        os.chmod(target, member.mode & 0o777)
    else:
        raise InvalidImageError(f"{where}: entry {member.name!r} is a {entry_kind(member)}, which is not supported")


def _safe_parent(root: Path, parts: list[str], *, where: str, name: str) -> Path:
    """The folder an entry goes in, created if missing; refuse to go through a symbolic link."""
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise UnsafeImagePathError(f"{where}: entry {name!r} would be written through the symbolic link {part!r}")
        if not current.exists():
            current.mkdir(mode=0o755)
        elif not current.is_dir():
            raise InvalidImageError(f"{where}: entry {name!r} needs {part!r} to be a folder, but it is a file")
    return current


def _check_link_target(parts: list[str], link: str, *, where: str, name: str, rootfs: bool) -> None:
    """Refuse a symlink whose target, read from the link's folder, climbs above the root at any point."""
    if not link or "\x00" in link:
        raise UnsafeImagePathError(f"{where}: symbolic link {name!r} has an empty or invalid target")
    if link.startswith("/") and not rootfs:
        raise UnsafeImagePathError(f"{where}: symbolic link {name!r} points outside the image, at {link!r}")
    depth = 0 if link.startswith("/") else len(parts) - 1
    for part in link.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise UnsafeImagePathError(f"{where}: symbolic link {name!r} points outside the image, at {link!r}")
        elif part not in ("", "."):
            depth += 1


def check_link_chains(root: Path, *, rootfs: bool) -> None:
    """Refuse links that escape only through other links (`a -> d/l/..` with `d/l -> ..`): follow each one."""
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(folder) / name
            if path.is_symlink():
                parts = list(path.relative_to(root).parts)
                try:
                    _resolve_inside(root, parts[:-1], os.readlink(path), rootfs=rootfs, hops=0)
                except UnsafeImagePathError as error:
                    raise UnsafeImagePathError(f"symbolic link {'/'.join(parts)!r} {error}") from None


def _resolve_inside(root: Path, start: list[str], link: str, *, rootfs: bool, hops: int) -> list[str]:
    if hops > 40:
        raise UnsafeImagePathError("goes through too many other links")
    if link.startswith("/") and not rootfs:
        raise UnsafeImagePathError(f"points outside the image, at {link!r}")
    stack = [] if link.startswith("/") else list(start)
    for part in link.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise UnsafeImagePathError(f"points outside the image through {link!r}")
            stack.pop()
            continue
        stack.append(part)
        candidate = root.joinpath(*stack)
        if candidate.is_symlink():
            stack = _resolve_inside(root, stack[:-1], os.readlink(candidate), rootfs=rootfs, hops=hops + 1)
    return stack


def _remove(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def entry_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "named pipe"
    return f"tar entry of type {member.type!r}"

"""What `edgewise run submit` uploads: the files of the source folder, minus what the user ignores.

A snapshot follows `.gitignore` files (at every level, with git's precedence: a deeper file and a later
pattern win) and `.edgewiseignore` files on top of them (same syntax), so a user can leave data out of the
run without touching the repository's ignore rules. `.git/` never goes. Symbolic links are followed only
while they stay inside the source; anything else would upload files the user did not mean to share.
Limits keep an accidental `data/` folder from turning a submission into a multi-gigabyte upload, and the
error names the biggest offenders so the fix is one line in `.edgewiseignore`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pathspec
from edgewise.cloud.errors import InvalidInputError, SnapshotTooLargeError, UnsafePathError
from edgewise.cloud.store.records import FileEntry

DEFAULT_MAX_BYTES = 300 * 2**20
DEFAULT_MAX_FILES = 2000
IGNORE_FILES = (".gitignore", ".edgewiseignore")
ALWAYS_LEFT_OUT = frozenset({".git"})
_DRILL_DOWN_SHARE = 0.9  # name a folder's biggest child instead when it holds this share of the folder


@dataclass(frozen=True, kw_only=True)
class SnapshotFile:
    """One file to upload: its path in the snapshot and where its bytes are on this machine."""

    path: str  # relative POSIX path inside the source
    abspath: Path  # the file itself (the target, for a followed link)
    size: int
    mode: int  # permission bits, e.g. 0o755 for an executable


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    source: Path
    files: list[SnapshotFile] = field(default_factory=list)
    total_bytes: int = 0


@dataclass(frozen=True)
class _Rules:
    """The ignore patterns of one folder, matched against paths relative to that folder."""

    base: str  # the folder, relative to the source ("" for the root)
    spec: pathspec.GitIgnoreSpec


def take_snapshot(source: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES) -> Snapshot:
    """List the files of `source` that a run should get, or raise if that is unsafe or too large."""
    source = Path(source)
    if not source.is_dir():
        raise InvalidInputError(f"the source folder {source} does not exist or is not a folder")
    root = source.resolve()
    files: list[SnapshotFile] = []
    _walk(root, "", root, [], files, frozenset({str(root)}))
    files.sort(key=lambda f: f.path)
    total = sum(f.size for f in files)
    if total > max_bytes or len(files) > max_files:
        raise SnapshotTooLargeError(_too_large_message(source, files, total, max_bytes, max_files))
    return Snapshot(source=source, files=files, total_bytes=total)


def hash_snapshot(snapshot: Snapshot) -> list[FileEntry]:
    """The digest of every file, read in chunks so large files never sit in memory."""
    entries: list[FileEntry] = []
    for item in snapshot.files:
        try:
            with item.abspath.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256")
                size = handle.tell()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {item.path} in {snapshot.source}: {exc.strerror or exc}") from None
        entries.append(FileEntry(path=item.path, digest=f"sha256:{digest.hexdigest()}", size=size, mode=item.mode))
    return entries


def _walk(
    root: Path,
    relative: str,
    directory: Path,
    rules: list[_Rules],
    files: list[SnapshotFile],
    ancestors: frozenset[str],
) -> None:
    """Add the kept files under `directory` (shown to the user as `relative`) to `files`."""
    rules = rules + _load_rules(directory, relative)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise InvalidInputError(f"cannot list {relative or '.'} in {root}: {exc.strerror or exc}") from None
    for entry in entries:
        path = f"{relative}/{entry.name}" if relative else entry.name
        if entry.name in ALWAYS_LEFT_OUT:
            continue
        link = entry.is_symlink()
        target = Path(entry.path)
        is_dir = target.is_dir() if link else entry.is_dir(follow_symlinks=False)
        if _ignored(rules, path, is_dir=is_dir):
            continue  # an ignored link is never followed, so it may point anywhere
        if link:
            target = _link_target(root, path, target)
        if is_dir:
            real = str(target.resolve())
            if real in ancestors:
                raise UnsafePathError(
                    f"the link {path} in {root} points at a folder that contains it (a loop); remove it or "
                    "add it to .edgewiseignore"
                )
            _walk(root, path, target, rules, files, ancestors | {real})
            continue
        info = target.stat()
        if not stat.S_ISREG(info.st_mode):
            continue  # sockets, fifos, devices: not something a run can use
        files.append(SnapshotFile(path=path, abspath=target, size=info.st_size, mode=stat.S_IMODE(info.st_mode)))


def _link_target(root: Path, path: str, link: Path) -> Path:
    """The resolved target of a link inside the source; a dangling or escaping link is refused."""
    hint = "remove it, or add it to .edgewiseignore to leave it out of the snapshot"
    try:
        target = link.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise UnsafePathError(f"the link {path} in {root} is dangling (its target does not exist); {hint}") from None
    except OSError as exc:
        raise UnsafePathError(f"cannot follow the link {path} in {root}: {exc.strerror or exc}; {hint}") from None
    if not target.is_relative_to(root):
        raise UnsafePathError(f"the link {path} in {root} points outside the source folder (to {target}); {hint}")
    return target


def _load_rules(directory: Path, relative: str) -> list[_Rules]:
    found: list[_Rules] = []
    for name in IGNORE_FILES:
        candidate = directory / name
        if not candidate.is_file():
            continue
        try:
            lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {candidate}: {exc.strerror or exc}") from None
        try:
            spec = pathspec.GitIgnoreSpec.from_lines(lines)
        except Exception as exc:  # pathspec raises several types for malformed patterns
            raise InvalidInputError(f"cannot read the patterns of {candidate}: {exc}") from None
        found.append(_Rules(base=relative, spec=spec))
    return found


def _ignored(rules: list[_Rules], path: str, *, is_dir: bool) -> bool:
    """Git's precedence: the last matching pattern of the deepest ignore file decides."""
    verdict = False
    for rule in rules:
        local = path[len(rule.base) + 1 :] if rule.base else path
        result = rule.spec.check_file(local + "/" if is_dir else local)
        if result.include is not None:
            verdict = bool(result.include)
    return verdict


# -- the "too large" message ------------------------------------------------------------------------------------


@dataclass
class _Node:
    path: str
    is_dir: bool
    size: int = 0
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _too_large_message(source: Path, files: list[SnapshotFile], total: int, max_bytes: int, max_files: int) -> str:
    by_count = len(files) > max_files and total <= max_bytes
    tree = _tree(files)
    offenders = [_drill_down(child, by_count) for child in tree.children.values()]
    offenders.sort(key=lambda n: (n.count, n.size) if by_count else (n.size, n.count), reverse=True)
    lines = [
        f"the snapshot of {source} is too large: {len(files):,} files, {_human(total)} "
        f"(limits: {max_files:,} files, {_human(max_bytes)}).",
        "Biggest " + ("by file count:" if by_count else "by size:"),
    ]
    for node in offenders[:5]:
        name = node.path + ("/" if node.is_dir else "")
        lines.append(f"  {name}  {_human(node.size)}" + (f" in {node.count:,} files" if node.is_dir else ""))
    example = offenders[0].path + ("/" if offenders[0].is_dir else "") if offenders else "data/"
    lines.append(
        f"Leave out what the run does not need by adding patterns to {source / '.edgewiseignore'} "
        f"(same syntax as .gitignore), e.g. a line `/{example}`."
    )
    return "\n".join(lines)


def _tree(files: list[SnapshotFile]) -> _Node:
    root = _Node(path="", is_dir=True)
    for item in files:
        node = root
        parts = item.path.split("/")
        for depth, part in enumerate(parts):
            node.size += item.size
            node.count += 1
            leaf = depth == len(parts) - 1
            prefix = "/".join(parts[: depth + 1])
            node = node.children.setdefault(part, _Node(path=prefix, is_dir=not leaf))
        node.size += item.size
        node.count += 1
    return root


def _drill_down(node: _Node, by_count: bool) -> _Node:
    """Name the file or subfolder that makes a folder big rather than the folder, when one dominates it."""
    while node.is_dir and node.children:
        biggest = max(node.children.values(), key=lambda n: n.count if by_count else n.size)
        whole, part = (node.count, biggest.count) if by_count else (node.size, biggest.size)
        if whole == 0 or part < _DRILL_DOWN_SHARE * whole:
            break
        node = biggest
    return node


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"

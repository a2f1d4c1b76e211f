"""Moving files between this machine and the workspace: digests, verified atomic downloads, local file sets."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgewise.cloud.errors import InvalidInputError, NotFoundError, ServiceUnavailableError, WorkspaceError


def unreachable(url: str, exc: Exception) -> ServiceUnavailableError:
    detail = str(exc) or type(exc).__name__
    return ServiceUnavailableError(f"cannot reach the workspace at {url}: {detail} — is `edgewise up` running?")


def digest_file(path: Path) -> tuple[str, int]:
    """The OCI-style sha256 digest and the size of a local file, read in chunks."""
    sha, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a folder; name a file") from None
    return f"sha256:{sha.hexdigest()}", size


def download_to(chunks: Iterable[bytes], dest: Path, digest: str | None) -> Path:
    """Write `chunks` to a temporary file beside `dest`, check `digest`, then rename: `dest` is never partial."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                sha.update(chunk)
                out.write(chunk)
        if digest is not None and f"sha256:{sha.hexdigest()}" != digest:
            raise WorkspaceError(f"the download of {digest} arrived corrupted (got sha256:{sha.hexdigest()}); retry")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def model_files(file: Path) -> dict[str, Path]:
    """The files to register for `file`: the file itself, or every file of a folder at its relative path."""
    if file.is_dir():
        files = {p.relative_to(file).as_posix(): p for p in sorted(file.rglob("*")) if p.is_file()}
        if not files:
            raise InvalidInputError(f"the folder {file} has no files to register")
        return files
    if not file.exists():
        raise NotFoundError(f"no such file or folder: {file}")
    return {file.name: file}

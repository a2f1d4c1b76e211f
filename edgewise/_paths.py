"""Where edgewise keeps per-user caches: a folder named by an environment variable, else under XDG_CACHE_HOME."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def cache_dir(env: str, name: str, *, fallback: Path | None = None) -> Path:
    """`$env` when set; else `fallback` when given; else `$XDG_CACHE_HOME/edgewise/name` (or ~/.cache/...)."""
    configured = os.environ.get(env)
    if configured:
        return Path(configured)
    if fallback is not None:
        return fallback
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgewise" / name


def writable_dir(folder: Path, *, mode: int = 0o777) -> bool:
    """Create `folder` if needed; True when this process may write and enter it."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def find_program(env: str, candidates: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """The program `$env` names, else the first of `candidates` on PATH; with the names that were tried."""
    names = [os.environ[env]] if os.environ.get(env) else list(candidates)
    for name in names:
        found = shutil.which(name)
        if found:
            return found, names
    return None, names

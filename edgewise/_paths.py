"""Where edgewise keeps per-user caches: a folder named by an environment variable, else under XDG_CACHE_HOME."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(env: str, name: str, *, fallback: Path | None = None) -> Path:
    """`$env` when set; else `fallback` when given; else `$XDG_CACHE_HOME/edgewise/name` (or ~/.cache/...)."""
    configured = os.environ.get(env)
    if configured:
        return Path(configured)
    if fallback is not None:
        return fallback
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgewise" / name

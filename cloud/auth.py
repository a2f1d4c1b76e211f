"""The workspace's bearer token: created once in the data directory, found there by local clients."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"


def default_data_dir() -> Path:
    return Path(os.environ.get("EDGEWISE_DATA") or Path.home() / ".edgewise").expanduser()


def ensure_token(data_dir: Path) -> str:
    """Return the service token, creating it (readable by its owner only) at first start."""
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.replace(tmp, path)
    return token


def find_token(data_dir: Path | None = None) -> str | None:
    """The token a client should send: EDGEWISE_TOKEN, else the data directory's token file."""
    token = os.environ.get("EDGEWISE_TOKEN")
    if token:
        return token.strip()
    try:
        return (data_dir or default_data_dir()).joinpath(TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None

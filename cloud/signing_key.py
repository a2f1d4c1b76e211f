"""The workspace's Ed25519 manifest-signing key: created at first start, kept in the data directory.

Devices trust manifests signed by this key only (its public half travels in their connection strings), so
the key file must survive restarts and upgrades: losing it means every device needs a new connection string.
The file holds the 32 raw private bytes, readable by the service's user only (`DATA/keys/manifest-signing.key`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from edgewise.cloud.errors import WorkspaceError
from edgewise.runtime.agent import signing

KEY_FOLDER = "keys"
KEY_FILE = "manifest-signing.key"
_KEY_BYTES = 32

log = logging.getLogger("edgewise.keys")


@dataclass(frozen=True, kw_only=True)
class ManifestKey:
    """The private key that signs desired manifests, and the public forms devices are given."""

    private: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def public_text(self) -> str:
        """`ed25519:<base64>`, as a connection string's WorkspaceKey carries it."""
        return signing.public_key_text(self.private)

    @property
    def key_id(self) -> str:
        return signing.key_id(self.private)

    def sign(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `document` with its `signature` member, verifiable by every device of this workspace."""
        return signing.sign_document(document, self.private)

    def describe(self) -> dict[str, str]:
        """What the API shows about the key (never the private half)."""
        return {"algorithm": signing.ALGORITHM, "public_key": self.public_text, "key_id": self.key_id}

    def __repr__(self) -> str:
        return f"ManifestKey(key_id={self.key_id!r}, path={str(self.path)!r})"


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FOLDER / KEY_FILE


def load_or_create_manifest_key(data_dir: Path) -> ManifestKey:
    """The workspace's key from `data_dir`, created (mode 0600) when there is none yet."""
    path = key_path(data_dir)
    if not path.exists():
        _create(path)
    return _load(path)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.parent.chmod(0o700)
    raw = signing.private_key_bytes(signing.generate_private_key())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(raw)
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(tmp, path)  # fails if a concurrent start created the key first: theirs wins, nobody overwrites
        log.info("created the workspace's manifest-signing key %s", path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path) -> ManifestKey:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkspaceError(f"cannot read the manifest-signing key {path}: {exc.strerror}") from exc
    if len(raw) != _KEY_BYTES:
        raise WorkspaceError(
            f"the manifest-signing key {path} holds {len(raw)} bytes, not the {_KEY_BYTES} raw bytes of an Ed25519 "
            "key; restore it from a backup, or move it away to create a new key (every device then needs a new "
            "connection string from `edgewise device add`)"
        )
    if path.stat().st_mode & 0o077:
        log.warning("the manifest-signing key %s is readable by other users; run: chmod 600 %s", path, path)
    return ManifestKey(private=signing.load_private_key(raw), path=path)

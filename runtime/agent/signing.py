"""Ed25519 signatures over manifests: the workspace signs, the agent verifies.

The signed bytes are the manifest without its `signature` member, serialised canonically (keys sorted, no
insignificant whitespace, UTF-8), so any JSON library that re-serialises the same document verifies it.
Keys travel as the base64 of their 32 raw bytes, optionally prefixed `ed25519:`. The agent verifies through
`ed25519.py` and never imports `cryptography`; only signing (the workspace, tests) does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from edgewise.runtime.agent import ed25519
from edgewise.runtime.agent.errors import ConfigError, ManifestError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALGORITHM = "Ed25519"
_PREFIX = "ed25519:"


class PublicKey(Protocol):
    """An Ed25519 public key: `RawPublicKey`, or `cryptography`'s Ed25519PublicKey."""

    def public_bytes_raw(self) -> bytes: ...


class RawPublicKey:
    """An Ed25519 public key as its 32 raw bytes, checked when made: what an agent verifies manifests with."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        ed25519.check_public_key(raw)
        self._raw = bytes(raw)

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawPublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"RawPublicKey({_PREFIX}{base64.b64encode(self._raw).decode()})"


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the document minus `signature`, canonically serialised."""
    body = {key: value for key, value in document.items() if key != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def generate_private_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def private_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw private bytes, for a key file the workspace keeps with mode 0600."""
    return key.private_bytes_raw()


def load_private_key(raw: bytes) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(raw)


def _public_raw(key: PublicKey | Ed25519PrivateKey) -> bytes:
    if hasattr(key, "public_bytes_raw"):
        return key.public_bytes_raw()
    return key.public_key().public_bytes_raw()  # a private key: its public half


def public_key_text(key: PublicKey | Ed25519PrivateKey) -> str:
    """`ed25519:<base64>`: the form a connection string carries."""
    return _PREFIX + base64.b64encode(_public_raw(key)).decode()


def load_public_key(text: str) -> RawPublicKey:
    """Parse `ed25519:<base64>` (or bare base64) into a key; a ConfigError says what is wrong."""
    body = text.strip().removeprefix(_PREFIX)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("WorkspaceKey is not base64: expected 'ed25519:' followed by 44 base64 characters") from None
    if len(raw) != ed25519.KEY_BYTES:
        raise ConfigError(f"WorkspaceKey decodes to {len(raw)} bytes; an Ed25519 public key has {ed25519.KEY_BYTES}")
    try:
        return RawPublicKey(raw)
    except ValueError as exc:
        raise ConfigError(f"WorkspaceKey is not a usable Ed25519 public key: {exc}") from None


def key_id(key: PublicKey | Ed25519PrivateKey) -> str:
    """A short fingerprint naming the key in signatures and logs."""
    return hashlib.sha256(_public_raw(key)).hexdigest()[:16]


def sign_document(document: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of `document` with its `signature` member set."""
    signature = key.sign(canonical_bytes(document))
    signed = {k: v for k, v in document.items() if k != "signature"}
    signed["signature"] = {
        "algorithm": ALGORITHM,
        "keyId": key_id(key),
        "value": base64.b64encode(signature).decode(),
    }
    return signed


def verify_document(document: Mapping[str, Any], key: PublicKey) -> None:
    """Raise ManifestError (`unsigned` or `bad-signature`) unless `document` carries a valid signature by `key`."""
    signature = document.get("signature")
    if signature is None:
        raise ManifestError("unsigned", "the manifest has no signature")
    if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
        raise ManifestError("bad-signature", "the manifest's signature is not an object with a base64 'value'")
    if signature.get("algorithm") != ALGORITHM:
        raise ManifestError("bad-signature", f"signature algorithm {signature.get('algorithm')!r} is not {ALGORITHM}")
    try:
        raw = base64.b64decode(signature["value"], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not ed25519.verify(key.public_bytes_raw(), raw, canonical_bytes(document)):
        raise ManifestError(
            "bad-signature", f"the manifest's signature does not verify with the workspace key {key_id(key)}"
        )

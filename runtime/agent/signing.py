"""Ed25519 signatures over manifests: the workspace signs, the agent verifies.

The signed bytes are the manifest without its `signature` member, serialised canonically (keys sorted, no
insignificant whitespace, UTF-8), so any JSON library that re-serialises the same document verifies it.
Keys travel as the base64 of their 32 raw bytes, optionally prefixed `ed25519:`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from edgewise.runtime.agent.errors import ConfigError, ManifestError

ALGORITHM = "Ed25519"
_PREFIX = "ed25519:"


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the document minus `signature`, canonically serialised."""
    body = {key: value for key, value in document.items() if key != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw private bytes, for a key file the workspace keeps with mode 0600."""
    return key.private_bytes_raw()


def load_private_key(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """`ed25519:<base64>`: the form a connection string carries."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes_raw()
    return _PREFIX + base64.b64encode(raw).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """Parse `ed25519:<base64>` (or bare base64) into a key; a ConfigError says what is wrong."""
    body = text.strip().removeprefix(_PREFIX)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("WorkspaceKey is not base64: expected 'ed25519:' followed by 44 base64 characters") from None
    if len(raw) != 32:
        raise ConfigError(f"WorkspaceKey decodes to {len(raw)} bytes; an Ed25519 public key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A short fingerprint naming the key in signatures and logs."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes_raw()
    return hashlib.sha256(raw).hexdigest()[:16]


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


def verify_document(document: Mapping[str, Any], key: Ed25519PublicKey) -> None:
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
        key.verify(raw, canonical_bytes(document))
    except (binascii.Error, ValueError, InvalidSignature):
        raise ManifestError(
            "bad-signature", f"the manifest's signature does not verify with the workspace key {key_id(key)}"
        ) from None

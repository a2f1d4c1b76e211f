"""Ed25519 signature checks through the OpenSSL library the interpreter has loaded already (for `hashlib`).

The agent verifies one signature per manifest and signs nothing. The `cryptography` package would do the same
check, but importing it costs the agent about 8 MB of resident memory for as long as it runs, a fifth of its
idle budget; calling the OpenSSL that `hashlib` and `ssl` have mapped anyway costs `ctypes`, about 0.3 MB.
Where the interpreter's OpenSSL cannot do Ed25519 (older than 1.1.1, or linked in statically), `cryptography`
does the check instead.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_NID_ED25519 = 1087  # EVP_PKEY_ED25519 in every OpenSSL since 1.1.1


class _OpenSSL:
    """The few libcrypto calls a one-shot Ed25519 verification needs; a failed check leaves no queued error."""

    def __init__(self, lib: Any) -> None:
        vp, size, text = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        self.new_key = _bind(lib.EVP_PKEY_new_raw_public_key, vp, ctypes.c_int, vp, text, size)
        self.free_key = _bind(lib.EVP_PKEY_free, None, vp)
        self.new_context = _bind(lib.EVP_MD_CTX_new, vp)
        self.free_context = _bind(lib.EVP_MD_CTX_free, None, vp)
        self.verify_init = _bind(lib.EVP_DigestVerifyInit, ctypes.c_int, vp, vp, vp, vp, vp)
        self.verify = _bind(lib.EVP_DigestVerify, ctypes.c_int, vp, text, size, text, size)
        self.clear_errors = _bind(lib.ERR_clear_error, None)

    def _key(self, public: bytes) -> int | None:
        """A new EVP_PKEY for `public` (free it), or None when the library refuses the bytes."""
        key: int | None = self.new_key(_NID_ED25519, None, public, len(public))
        if not key:
            self.clear_errors()
            return None
        return key

    def key_accepted(self, public: bytes) -> bool:
        key = self._key(public)
        if key is not None:
            self.free_key(key)
        return key is not None

    def valid(self, public: bytes, signature: bytes, message: bytes) -> bool:
        key = self._key(public)
        if key is None:
            return False
        context = self.new_context()
        try:
            if not context or self.verify_init(context, None, None, None, key) != 1:
                self.clear_errors()
                return False
            answer: int = self.verify(context, signature, len(signature), message, len(message))
            if answer != 1:
                self.clear_errors()
            return answer == 1
        finally:
            if context:
                self.free_context(context)
            self.free_key(key)


def _bind(function: Any, restype: Any, *argtypes: Any) -> Any:
    function.restype = restype
    function.argtypes = argtypes
    return function


@functools.cache
def _openssl() -> _OpenSSL | None:
    """libcrypto as `hashlib` loaded it, when it knows Ed25519: its symbols are found through `_hashlib`'s own
    dependencies, or among the interpreter's when `_hashlib` is built into it."""
    try:
        import _hashlib

        binding = _OpenSSL(ctypes.CDLL(getattr(_hashlib, "__file__", None)))
    except (ImportError, OSError, AttributeError):
        return None
    return binding if binding.key_accepted(bytes(KEY_BYTES)) else None


def backend() -> str:
    """Which library checks signatures in this process: "openssl" or "cryptography"."""
    return "openssl" if _openssl() is not None else "cryptography"


def check_public_key(public: bytes) -> None:
    """Raise ValueError unless `public` is a key Ed25519 can verify with (32 bytes the library accepts)."""
    if len(public) != KEY_BYTES:
        raise ValueError(f"an Ed25519 public key has {KEY_BYTES} bytes, not {len(public)}")
    openssl = _openssl()
    if openssl is not None:
        if not openssl.key_accepted(public):
            raise ValueError("the library refuses these 32 bytes as an Ed25519 public key")
        return
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(public)


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `public`'s Ed25519 signature of `message`."""
    if len(public) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    openssl = _openssl()
    if openssl is not None:
        return openssl.valid(public, signature, message)
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True

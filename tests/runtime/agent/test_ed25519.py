"""The agent's Ed25519 check agrees with `cryptography`'s, through OpenSSL and through its fallback alike."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from edgewise.runtime.agent import ed25519
from edgewise.runtime.agent.errors import ConfigError
from edgewise.runtime.agent.signing import load_public_key, public_key_text


def _reference(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _cases() -> list[tuple[str, bytes, bytes, bytes]]:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    message = os.urandom(300)
    signature = key.sign(message)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    return [
        ("valid", public, signature, message),
        ("empty message", public, key.sign(b""), b""),
        ("altered message", public, signature, message[:-1] + bytes([message[-1] ^ 0x80])),
        ("altered signature", public, flipped, message),
        ("another key", other.public_key().public_bytes_raw(), signature, message),
        ("short signature", public, signature[:63], message),
        ("long signature", public, signature + b"\0", message),
        ("no signature", public, b"", message),
    ]


@pytest.mark.parametrize("use_openssl", [True, False], ids=["openssl", "cryptography"])
def test_both_routes_agree_with_cryptography(use_openssl: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if use_openssl:
        assert ed25519.backend() == "openssl", "this interpreter's hashlib OpenSSL has no Ed25519"
    else:
        monkeypatch.setattr(ed25519, "_openssl", lambda: None)
        assert ed25519.backend() == "cryptography"
    for label, public, signature, message in _cases():
        assert ed25519.verify(public, signature, message) is _reference(public, signature, message), label
    assert ed25519.verify(b"", b"", b"") is False


def test_a_failed_check_leaves_no_openssl_error_behind() -> None:
    import _hashlib

    peek = ctypes.CDLL(_hashlib.__file__).ERR_peek_error
    peek.restype = ctypes.c_ulong
    for label, public, signature, message in _cases():
        ed25519.verify(public, signature, message)
        assert peek() == 0, label  # ssl and hashlib read this queue after their own calls


def test_a_key_the_library_refuses_is_named_in_the_config_error() -> None:
    text = public_key_text(Ed25519PrivateKey.generate())
    assert load_public_key(text).public_bytes_raw() == load_public_key(text.removeprefix("ed25519:")).public_bytes_raw()
    with pytest.raises(ConfigError, match="has 32"):
        load_public_key("ed25519:AAAA")


def test_the_agent_runs_without_importing_cryptography() -> None:
    """`cryptography` costs an agent about 8 MB of resident memory: the agent's own code never imports it."""
    probe = (
        "import sys\n"
        "import edgewise.runtime.agent.cli, edgewise.runtime.agent.daemon\n"
        "from edgewise.runtime.agent.signing import load_public_key, verify_document\n"
        f"key = load_public_key({public_key_text(Ed25519PrivateKey.generate())!r})\n"
        "try:\n"
        "    verify_document({'version': 1, 'signature': {'algorithm': 'Ed25519', 'value': 'AAAA'}}, key)\n"
        "except Exception:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n"
    )
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert answer.stdout.strip() == "[]", answer.stdout

"""The broker's accounts: the service account and one per device, kept as salted hashes on disk.

The password file uses Mosquitto's PBKDF2-SHA512 format (`user:$7$iterations$salt$hash`), so Mosquitto reads it
directly and the embedded broker verifies against the same file: one store whichever broker runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.names import check_name

from .rules import SERVICE_USERNAME, acl_file_text

PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
SERVICE_PASSWORD_FILE = "service-password"
ITERATIONS = 1000  # Mosquitto's own default is 101; its reader accepts any count stored in the hash
_SALT_BYTES = 12
_MAX_PASSWORD = 1024


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """A username and password for an MQTT connection."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    """A salted PBKDF2-SHA512 hash in Mosquitto's `$7$` format."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a `$7$` or `$6$` hash as Mosquitto writes them; False for anything unreadable."""
    try:
        parts = hashed.split("$")
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, expected = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
            actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
        elif len(parts) == 4 and parts[1] == "6":
            salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            actual = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def read_password_file(path: Path) -> dict[str, str]:
    """Usernames and their hashes from a Mosquitto password file (a missing file holds none)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    entries: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            username, hashed = line.split(":", 1)
            entries[username] = hashed
    return entries


def check_login(password_file: Path, username: str | None, password: str | None) -> bool:
    """Whether the password file has `username` with `password`; anonymous clients never pass."""
    if not username or password is None:
        return False
    hashed = read_password_file(password_file).get(username)
    return hashed is not None and verify_password(password, hashed)


class Accounts:
    """Owns `DIR/passwd`, `DIR/acl` and the service account's password (`DIR/service-password`, mode 0600)."""

    def __init__(self, *, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._service = Credentials(username=SERVICE_USERNAME, password=self._ensure_service_password())
        with self._lock:
            entries = read_password_file(self.password_path)
            current = entries.get(SERVICE_USERNAME)
            if current is None or not verify_password(self._service.password, current):
                entries[SERVICE_USERNAME] = hash_password(self._service.password)
                self._write_entries(entries)
            _write_private(self.acl_path, acl_file_text())

    @property
    def password_path(self) -> Path:
        return self.directory / PASSWORD_FILE

    @property
    def acl_path(self) -> Path:
        return self.directory / ACL_FILE

    @property
    def service_credentials(self) -> Credentials:
        return self._service

    def devices(self) -> list[str]:
        """The ids of the devices that have credentials, sorted."""
        return sorted(name for name in read_password_file(self.password_path) if name != SERVICE_USERNAME)

    def add_device(self, device_id: str, password: str) -> None:
        """Create or replace the credentials of `device_id`; only a salted hash of `password` is kept."""
        check_name("device", device_id)
        if device_id == SERVICE_USERNAME:
            raise InvalidInputError(f"device id {device_id!r} is reserved for the workspace service; pick another")
        if not isinstance(password, str) or not password or len(password) > _MAX_PASSWORD:
            raise InvalidInputError(f"the password of device {device_id!r} must be 1-{_MAX_PASSWORD} characters")
        hashed = hash_password(password)
        with self._lock:
            entries = read_password_file(self.password_path)
            entries[device_id] = hashed
            self._write_entries(entries)

    def remove_device(self, device_id: str) -> bool:
        """Delete the credentials of `device_id`; False when it had none (removing twice is harmless)."""
        check_name("device", device_id)
        if device_id == SERVICE_USERNAME:
            raise InvalidInputError(f"{device_id!r} is the workspace service's account, not a device")
        with self._lock:
            entries = read_password_file(self.password_path)
            if entries.pop(device_id, None) is None:
                return False
            self._write_entries(entries)
            return True

    def verify(self, username: str | None, password: str | None) -> bool:
        """Whether the pair names an account with that password (anonymous clients never pass)."""
        return check_login(self.password_path, username, password)

    def _ensure_service_password(self) -> str:
        path = self.directory / SERVICE_PASSWORD_FILE
        try:
            existing = path.read_text().strip()
            if existing:
                return existing
        except FileNotFoundError:
            pass
        password = secrets.token_urlsafe(32)
        _write_private(path, password + "\n")
        return password

    def _write_entries(self, entries: dict[str, str]) -> None:
        text = "".join(f"{name}:{hashed}\n" for name, hashed in sorted(entries.items()))
        _write_private(self.password_path, text)


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a file only its owner can read."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

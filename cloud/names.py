"""Validation of user-given names and relative paths, shared by the service and its clients."""

from __future__ import annotations

import re

from edgewise.cloud.errors import InvalidInputError, UnsafePathError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# The workspace host registered as a device of its own to run web services (cloud/webservices/host.py): device
# listings leave it out unless asked, as it is not one of the user's devices.
WEBSERVICE_HOST_ID = "edgewise-host"


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a valid experiment or model name, else raise InvalidInputError."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"invalid {kind} name {value!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    return value


def check_relpath(path: str, *, what: str = "path") -> str:
    """Return the normalised relative POSIX path, or raise UnsafePathError if it could escape its folder."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise UnsafePathError(f"invalid {what} {path!r}: use a non-empty relative path with '/' separators")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UnsafePathError(f"{what} {path!r} is absolute; use a path relative to its folder")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"invalid {what} {path!r}: it names no file")
    if ".." in parts:
        raise UnsafePathError(f"{what} {path!r} escapes its folder ('..' is not allowed)")
    return "/".join(parts)

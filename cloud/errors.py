"""Errors of the workspace: the service raises them, the HTTP API carries them, the SDK raises them again.

EdgewiseError
 └─ WorkspaceError                 code "internal", HTTP 500
     ├─ InvalidInputError          code "invalid_input", 400: bad names, values, filters, arguments
     │   ├─ UnsafePathError        code "unsafe_path", 400: a path that escapes its folder (../, absolute, links)
     │   └─ SnapshotTooLargeError  code "snapshot_too_large", 413: over the size or file-count limit
     ├─ AuthenticationError        code "unauthenticated", 401: a missing or wrong bearer token
     ├─ NotFoundError              code "not_found", 404: no such experiment, run, model, version, blob
     ├─ ConflictError              code "conflict", 409: the object's state forbids the operation
     │   └─ ModelInUseError        code "model_in_use", 409: a deployment still uses the model version
     └─ ServiceUnavailableError    code "unavailable", 503: the service cannot be reached or is stopping

On the wire an error is `{"error": {"code": ..., "message": ...}}` with the HTTP status above;
`error_from_payload` turns it back into the same class on the client side.
"""

from __future__ import annotations

from typing import Any

from edgewise._exceptions import EdgewiseError


class WorkspaceError(EdgewiseError):
    code = "internal"
    http_status = 500


class InvalidInputError(WorkspaceError):
    code = "invalid_input"
    http_status = 400


class UnsafePathError(InvalidInputError):
    code = "unsafe_path"


class SnapshotTooLargeError(InvalidInputError):
    code = "snapshot_too_large"
    http_status = 413


class AuthenticationError(WorkspaceError):
    code = "unauthenticated"
    http_status = 401


class NotFoundError(WorkspaceError):
    code = "not_found"
    http_status = 404


class ConflictError(WorkspaceError):
    code = "conflict"
    http_status = 409


class ModelInUseError(ConflictError):
    code = "model_in_use"


class ServiceUnavailableError(WorkspaceError):
    code = "unavailable"
    http_status = 503


_BY_CODE: dict[str, type[WorkspaceError]] = {
    cls.code: cls
    for cls in (
        WorkspaceError,
        InvalidInputError,
        UnsafePathError,
        SnapshotTooLargeError,
        AuthenticationError,
        NotFoundError,
        ConflictError,
        ModelInUseError,
        ServiceUnavailableError,
    )
}


def error_payload(error: WorkspaceError) -> dict[str, Any]:
    """The JSON body the HTTP API sends for `error`."""
    return {"error": {"code": error.code, "message": str(error)}}


def error_from_payload(status: int, payload: Any) -> WorkspaceError:
    """Rebuild the service's error on the client side; unknown shapes fall back on the HTTP status."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        body = payload["error"]
        cls = _BY_CODE.get(str(body.get("code")), WorkspaceError)
        return cls(str(body.get("message", "")))
    for cls in _BY_CODE.values():
        if cls.http_status == status and cls.__mro__[1] is WorkspaceError:
            return cls(f"HTTP {status}: {payload!r}"[:500])
    return WorkspaceError(f"HTTP {status}: {payload!r}"[:500])

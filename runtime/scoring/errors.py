"""Errors the scoring server reports to clients, each carrying its protocol status.

EdgewiseError
 └─ ScoringError                    status: gRPC code name + HTTP status
     ├─ ModelNotFoundError          NOT_FOUND / 404: unknown model or version
     ├─ ModelNotReadyError          UNAVAILABLE / 503: known but not loaded (with the reason)
     ├─ InvalidInputError           INVALID_ARGUMENT / 400: bad tensors, names, shapes, sizes
     ├─ ModelLoadError              INTERNAL / 500: a model file that cannot be loaded
     └─ InferenceFailedError        INTERNAL / 500: the backend failed on valid input

Protocol adapters map these in one place each (`protocol/grpc.py`, `protocol/rest.py`).
"""

from __future__ import annotations

from edgewise._exceptions import EdgewiseError


class ScoringError(EdgewiseError):
    grpc_status = "INTERNAL"
    http_status = 500


class ModelNotFoundError(ScoringError):
    grpc_status = "NOT_FOUND"
    http_status = 404


class ModelNotReadyError(ScoringError):
    grpc_status = "UNAVAILABLE"
    http_status = 503


class InvalidInputError(ScoringError):
    grpc_status = "INVALID_ARGUMENT"
    http_status = 400


class ModelLoadError(ScoringError):
    grpc_status = "INTERNAL"
    http_status = 500


class InferenceFailedError(ScoringError):
    grpc_status = "INTERNAL"
    http_status = 500

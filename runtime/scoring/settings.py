"""Settings of one scoring server, filled from the command line (and carried as JSON to a forked server)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

_PATHS = frozenset({"model_repository", "admin_socket_dir", "sample_file"})  # fields that hold a Path


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    model_repository: Path
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics: bool = False
    poll_interval: float = 2.0  # seconds between repository scans; 0 turns polling off
    strict_readiness: bool = False
    max_message_bytes: int = 64 * 1024 * 1024
    intra_op_threads: int = 0  # onnxruntime threads per model; 0 lets it choose
    intra_op_spinning: bool = False  # let those threads busy-wait between runs (lower latency, CPU kept busy)
    # "native": HTTP/2 and gRPC framing in C (libnghttp2); "grpcio": grpc.aio; "auto": native when it builds
    grpc_engine: str = "auto"
    grace_period: float = 5.0  # seconds in-flight requests get on shutdown
    # A private listener for the agent: HTTP on DIR/http.sock and gRPC on DIR/grpc.sock reach this process
    # alone, even while another version shares the public ports (SO_REUSEPORT).
    admin_socket_dir: Path | None = None
    # With an admin socket: open the public ports only when the agent asks (POST /v2/admin/listen on the admin
    # HTTP socket), after its warm-up passed, so clients never reach a version that is not proven healthy.
    defer_listen: bool = False
    # Sampled requests: this fraction of inferences appends {model, version, inputs, outputs} as a JSON line
    # to sample_file, which the agent reads and ships as telemetry; sample_file_max_bytes bounds the file.
    sample_file: Path | None = None
    sample_rate: float = 0.0
    sample_file_max_bytes: int = 16 * 1024 * 1024

    def to_json(self) -> dict[str, Any]:
        """Every field, paths as strings."""
        doc = {field.name: getattr(self, field.name) for field in fields(self)}
        return {key: str(value) if key in _PATHS and value is not None else value for key, value in doc.items()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ServerSettings:
        """What `to_json` gave."""
        values: dict[str, Any] = {
            key: Path(value) if key in _PATHS and value is not None else value for key, value in doc.items()
        }
        return cls(**values)

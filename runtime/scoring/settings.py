"""Settings of one scoring server, filled from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    grace_period: float = 5.0  # seconds in-flight requests get on shutdown

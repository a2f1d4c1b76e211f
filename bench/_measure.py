"""Measure one endpoint: verify a sample, warm up, sequential latency, then throughput per in-flight level."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from _cases import ModelCase
from _harness import cpu_seconds, memory_mb
from _load import Target
from _payloads import grpc_frame, grpc_message, rest_binary, rest_json
from _verify import grpc_call, rest_call

WARM_REQUESTS = 300


class Client(Protocol):
    name: str
    version: str

    def warm(self, target: Target, requests: int) -> None: ...
    def latency(self, target: Target, seconds: float) -> dict[str, Any]: ...
    def throughput(self, target: Target, inflight: int, seconds: float) -> dict[str, Any]: ...


Verify = Callable[[], tuple[int | None, str | None]]


def endpoint(protocol: str, port: int, case: ModelCase, bodies: Path) -> tuple[Target, Verify]:
    """The load target and its real-client check for `protocol` in grpc | rest-json | rest-binary."""
    bodies.mkdir(parents=True, exist_ok=True)
    body = bodies / f"{case.name}.{protocol}"
    if protocol == "grpc":
        body.write_bytes(grpc_frame(grpc_message(case)))
        headers = {"content-type": "application/grpc", "te": "trailers"}
        return Target("grpc", port, "/inference.GRPCInferenceService/ModelInfer", body, headers), (
            lambda: grpc_call(port, case)
        )
    path = f"/v2/models/{case.name}/infer"
    if protocol == "rest-json":
        data, headers = rest_json(case), {"content-type": "application/json"}
    else:
        data, headers = rest_binary(case)
    body.write_bytes(data)
    return Target("rest", port, path, body, headers), lambda: rest_call(port, path, data, headers, case)


def _guarded(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One load run; a client failure (h2load error, hard timeout) becomes an entry, not a lost endpoint."""
    try:
        return run()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "verified": False}


def measure(
    client: Client,
    target: Target,
    verify: Verify,
    inflight: list[int],
    seconds: float,
    latency_seconds: float,
    pid: int,
    memory: list[dict[str, float]],
) -> dict[str, Any]:
    """All figures for one endpoint; a failed sample check skips the load and says why."""
    size, problem = verify()
    if problem or size is None:
        return {"error": f"sample request failed: {problem}"}
    framing = 5 if target.protocol == "grpc" else 0  # gRPC's length prefix travels in the DATA frame
    target = target.with_response_bytes(size + framing)
    client.warm(target, WARM_REQUESTS)
    result: dict[str, Any] = {
        "response_bytes": size,
        "latency": _guarded(lambda: client.latency(target, latency_seconds)),
    }
    result["throughput"] = {}
    for level in inflight:
        cpu, wall = cpu_seconds(pid), time.monotonic()
        run = _guarded(lambda: client.throughput(target, level, seconds))  # noqa: B023 - called at once
        run["server_cores"] = round((cpu_seconds(pid) - cpu) / (time.monotonic() - wall), 2)
        result["throughput"][str(level)] = run
        memory.append(memory_mb(pid))
    _, after = verify()
    result["verified_after_load"] = after is None
    if after:
        result["error_after_load"] = after
    return result

"""How each server under test is configured, started on 127.0.0.1 ports, and judged ready.

Per-request logging is turned off where the server has a switch for it (every server then pays the same
nothing for logs); otherwise each runs its defaults, and `settings` in the report says what was changed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _venvs
from _cases import ModelCase, triton_repository
from _harness import ServerProcess, free_ports, http_get_status
from _verify import grpc_call

BENCH = Path(__file__).resolve().parent
EDGEWISE = BENCH.parent / ".venv" / "bin" / "edgewise-score"


@dataclass
class Launch:
    """A started server: its process tree, its ports, which REST encodings to try, and what was set."""

    name: str
    process: ServerProcess
    grpc_port: int
    http_port: int | None
    settings: dict[str, object] = field(default_factory=dict)
    rest_encodings: tuple[str, ...] = ("json",)

    def stop(self) -> None:
        self.process.stop()


def _ready(proc: ServerProcess, probe: Callable[[], bool], timeout: float) -> None:
    """Wait for readiness; a server that never gets there is stopped before the error propagates."""
    try:
        proc.wait_ready(probe, timeout)
    except BaseException:
        proc.stop()
        raise


def _http_ready(port: int, paths: list[str]) -> Callable[[], bool]:
    return lambda: all(http_get_status(port, path) == 200 for path in paths)


def floor(cases: list[ModelCase], work: Path, threads: int, timeout: float) -> Launch:
    (port,) = free_ports(1)
    models = [f"{c.name}={c.onnx_path}" for c in cases]
    cmd = [
        sys.executable,
        str(BENCH / "_floor_server.py"),
        "--port",
        str(port),
        "--threads",
        str(threads),
        *models,
    ]
    proc = ServerProcess("floor", cmd, work / "logs" / "floor.log")
    _ready(proc, lambda: all(grpc_call(port, c)[0] is not None for c in cases), timeout)
    settings = {
        "server": "bench/_floor_server.py (grpc.aio, ModelInfer only)",
        "onnxruntime_threads": threads,
    }
    return Launch("floor", proc, port, None, settings)


def edgewise(cases: list[ModelCase], work: Path, threads: int, timeout: float, workers: int | None) -> Launch:
    if not EDGEWISE.exists():
        raise RuntimeError(f"{EDGEWISE} is not installed")
    grpc_port, http_port = free_ports(2)
    repo = triton_repository(cases, work / "edgewise-repository")
    cmd = [
        str(EDGEWISE),
        "--model-repository",
        str(repo),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
    ]
    usage = subprocess.run([str(EDGEWISE), "--help"], capture_output=True, text=True, timeout=60).stdout
    settings: dict[str, object] = {
        "model_config": json.loads((repo / cases[0].name / "config.json").read_text())
    }
    if "--intra-op-threads" in usage:
        cmd += ["--intra-op-threads", str(threads)]
        settings["onnxruntime_threads"] = threads
    if workers is not None:
        if "--workers" not in usage:
            raise RuntimeError("--edgewise-workers given, but edgewise-score has no --workers option")
        cmd += ["--workers", str(workers)]
    settings["command"] = [Path(cmd[0]).name, *cmd[1:2], "DIR", *cmd[3:]]
    proc = ServerProcess("edgewise", cmd, work / "logs" / "edgewise.log")
    paths = ["/v2/health/ready", *(f"/v2/models/{c.name}/ready" for c in cases)]
    _ready(proc, _http_ready(http_port, paths), timeout)
    transport = re.search(r"\(gRPC transport: (\w+)\)", (work / "logs" / "edgewise.log").read_text())
    settings["grpc_transport"] = transport.group(1) if transport else "unknown"
    return Launch("edgewise", proc, grpc_port, http_port, settings, ("json", "binary"))


def mlserver(cases: list[ModelCase], work: Path, threads: int, timeout: float) -> Launch:
    python = _venvs.ensure(_venvs.MLSERVER, work.parent / "venvs" / "mlserver.log")
    grpc_port, http_port, metrics_port = free_ports(3)
    root = work / "mlserver"
    root.mkdir(parents=True, exist_ok=True)
    server_settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(server_settings))
    for case in cases:
        (root / case.name).mkdir(exist_ok=True)
        model = {
            "name": case.name,
            "implementation": "_mlserver_runtime.OnnxRuntimeModel",
            "parameters": {"uri": str(case.onnx_path), "extra": {"threads": threads}},
        }
        (root / case.name / "model-settings.json").write_text(json.dumps(model))
    cmd = [str(python.parent / "mlserver"), "start", str(root)]
    proc = ServerProcess(
        "mlserver", cmd, work / "logs" / "mlserver.log", cwd=root, env={"PYTHONPATH": str(BENCH)}
    )
    paths = ["/v2/health/ready", *(f"/v2/models/{c.name}/ready" for c in cases)]
    _ready(proc, _http_ready(http_port, paths), timeout)
    settings = {
        "settings.json": server_settings,
        "parallel_workers": "default (1)",
        "adaptive_batching": "off",
        "runtime": "bench/_mlserver_runtime.py",
        "onnxruntime_threads": threads,
        "rest_binary": "tried; MLServer 1.7 parses the whole body as JSON and answers 500",
        "version": _version(python, "mlserver"),
    }
    return Launch("mlserver", proc, grpc_port, http_port, settings, ("json", "binary"))


def kserve(cases: list[ModelCase], work: Path, threads: int, timeout: float) -> Launch:
    python = _venvs.ensure(_venvs.KSERVE, work.parent / "venvs" / "kserve.log")
    grpc_port, http_port = free_ports(2)
    flags = [f"--http_port={http_port}", f"--grpc_port={grpc_port}", "--enable_latency_logging=false"]
    models = [f"{c.name}={c.onnx_path}" for c in cases]
    cmd = [str(python), str(BENCH / "_kserve_server.py"), *flags, f"--bench-threads={threads}", *models]
    proc = ServerProcess("kserve", cmd, work / "logs" / "kserve.log")
    paths = ["/v2/health/ready", *(f"/v2/models/{c.name}/ready" for c in cases)]
    _ready(proc, _http_ready(http_port, paths), timeout)
    settings = {
        "flags": flags,
        "workers": "default (1)",
        "access_log": "uvicorn.access at WARNING",
        "runtime": "bench/_kserve_server.py",
        "onnxruntime_threads": threads,
        "listens_on": "0.0.0.0 / [::] (KServe has no host option; traffic goes to 127.0.0.1 only)",
        "version": _version(python, "kserve"),
    }
    return Launch("kserve", proc, grpc_port, http_port, settings, ("json", "binary"))


def _version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60
    ).stdout.strip()

"""MLflow's side of the tracking benchmark: its venv, an `mlflow server` on 127.0.0.1, the workload script.

The server keeps its defaults (4 workers) except for the store (SQLite plus proxied artifacts in a fresh
directory) and, by default, the HTTP server: MLflow 3.17's default uvicorn answered every request on a
kept-alive connection about 40 ms late on this machine (even /health), while gunicorn, which MLflow still
ships and supports, answers in about 1 ms, so gunicorn gives MLflow its best showing; `--mlflow-http uvicorn`
measures the default. Telemetry is switched off in the server and the client, which only know 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import _venvs
from _harness import ServerProcess, free_ports, http_get_status
from _tracking_common import Workloads, local_only_env

BENCH = Path(__file__).resolve().parent
MLFLOW = _venvs.VenvSpec("mlflow", ("mlflow>=3,<4",), "import mlflow, mlflow.server")

# MLflow reads these; DO_NOT_TRACK is the cross-tool convention it also honours.
NO_PHONE_HOME = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def start_server(python: Path, work: Path, timeout: float, http: str) -> tuple[ServerProcess, str]:
    """`mlflow server` with a SQLite backend under `work`, ready when /health answers 200."""
    (port,) = free_ports(1)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(python.parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--artifacts-destination",
        str(work / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--gunicorn-opts", "--log-level warning"] if http == "gunicorn" else []),
    ]
    env = local_only_env(NO_PHONE_HOME)
    server = ServerProcess("mlflow", cmd, work / "server.log", cwd=work, env=env)
    try:
        server.wait_ready(lambda: http_get_status(port, "/health") == 200, timeout)
    except BaseException:
        server.stop()
        raise
    return server, f"http://127.0.0.1:{port}"


def run(work: Path, workloads: Workloads, model_file: Path, timeout: float, http: str) -> dict[str, Any]:
    """Build or reuse the venv, start a fresh server, run the workloads in a separate process, stop it."""
    python = _venvs.ensure(MLFLOW, _venvs.VENV_ROOT / "mlflow.log")
    server, url = start_server(python, work, timeout, http)
    try:
        cmd = [
            str(python),
            str(BENCH / "_tracking_mlflow_work.py"),
            *workloads.argv(),
            "--model-file",
            str(model_file),
        ]
        env = local_only_env({**NO_PHONE_HOME, "MLFLOW_TRACKING_URI": url})
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=work, timeout=workloads.timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"MLflow workloads failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["server"] = {
            "url": url,
            "backend": "sqlite",
            "http_server": http,
            "settings": "mlflow server defaults (4 workers) + --artifacts-destination",
            "seconds_to_ready": server.ready_seconds,
        }
        return result
    finally:
        server.stop()

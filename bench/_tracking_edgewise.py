"""edgewise's side of the tracking benchmark: a fresh `edgewise up`, a submitted training run, the rest.

The one-call-at-a-time workload runs where a user's script would: as a run submitted to the service, with
`Run.get_context()` bound to it; the script times itself from its first `run.log()` to the query that sees
every point, the same span the MLflow script times. The other workloads run in a plain client process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from _harness import ServerProcess
from _tracking_common import Workloads, local_only_env

BENCH = Path(__file__).resolve().parent
EDGEWISE = Path(sys.executable).parent / "edgewise"
WORKER = BENCH / "_tracking_edgewise_work.py"
RESULT_MARK = "TRACKING-BENCH-RESULT "
_LIVE = re.compile(r"edgewise workspace live on (http://127\.0\.0\.1:\d+) ")


def start_service(work: Path, timeout: float) -> tuple[ServerProcess, str, str]:
    """`edgewise up` on a fresh data directory and any free port; ready once it prints its live line."""
    data = work / "data"
    cmd = [str(EDGEWISE), "up", "--data", str(data), "--port", "0", "--host", "127.0.0.1", "--mqtt-port", "0"]
    server = ServerProcess("edgewise", cmd, work / "service.log", env=local_only_env({}))
    found: list[str] = []

    def live() -> bool:
        match = _LIVE.search(server.log.read_text(errors="replace"))
        if match:
            found.append(match[1])
        return bool(match)

    try:
        server.wait_ready(live, timeout)
    except BaseException:
        server.stop()
        raise
    return server, found[0], (data / "token").read_text().strip()


def _result(text: str, what: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARK):
            parsed: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            return parsed
    raise RuntimeError(f"the {what} printed no result line:\n{text[-3000:]}")


def train(url: str, token: str, work: Path, workloads: Workloads, model_file: Path) -> dict[str, Any]:
    """Submit the worker as a run's script (the model file beside it) and read its result from its log."""
    from edgewise.cloud.client import Client
    from edgewise.cloud.store.records import RunSpec

    source = work / "train-source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    shutil.copyfile(WORKER, source / "train.py")
    shutil.copyfile(model_file, source / "model.onnx")
    spec = RunSpec(
        script="train.py", arguments=["--part", "train", *workloads.argv(), "--model-file", "model.onnx"]
    )
    with Client(url=url, token=token) as client:
        run = client.submit_run(experiment="tracking-bench", source=source, spec=spec, name="one-at-a-time")
        finished = client.wait_run(run.id, timeout=workloads.timeout, poll=0.2)
        stdout, _, _ = client.read_logs(run.id, stream="stdout")
        stderr, _, _ = client.read_logs(run.id, stream="stderr")
    text = stdout.decode(errors="replace")
    if finished.status.value != "completed":
        reason = finished.status_reason or ""
        raise RuntimeError(
            f"training run {run.id} ended {finished.status.value} {reason}:\n{stderr[-3000:]!r}"
        )
    result = _result(text, f"training run {run.id}")
    result["run_id"] = run.id
    result["run_seconds_queued_to_end"] = round((finished.ended_at or 0) - finished.created_at, 3)
    return result


def registry(url: str, token: str, work: Path, workloads: Workloads, run_id: str) -> dict[str, Any]:
    """Batched logging, registrations and the tag search from a separate client process."""
    cmd = [sys.executable, str(WORKER), "--part", "registry", *workloads.argv(), "--run-id", run_id]
    env = local_only_env({"EDGEWISE_URL": url, "EDGEWISE_TOKEN": token})
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, timeout=workloads.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"edgewise registry workloads failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return _result(done.stdout, "registry workloads")


def run(work: Path, workloads: Workloads, model_file: Path, timeout: float) -> dict[str, Any]:
    """Start a fresh service, run both parts, stop it."""
    server, url, token = start_service(work, timeout)
    try:
        trained = train(url, token, work, workloads, model_file)
        result = {**trained, **registry(url, token, work, workloads, trained["run_id"])}
        result["server"] = {
            "url": url,
            "backend": "sqlite",
            "settings": "edgewise up defaults on a fresh --data directory",
            "seconds_to_ready": server.ready_seconds,
        }
        return result
    finally:
        server.stop()

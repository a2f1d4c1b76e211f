"""The edge half of the demo: a local device runs `edgewise-agent`, the image built in the workspace is deployed
to it with `edgewise deploy create`, pulled by digest from the workspace's own registry, scored over REST and
gRPC on the device, and the fleet's health is shown.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from examples.fpga_demo import deploy_fpga_module

ROOT = Path(__file__).resolve().parent.parent
AGENT = str(Path(sys.executable).with_name("edgewise-agent"))
DEVICE = "demo-device"
MODULE = "digits"

Cli = Callable[..., str]


def _device(env: dict[str, str], edgewise: Cli) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(
        edgewise(env, "device", "show", DEVICE, "--output", "json", capture=True, quiet=True)
    )
    return shown


def _wait_reported(
    env: dict[str, str], edgewise: Cli, what: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        reported = _device(env, edgewise).get("reported") or {}
        if done(reported):
            return reported
        if time.monotonic() > deadline:
            raise SystemExit(f"{DEVICE} did not report {what}; last report:\n{json.dumps(reported, indent=1)}")
        time.sleep(0.3)


def _wait_telemetry(env: dict[str, str], edgewise: Cli) -> None:
    """The agent sends device health every `intervalSecs` (10 s by default): wait for the first record."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = edgewise(env, "telemetry", DEVICE, "--kind", "health", "--output", "json", capture=True, quiet=True)
        if json.loads(shown):
            return
        time.sleep(0.5)


def _score(http_url: str, grpc_target: str) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    samples = (digits.data[:8] / 16.0).astype(np.float32)
    rest = httpclient.InferenceServerClient(http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("input", list(samples.shape), "FP32")
    tensor.set_data_from_numpy(samples, binary_data=False)
    labels = rest.infer("digits-logreg", [tensor]).as_numpy("label")
    print("device REST  digits-logreg:", labels.tolist(), "expected", digits.target[:8].tolist())
    grpc = grpcclient.InferenceServerClient(grpc_target)
    tensor = grpcclient.InferInput("input", list(samples.shape), "FP32")
    tensor.set_data_from_numpy(samples)
    print("device gRPC  digits-logreg:", grpc.infer("digits-logreg", [tensor]).as_numpy("label").tolist())


def deploy_to_local_device(env: dict[str, str], work: Path, edgewise: Cli) -> None:
    """Register a device, start its agent, deploy the demo image to it, score it, then delete the deployment."""
    added = json.loads(edgewise(env, "device", "add", DEVICE, "--tag", "site=lab", "--output", "json", capture=True))
    connection = added["connection_string"]
    print(f"connection string: {connection.split(';Secret=')[0]};Secret=***;...")
    state = work / "agent"
    log = work / "agent.log"
    print(f"$ edgewise-agent --connection-string ... --state-dir {state.relative_to(ROOT)}")
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [AGENT, "--connection-string", connection, "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    try:
        started = time.monotonic()
        edgewise(
            env, "deploy", "create", MODULE, "--image", "digits-logreg", "--module", MODULE,
            "--target", "tags.site = 'lab'", "--wait",
        )
        print(f"deployed in {time.monotonic() - started:.1f}s (the device pulled the image from the workspace's /v2/)")
        reported = _wait_reported(
            env,
            edgewise,
            "the module running",
            lambda r: (r.get("modules") or {}).get(MODULE, {}).get("runtimeStatus") == "running",
        )
        entry = reported["modules"][MODULE]
        print(
            f"{DEVICE}: sandbox {reported['agent']['sandbox']}, {MODULE} pid {entry['pid']}, "
            f"endpoints {json.dumps(entry['endpoints'])}"
        )
        _score(entry["endpoints"]["http"], entry["endpoints"]["grpc"])
        print()
        deploy_fpga_module(env, edgewise, DEVICE)
        print()
        edgewise(env, "device", "show", DEVICE)
        _wait_telemetry(env, edgewise)
        edgewise(env, "telemetry", DEVICE, "--kind", "health", "--limit", "3")
        edgewise(env, "device", "health")
        edgewise(env, "deploy", "delete", MODULE)
        _wait_reported(env, edgewise, "the module removed", lambda r: not r.get("modules"))
        print(f"{DEVICE}: module removed")
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    print(f"agent stopped (log: {log.relative_to(ROOT)})")

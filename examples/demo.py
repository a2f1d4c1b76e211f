"""The edgewise demo: train and register a model in the workspace, then serve it with edgewise-score.

1. `edgewise up`, submit examples/train (scikit-learn digits, one child run per setting), compare the runs,
   register the best model (as exported ONNX, and converted from its pickle), build its image, deploy the
   image to a local device's `edgewise-agent` and score it there, and download the model.
2. Serve it beside two built-in models with edgewise-score and score them over gRPC and REST.

Run with `make demo`. Everything stays on 127.0.0.1 and in ./.demo.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.models import matmul_model, mlp_model  # noqa: E402
from examples.workspace_demo import train_and_register  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_repository(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    mlp_model(root / "digits" / "1" / "model.onnx")
    (root / "digits" / "config.json").write_text(
        json.dumps({"max_batch_size": 32, "dynamic_batching": {"max_queue_delay_microseconds": 200}})
    )
    matmul_model(root / "projection" / "1" / "model.onnx")


def wait_ready(http_port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"edgewise-score exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"edgewise-score did not become ready:\n{log.read_text()}")


def main() -> None:
    work = ROOT / ".demo"
    repo = work / "models"
    build_repository(repo)
    train_and_register(work, repo / "digits-logreg" / "1")
    grpc_port, http_port = free_port(), free_port()
    log = work / "edgewise-score.log"
    score = Path(sys.executable).with_name("edgewise-score")
    print(f"$ edgewise-score --model-repository {repo.relative_to(ROOT)} --grpc-port {grpc_port} "
          f"--http-port {http_port} --metrics")
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(score), "--model-repository", str(repo), "--grpc-port", str(grpc_port),
             "--http-port", str(http_port), "--metrics"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_ready(http_port, server, log)
        print("server ready\n")
        grpc_c = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        meta = grpc_c.get_model_metadata("digits", as_json=True)
        print("model metadata (gRPC):", json.dumps(meta))

        rng = np.random.default_rng(7)
        images = rng.random((4, 784), dtype=np.float32)
        tensor = grpcclient.InferInput("input", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        result = grpc_c.infer("digits", [tensor], request_id="demo-grpc")
        print("gRPC  predictions:", result.as_numpy("probabilities").argmax(axis=1).tolist())

        http_c = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        tensor = httpclient.InferInput("input", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=False)
        result = http_c.infer("digits", [tensor], request_id="demo-rest")
        print("REST  predictions:", result.as_numpy("probabilities").argmax(axis=1).tolist())

        x = np.arange(16, dtype=np.float32).reshape(1, 16)
        tensor = grpcclient.InferInput("x", [1, 16], "FP32")
        tensor.set_data_from_numpy(x)
        y = grpc_c.infer("projection", [tensor]).as_numpy("y")
        print("projection y[0, :4]:", [round(float(v), 3) for v in y[0, :4]])

        from sklearn.datasets import load_digits

        digits = load_digits()
        samples = (digits.data[:8] / 16.0).astype(np.float32)
        tensor = grpcclient.InferInput("input", list(samples.shape), "FP32")
        tensor.set_data_from_numpy(samples)
        labels = grpc_c.infer("digits-logreg", [tensor]).as_numpy("label")
        print("registered digits-logreg:", labels.tolist(), "expected", digits.target[:8].tolist())

        stats = grpc_c.get_inference_statistics("digits", as_json=True)["model_stats"][0]
        print(f"\ndigits: {stats['inference_count']} inferences in {stats['execution_count']} executions")
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as r:
            lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("edgewise_inference_requests_total")]
        print("metrics:", *lines, sep="\n  ")
    finally:
        server.terminate()
        server.wait(timeout=15)
    print(f"\nserver stopped (log: {log.relative_to(ROOT)})")


if __name__ == "__main__":
    main()

"""The FPGA part of the demo: the registered digits model compiled for an iCE40 UP5K, deployed to the local
device as a module of `type: fpga`, and scored over gRPC from the virtual FPGA (the design compiled by CXXRTL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

MODEL = "digits-logreg"
IMAGE = "digits-fpga"
MODULE = "digits-fpga"

Cli = Callable[..., str]


def _calibration(work: Path) -> Path:
    """Digits scaled as in training, with labels: half calibrates the quantizer, half measures its accuracy."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = work / "calibration.npz"
    np.savez(path, x=(digits.data / 16.0).astype(np.float32), y=digits.target)
    return path


def build_fpga_image(env: dict[str, str], work: Path, edgewise: Cli) -> None:
    """`edgewise image build --kind fpga`: quantize, simulate, synthesize, place and route, pack."""
    print(
        "(the first FPGA build compiles the YoWASP tools' WebAssembly once and places and routes a template for this "
        "model's shape, a minute or two; retrained models of the same shape are patched into it in seconds)"
    )
    edgewise(
        env, "image", "build", "--kind", "fpga", "--model", MODEL, "--name", IMAGE, "--parallelism", "8",
        "--calibration", str(_calibration(work)),
    )  # fmt: skip
    edgewise(env, "image", "show", IMAGE)


def _wait_module(env: dict[str, str], edgewise: Cli, device: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        shown = json.loads(edgewise(env, "device", "show", device, "--output", "json", capture=True, quiet=True))
        entry = ((shown.get("reported") or {}).get("modules") or {}).get(MODULE) or {}
        if entry.get("runtimeStatus") == "running":
            return dict(entry)
        time.sleep(0.5)
    raise SystemExit(f"{device} did not report {MODULE} running")


def deploy_fpga_module(env: dict[str, str], edgewise: Cli, device: str) -> None:
    """Deploy the FPGA image beside the CPU module, score it, then remove it."""
    started = time.monotonic()
    edgewise(env, "deploy", "create", MODULE, "--image", IMAGE, "--device", device, "--module", MODULE, "--wait")
    entry = _wait_module(env, edgewise, device)
    print(f"deployed the FPGA module in {time.monotonic() - started:.1f}s (the device compiled the design once)")
    from sklearn.datasets import load_digits

    digits = load_digits()
    samples = (digits.data[:8] / 16.0).astype(np.float32)
    client = grpcclient.InferenceServerClient(entry["endpoints"]["grpc"])
    tensor = grpcclient.InferInput("input", list(samples.shape), "FP32")
    tensor.set_data_from_numpy(samples)
    result = client.infer(MODEL, [tensor])
    cycles = result.get_response().parameters["fpga_cycles"].int64_param
    print(f"device gRPC  {MODULE}:", result.as_numpy("label").tolist(), "expected", digits.target[:8].tolist())
    print(f"             {cycles} FPGA clock cycles for 8 inferences ({cycles / 8 / 48:.2f} µs each at 48 MHz)")
    edgewise(env, "deploy", "delete", MODULE)

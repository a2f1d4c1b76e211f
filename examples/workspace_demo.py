"""The workspace half of the demo: start `edgewise up`, submit the training script, compare, register, package,
deploy the image to a local device's agent, and download the model.

Every step is the `edgewise` command a user would type; the service runs on 127.0.0.1 with its data in .demo/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from examples.edge_demo import deploy_to_local_device
from examples.fpga_demo import build_fpga_image

ROOT = Path(__file__).resolve().parent.parent
EDGEWISE = str(Path(sys.executable).with_name("edgewise"))
_LIVE = re.compile(r"edgewise workspace live on (http://\S+) ")


@contextmanager
def workspace(data: Path) -> Iterator[dict[str, str]]:
    """A running service; yields the environment the CLI needs to reach it."""
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    log = data.parent / "workspace.log"
    print(f"$ edgewise up --data {data.relative_to(ROOT)} --port 0 --mqtt-port 0")
    with log.open("wb") as out:
        service = subprocess.Popen(
            [EDGEWISE, "up", "--data", str(data), "--port", "0", "--mqtt-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            # The FPGA tools' compiled WebAssembly outlives the demo's data directory, so re-runs start warm.
            env={"EDGEWISE_FPGA_CACHE": str(data.parent / "fpga-cache"), **os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        url = _wait_live(log, service)
        print(f"workspace live on {url}\n")
        yield {**os.environ, "EDGEWISE_URL": url, "EDGEWISE_DATA": str(data), "no_proxy": "*"}
    finally:
        service.terminate()
        service.wait(timeout=30)


def _wait_live(log: Path, service: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = _LIVE.search(log.read_text(errors="replace"))
        if match:
            return match[1]
        if service.poll() is not None:
            raise SystemExit(f"edgewise up exited with {service.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    raise SystemExit(f"edgewise up did not start:\n{log.read_text()}")


def edgewise(env: dict[str, str], *args: str, capture: bool = False, quiet: bool = False) -> str:
    if not quiet:
        print("$ edgewise " + " ".join(args))
    result = subprocess.run([EDGEWISE, *args], env=env, cwd=ROOT, text=True, capture_output=capture)
    if result.returncode != 0:
        raise SystemExit(
            f"edgewise {args[0]} {args[1] if len(args) > 1 else ''} failed ({result.returncode}):\n"
            f"{result.stdout or ''}{result.stderr or ''}"
        )
    return result.stdout if capture else ""


def package_image(env: dict[str, str], work: Path) -> None:
    """Build an OCI image of digits-logreg, show it, and export it as an OCI archive (inspected by skopeo)."""
    print()
    edgewise(env, "image", "build", "--model", "digits-logreg", "--name", "digits-logreg", "--tag", "demo=yes")
    edgewise(env, "image", "show", "digits-logreg")
    archive = work / "digits-logreg-image.tar"
    edgewise(env, "image", "export", "digits-logreg", "--format", "oci-archive", "-o", str(archive))
    skopeo = shutil.which("skopeo")
    if skopeo is not None:
        print(f"$ skopeo inspect oci-archive:{archive}")
        subprocess.run([skopeo, "inspect", f"oci-archive:{archive}"], check=True)
    print()
    build_fpga_image(env, work, edgewise)


def train_and_register(work: Path, model_dir: Path) -> None:
    """Train in the workspace, register the best run's model, and download it into `model_dir`."""
    with workspace(work / "workspace") as env:
        edgewise(env, "run", "submit", "--source", "examples/train", "--wait")
        runs = json.loads(edgewise(env, "run", "list", "--experiment", "digits", "--output", "json", capture=True))
        run_id = runs[0]["id"] if isinstance(runs, list) else runs["items"][0]["id"]
        print()
        edgewise(env, "run", "list", "--experiment", "digits", "--children", "--order-by", "metrics.accuracy desc")
        edgewise(env, "run", "metrics", run_id, "--name", "accuracy_by_c")
        edgewise(
            env,
            "model",
            "register",
            "--name",
            "digits-logreg",
            "--run",
            run_id,
            "--path",
            "outputs/model.onnx",
            "--tag",
            "dataset=sklearn-digits",
            "--description",
            "logistic regression on 8x8 digits",
        )
        edgewise(
            env,
            "model",
            "register",
            "--name",
            "digits-logreg-converted",
            "--run",
            run_id,
            "--path",
            "outputs/model.pkl",
            "--convert",
            "onnx",
        )
        edgewise(env, "model", "list", "--tag", "dataset")
        edgewise(env, "model", "show", "digits-logreg")
        package_image(env, work)
        print()
        deploy_to_local_device(env, work, edgewise)
        shutil.rmtree(model_dir, ignore_errors=True)
        edgewise(env, "model", "download", "digits-logreg", "--to", str(model_dir))
        print()

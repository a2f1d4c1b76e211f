"""Private virtual environments for competitor servers, whose grpc/protobuf pins clash with the main venv."""

from __future__ import annotations

import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

VENV_ROOT = Path(__file__).resolve().parent.parent / ".bench" / "venvs"


@dataclass(frozen=True)
class VenvSpec:
    """One competitor's venv: its directory name, what pip installs, and a module that proves it works."""

    name: str
    requirements: tuple[str, ...]
    probe: str


# uvloop 0.22 breaks the inference workers of MLServer 1.7.1 (SeldonIO/MLServer#2286); pinning it is the fix.
MLSERVER = VenvSpec(
    "mlserver", ("mlserver==1.7.*", "uvloop<0.22", "onnxruntime", "numpy"), "import mlserver, onnxruntime"
)
KSERVE = VenvSpec("kserve", ("kserve==0.21.*", "onnxruntime", "numpy"), "import kserve, onnxruntime")


def python_of(spec: VenvSpec) -> Path:
    return VENV_ROOT / spec.name / "bin" / "python"


def _stamp(spec: VenvSpec) -> Path:
    return VENV_ROOT / spec.name / ".bench-requirements"


def _works(python: Path, probe: str) -> bool:
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", probe], capture_output=True, timeout=300).returncode == 0


def ensure(spec: VenvSpec, log: Path) -> Path:
    """Create (or reuse) the venv and return its python; raises RuntimeError with pip's tail on failure."""
    python, wanted = python_of(spec), "\n".join(spec.requirements)
    stamp_ok = _stamp(spec).exists() and _stamp(spec).read_text() == wanted
    if stamp_ok and _works(python, spec.probe):
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(VENV_ROOT / spec.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *spec.requirements]
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    if done.returncode != 0 or not _works(python, spec.probe):
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"installing {spec.name} failed (see {log}):\n" + "\n".join(tail))
    _stamp(spec).write_text(wanted)
    return python


if __name__ == "__main__":
    for item in (MLSERVER, KSERVE):
        print(item.name, ensure(item, VENV_ROOT / f"{item.name}.log"), file=sys.stderr)

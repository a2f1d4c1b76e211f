"""Python environments for runs: one virtual environment per distinct requirements file, built once.

Building an environment takes seconds to minutes, so environments are cached under the hash of their
normalised requirements and shared by every run that asks for the same packages. A build happens in a
temporary folder that is renamed into place only when pip succeeded: a half-built environment is never
used. The environment also sees the service's own packages (after its own, so the run's requirements win),
which keeps `import edgewise` working in every training script.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from edgewise.cloud.errors import WorkspaceError

READY_MARKER = ".edgewise-ready"
SERVICE_PTH = "zz-edgewise-service.pth"  # processed last, so its folders go after the environment's own
BUILD_TIMEOUT = 3600.0  # seconds for venv + pip together
_TAIL_LINES = 25


def normalise_requirements(text: str) -> str:
    """The requirements without comments, blank lines or surrounding spaces: equal texts share a cache entry."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        comment = line.find(" #")
        if comment >= 0:
            line = line[:comment].rstrip()
        if line:
            lines.append(line)
    return "\n".join(lines)


def requirements_hash(text: str) -> str:
    return hashlib.sha256(normalise_requirements(text).encode("utf-8")).hexdigest()


class EnvironmentCache:
    """Virtual environments under `root/<sha256 of the normalised requirements>/`; thread- and process-safe."""

    def __init__(self, *, root: Path, base_python: str = sys.executable) -> None:
        self.root = root
        self.base_python = base_python
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._service_paths: list[str] | None = None

    def prepare(self, requirements: str | None, *, log: BinaryIO) -> str:
        """The python executable a run with these requirements uses; builds its environment on first use."""
        if requirements is None or not normalise_requirements(requirements):
            return self.base_python
        digest = requirements_hash(requirements)
        target = self.root / digest
        with self._lock(digest):
            if not (target / READY_MARKER).is_file():
                _write(log, f"edgewise: building the run's environment {digest[:12]} (first use of these requirements)")
                self._build(requirements, target, log)
            else:
                _write(log, f"edgewise: using the cached environment {digest[:12]}")
        return str(_python(target))

    def path(self, requirements: str) -> Path:
        """Where the environment for `requirements` lives (built or not)."""
        return self.root / requirements_hash(requirements)

    @contextlib.contextmanager
    def _lock(self, digest: str) -> Iterator[None]:
        """One build per hash: a thread lock for this service, a file lock for other processes on the data."""
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with (self.root / f".{digest}.lock").open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _build(self, requirements: str, target: Path, log: BinaryIO) -> None:
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".build-{target.name[:12]}-"))
        try:
            tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
            _run([self.base_python, "-m", "venv", str(staging)], log=log, tail=tail, what="create the environment")
            (staging / "requirements.txt").write_text(requirements, encoding="utf-8")
            pip = [str(_python(staging)), "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
            _run([*pip, "-r", str(staging / "requirements.txt")], log=log, tail=tail, what="install the requirements")
            _relocate_scripts(staging, target)
            site_packages = _site_packages(str(_python(staging)))
            lines = [f"import site; site.addsitedir({path!r})" for path in self._service_site_dirs()]
            (site_packages / SERVICE_PTH).write_text("\n".join(lines) + "\n", encoding="utf-8")
            (staging / READY_MARKER).write_text(normalise_requirements(requirements) + "\n", encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)  # an unfinished folder from a crashed older version: never used, never ready
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _service_site_dirs(self) -> list[str]:
        """The service interpreter's site folders; adding them runs their .pth files, editable installs included."""
        if self._service_paths is None:
            code = "import json, site; print(json.dumps(site.getsitepackages() + [site.getusersitepackages()]))"
            result = subprocess.run(
                [self.base_python, "-c", code], capture_output=True, check=False, timeout=60, stdin=subprocess.DEVNULL
            )
            if result.returncode != 0:
                raise WorkspaceError(
                    f"cannot ask {self.base_python} for its site-packages: "
                    f"{result.stderr.decode(errors='replace').strip()[-500:]}"
                )
            paths = [str(p) for p in json.loads(result.stdout)]
            self._service_paths = [p for p in paths if Path(p).is_dir()]
        return self._service_paths


def _python(env: Path) -> Path:
    return env / "bin" / "python"


def _site_packages(python: str) -> Path:
    result = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return Path(result.stdout.decode().strip())


def _relocate_scripts(staging: Path, target: Path) -> None:
    """Point the scripts in bin/ (shebangs, activate) at the final folder instead of the staging one."""
    old, new = str(staging).encode(), str(target).encode()
    for script in (staging / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if old in data and b"\x00" not in data[:4096]:
            script.write_bytes(data.replace(old, new))


def _run(argv: list[str], *, log: BinaryIO, tail: collections.deque[str], what: str) -> None:
    """Run a build step with its output copied to `log`; a failure raises with the last lines of it."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the build sees only the new environment
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    try:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    except OSError as exc:
        raise WorkspaceError(f"cannot {what}: {argv[0]}: {exc.strerror or exc}") from None
    assert process.stdout is not None
    with process:
        for line in process.stdout:
            log.write(line)
            log.flush()
            tail.append(line.decode("utf-8", errors="replace").rstrip())
        code = process.wait(timeout=BUILD_TIMEOUT)
    if code != 0:
        output = "\n".join(tail) or "(no output)"
        raise WorkspaceError(f"could not {what} for the run (exit code {code}); the end of the output:\n{output}")


def _write(log: BinaryIO, message: str) -> None:
    log.write(message.encode() + b"\n")
    log.flush()

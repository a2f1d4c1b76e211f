"""Fixtures of the module tests: a hand-built unpacked image (rootfs + config), launch specs, sandboxes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from edgewise.runtime.agent.drivers import BubblewrapSandbox, LaunchSpec, PlainSandbox, Sandbox
from edgewise.runtime.agent.drivers.bubblewrap import bwrap_works, find_bwrap
from edgewise.runtime.agent.model import ModuleSettings
from edgewise.runtime.agent.supervisor import ModuleProcess, Supervisor

from tests.runtime.scoring.builders import identity_model
from tests.support import HOST, free_port

ENTRYPOINT = [
    "edgewise-score", "--model-repository", "/var/lib/edgewise/models",
    "--host", "0.0.0.0", "--http-port", "8000", "--grpc-port", "8001",
]  # fmt: skip
BWRAP = find_bwrap()
HAVE_BWRAP = BWRAP is not None and bwrap_works(BWRAP)[0]
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap is not installed or does not work here")


def make_image(root: Path, *, model: str = "iris", corrupt: bool = False) -> tuple[Path, dict[str, Any]]:
    """An unpacked model image: rootfs with one model (FP32 [batch, 4] identity) and the image config."""
    rootfs = root / "rootfs"
    model_file = rootfs / "var/lib/edgewise/models" / model / "1" / "model.onnx"
    if corrupt:
        model_file.parent.mkdir(parents=True)
        model_file.write_bytes(b"this is not an onnx model")
    else:
        identity_model(model_file, "FP32", ("batch", 4))
    config_file = rootfs / "etc/edgewise/module.json"
    config_file.parent.mkdir(parents=True)
    config_file.write_text(json.dumps({"models": [model]}))
    config = {"Entrypoint": ENTRYPOINT, "Cmd": ["--log-level", "info"], "Env": ["MODEL_NAME=" + model]}
    return rootfs, config


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder for admin sockets (a unix socket path holds at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ew-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ports() -> ModuleSettings:
    return ModuleSettings(http_port=free_port(), grpc_port=free_port(), host=HOST, startup_timeout=30.0)


LaunchFactory = Callable[..., LaunchSpec]


@pytest.fixture
def make_launch(tmp_path: Path, short_dir: Path, ports: ModuleSettings) -> LaunchFactory:
    """LaunchSpec for generation N of module "iris"; each generation gets its own image folder and admin dir."""

    def factory(generation: int = 1, *, corrupt: bool = False, settings: ModuleSettings | None = None,
                **overrides: Any) -> LaunchSpec:  # fmt: skip
        rootfs, config = make_image(tmp_path / f"image-{generation}", corrupt=corrupt)
        admin = short_dir / f"admin-{generation}"
        admin.mkdir()
        values: dict[str, Any] = {
            "module": "iris",
            "generation": generation,
            "rootfs": rootfs,
            "image_config": config,
            "settings": settings or ports,
            "env": {"OMP_NUM_THREADS": "1"},
            "data_dir": tmp_path / "data",
            "admin_dir": admin,
            "log_path": tmp_path / "log",
        }
        values.update(overrides)
        return LaunchSpec(**values)

    return factory


SANDBOXES = [
    pytest.param("bubblewrap", marks=needs_bwrap),
    pytest.param("none"),
]


@pytest.fixture(params=SANDBOXES)
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    return BubblewrapSandbox(executable=BWRAP or "bwrap") if request.param == "bubblewrap" else PlainSandbox()


class Tracker:
    """Stops every module a test started, even when the test failed half-way."""

    def __init__(self) -> None:
        self.started: list[tuple[Supervisor, ModuleProcess]] = []

    def add(self, supervisor: Supervisor, proc: ModuleProcess) -> ModuleProcess:
        self.started.append((supervisor, proc))
        return proc


@pytest.fixture
def tracker(short_dir: Path) -> Iterator[Tracker]:
    tracked = Tracker()
    yield tracked
    for supervisor, proc in tracked.started:
        asyncio.run(supervisor.stop(proc, grace=5.0))
    # Anything else this test started (e.g. inside a failed handover) names the test's socket folder.
    for pid in _pids_mentioning(str(short_dir)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(name))
    return found

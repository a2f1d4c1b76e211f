"""Shared fixtures: a factory of `edgewise-score` subprocesses per test module, and their logs on failure."""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before any test imports onnxruntime (see edgewise/__init__.py)

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.support import RUNNING, ServerProcess, start_server


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers for a test module: `factory(build_repo, *cli_args, ready=True)`.

    `build_repo(repo_dir)` fills the repository before the server starts. Every server is stopped when
    the module is done.
    """
    started: list[ServerProcess] = []

    def factory(build: Callable[[Path], None], *args: str, ready: bool = True) -> ServerProcess:
        root = tmp_path_factory.mktemp("score")
        repo = root / "models"
        repo.mkdir()
        build(repo)
        server = start_server(repo, *args, ready=ready)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the servers that are running to a failed test's report."""
    report = yield
    if report.failed:
        for server in sorted(RUNNING, key=lambda s: str(s.log_path)):
            report.sections.append((f"edgewise-score log ({server.repo})", server.log()[-20000:]))
    return report

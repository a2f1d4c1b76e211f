"""Fixtures for the workspace tests: a real `edgewise up` per test module, or one per test that needs its own."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.cloud.registry.support import DockerRegistry
from tests.cloud.service import RUNNING_WORKSPACES, WorkspaceProcess, start_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceProcess]:
    """One service shared by a test module: use unique experiment and model names per test."""
    service = start_workspace(tmp_path_factory.mktemp("workspace") / "data")
    yield service
    service.stop()


@pytest.fixture
def workspace_factory(tmp_path: Path) -> Iterator[Callable[..., WorkspaceProcess]]:
    """Start services of a test's own: `factory(*cli_args, data_dir=None, port=0)`; all stopped at the end."""
    started: list[WorkspaceProcess] = []

    def factory(*args: str, data_dir: Path | None = None, port: int = 0) -> WorkspaceProcess:
        service = start_workspace(data_dir or tmp_path / "data", *args, port=port)
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    """CNCF Distribution on 127.0.0.1, without auth, for a test module."""
    server = DockerRegistry(root=tmp_path_factory.mktemp("registry"), auth=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    """CNCF Distribution on 127.0.0.1 behind htpasswd basic auth, for a test module."""
    server = DockerRegistry(root=tmp_path_factory.mktemp("auth-registry"), auth=True).start()
    yield server
    server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the running workspace services to a failed test's report."""
    report = yield
    if report.failed:
        for service in sorted(RUNNING_WORKSPACES, key=lambda s: str(s.log_path)):
            report.sections.append((f"edgewise up log ({service.data_dir})", service.log()[-20000:]))
    return report

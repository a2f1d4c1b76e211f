"""Fixtures of the end-to-end agent tests: one registry and its images per session, one device rig per test."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import pytest

from tests.cloud.registry.support import DockerRegistry
from tests.runtime.agent.conftest import Broker, Signer
from tests.runtime.agent.e2e.harness import FAST_FLAGS
from tests.runtime.agent.e2e.images import ImageFactory
from tests.runtime.agent.e2e.rig import DeviceRig

_RIGS: list[DeviceRig] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: an end-to-end test that takes more than a few seconds")


@pytest.fixture(scope="session")
def e2e_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    """CNCF Distribution on 127.0.0.1, without auth, shared by the end-to-end tests."""
    server = DockerRegistry(root=tmp_path_factory.mktemp("e2e-registry"), auth=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def images(e2e_registry: DockerRegistry, tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    return ImageFactory(
        registry_host=e2e_registry.host,
        registry_storage=e2e_registry.storage,
        work_dir=tmp_path_factory.mktemp("e2e-images"),
    )


@pytest.fixture
def rig_factory(
    broker: Broker, signer: Signer, images: ImageFactory, tmp_path: Path
) -> Iterator[Callable[..., DeviceRig]]:
    """Started agents for devices of this test, and the workspace's observer of each; all closed at the end."""
    started: list[DeviceRig] = []

    def make(device_id: str = "cam-e2e", *, agent_flags: Sequence[str] = FAST_FLAGS) -> DeviceRig:
        creds = broker.manager.service_credentials
        device = DeviceRig(
            device_id=device_id,
            secret=broker.add_device(device_id),
            broker_port=broker.port,
            service_username=creds.username,
            service_password=creds.password,
            workspace_key=signer.public_text,
            sign=signer.sign,
            images=images,
            work_dir=tmp_path / device_id,
            agent_flags=agent_flags,
        )
        _RIGS.append(device)
        started.append(device)
        device.start()
        return device

    try:
        yield make
    finally:
        for device in started:
            try:
                device.close()
            finally:
                _RIGS.remove(device)


@pytest.fixture
def rig(rig_factory: Callable[..., DeviceRig]) -> DeviceRig:
    """A started agent for device `cam-e2e`."""
    device: DeviceRig = rig_factory()
    return device


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the agent's and the modules' logs and the last reported state to a failed test's report."""
    report = yield
    if report.failed:
        for device in _RIGS:
            report.sections.extend(device.diagnostics())
    return report

"""Real brokers for the tests: a managed Mosquitto or the embedded amqtt, on 127.0.0.1 and a free port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from edgewise.cloud.broker import BrokerManager, find_mosquitto, parse_broker

from tests.cloud.broker.mqtt import LoopThread
from tests.support import HOST

MOSQUITTO = find_mosquitto()
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt install mosquitto)")
KINDS = [pytest.param("embedded"), pytest.param("mosquitto", marks=needs_mosquitto)]


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


BrokerFactory = Callable[..., BrokerManager]


@pytest.fixture
def start_broker(loop_thread: LoopThread, tmp_path: Path) -> Iterator[BrokerFactory]:
    """Start brokers of a kind on a data directory; every one still running is stopped at the end."""
    started: list[BrokerManager] = []

    def start(kind: str, data_dir: Path | None = None, port: int = 0) -> BrokerManager:
        settings = parse_broker(kind, host=HOST, port=port)
        manager = BrokerManager(settings=settings, data_dir=data_dir or tmp_path / "data")
        started.append(manager)
        loop_thread.run(manager.start())
        return manager

    yield start
    for manager in reversed(started):
        loop_thread.run(manager.stop())


@pytest.fixture(params=KINDS)
def broker(request: pytest.FixtureRequest, start_broker: BrokerFactory) -> BrokerManager:
    manager: BrokerManager = start_broker(request.param)
    return manager

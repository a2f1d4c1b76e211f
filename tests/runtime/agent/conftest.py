"""Shared fixtures of the agent tests: a real Mosquitto with device accounts, and the workspace's signing key."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.cloud.broker import BrokerManager, find_mosquitto, parse_broker
from edgewise.runtime.agent.signing import public_key_text, sign_document

from tests.cloud.broker.mqtt import Client, LoopThread
from tests.support import HOST, free_port

MOSQUITTO = find_mosquitto()
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt install mosquitto)")
TOPIC_ROOT = "edgewise/v1/devices"


@dataclass
class Broker:
    """A managed Mosquitto on a fixed 127.0.0.1 port (so it can be stopped and started again on it)."""

    manager: BrokerManager
    loop: LoopThread

    @property
    def port(self) -> int:
        return self.manager.port

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def add_device(self, device_id: str) -> str:
        """Create the device's account; returns its secret."""
        secret = secrets.token_urlsafe(18)
        self.manager.add_device(device_id, secret)
        return secret

    def remove_device(self, device_id: str) -> None:
        self.manager.remove_device(device_id)

    def stop(self) -> None:
        self.loop.run(self.manager.stop())

    def start(self) -> None:
        self.loop.run(self.manager.start())

    def service_client(self) -> Client:
        """A connected paho client on the service account (may read and write every device's topics)."""
        creds = self.manager.service_credentials
        client = Client(self.port, creds.username, creds.password)
        reason = client.connect()
        assert not reason.is_failure, f"service account refused: {reason}"
        return client


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    loop = LoopThread()
    manager = BrokerManager(settings=parse_broker("mosquitto", host=HOST, port=free_port()), data_dir=tmp_path / "ws")
    loop.run(manager.start())
    broker = Broker(manager=manager, loop=loop)
    yield broker
    loop.run(manager.stop())
    loop.close()


@dataclass
class Signer:
    """The workspace side of manifests: its key pair, and signing."""

    key: Ed25519PrivateKey

    @property
    def public_text(self) -> str:
        return public_key_text(self.key)

    def sign(self, document: dict[str, Any]) -> dict[str, Any]:
        return sign_document(document, self.key)


@pytest.fixture
def signer() -> Signer:
    return Signer(key=Ed25519PrivateKey.generate())


def topic(device_id: str, name: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{name}"

"""Building a real MqttLink against the test broker, and waiting on the synchronous test client from asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edgewise.runtime.agent.config import AgentSettings, Connection
from edgewise.runtime.agent.link import DeviceTopics, MqttLink

from tests.cloud.broker.mqtt import Client
from tests.runtime.agent.conftest import Broker
from tests.support import HOST

FAST = AgentSettings(keepalive=10.0, reconnect_min=0.1, reconnect_max=0.5)


def connection(broker: Broker, device_id: str, secret: str) -> Connection:
    key = Ed25519PrivateKey.generate().public_key()
    return Connection(
        device_id=device_id,
        secret=secret,
        broker_host=HOST,
        broker_port=broker.port,
        broker_tls=False,
        workspace_key=key,
        workspace_key_text="ed25519:unused",
    )


def make_link(
    broker: Broker,
    device_id: str,
    secret: str,
    *,
    subscriptions: Sequence[str] | None = None,
    **settings: Any,
) -> MqttLink:
    topics = DeviceTopics(device_id)
    subs = [topics.desired, topics.commands] if subscriptions is None else list(subscriptions)
    return MqttLink(
        connection=connection(broker, device_id, secret),
        settings=replace(FAST, **settings),
        topics=topics,
        subscriptions=subs,
    )


async def expect(client: Client, topic: str, payload: bytes | None = None) -> tuple[str, bytes, bool]:
    """The service client's next message on `topic`, awaited without blocking the event loop."""
    return await asyncio.to_thread(client.expect, topic, payload)

"""The MQTT link against a real Mosquitto: online/offline status, PUBACKs, reconnects, the persistent session;
with paho on a thread of its own (a device) and on the event loop (a process hosting many identities)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from edgewise.runtime.agent.errors import LinkError
from edgewise.runtime.agent.link import DeviceTopics, Message, MqttLink

from tests.runtime.agent.conftest import Broker
from tests.runtime.agent.link.support import expect, make_link


async def next_message(link: MqttLink, timeout: float = 20.0) -> Message:
    stream = link.messages()
    return await asyncio.wait_for(anext(stream), timeout)


@pytest.mark.parametrize("link_thread", [True, False], ids=["thread", "event-loop"])
def test_connects_says_online_and_publishes_with_puback(broker: Broker, link_thread: bool) -> None:
    device = f"cam-1-{link_thread:d}"
    secret = broker.add_device(device)
    topics = DeviceTopics(device)
    service = broker.service_client()
    service.subscribe(f"{topics.base}/#")

    async def main() -> None:
        link = make_link(broker, device, secret, link_thread=link_thread)
        connected = asyncio.Event()

        async def on_connect() -> None:
            connected.set()

        link.on_connect(on_connect)
        await link.start()
        assert await link.wait_connected(20)
        assert link.connected
        await asyncio.wait_for(connected.wait(), 20)
        await expect(service, topics.status, b"online")
        await link.publish(topics.telemetry, b"{}")  # returns once the broker acknowledged it
        assert (await expect(service, topics.telemetry))[1] == b"{}"
        await link.stop()
        assert not link.connected
        await expect(service, topics.status, b"offline")

    try:
        asyncio.run(main())
    finally:
        service.close()
    # Both statuses were retained: a late subscriber sees the last one.
    late = broker.service_client()
    try:
        late.subscribe(topics.status)
        assert late.expect(topics.status) == (topics.status, b"offline", True)
    finally:
        late.close()


@pytest.mark.parametrize("link_thread", [True, False], ids=["thread", "event-loop"])
def test_publish_while_disconnected_raises_link_error(broker: Broker, link_thread: bool) -> None:
    device = f"cam-2-{link_thread:d}"
    secret = broker.add_device(device)
    broker.stop()

    async def main() -> None:
        link = make_link(broker, device, secret, link_thread=link_thread)
        await link.start()
        assert not await link.wait_connected(0.5)
        with pytest.raises(LinkError, match="not connected"):
            await link.publish(DeviceTopics(device).telemetry, b"x")
        await link.stop()

    asyncio.run(main())


@pytest.mark.parametrize("link_thread", [True, False], ids=["thread", "event-loop"])
def test_wrong_secret_is_refused(broker: Broker, link_thread: bool) -> None:
    device = f"cam-3-{link_thread:d}"
    broker.add_device(device)

    async def main() -> None:
        link = make_link(broker, device, "not-the-secret", link_thread=link_thread)
        await link.start()
        assert not await link.wait_connected(1.5)
        await link.stop()

    asyncio.run(main())


@pytest.mark.parametrize("link_thread", [True, False], ids=["thread", "event-loop"])
def test_lost_socket_sends_will_then_reconnects_online(broker: Broker, link_thread: bool) -> None:
    device = f"cam-4-{link_thread:d}"
    secret = broker.add_device(device)
    topics = DeviceTopics(device)
    service = broker.service_client()
    service.subscribe(topics.status)

    async def main() -> None:
        link = make_link(broker, device, secret, reconnect_min=1.0, reconnect_max=1.5, link_thread=link_thread)
        await link.start()
        assert await link.wait_connected(20)
        await expect(service, topics.status, b"online")
        # An abrupt loss (no DISCONNECT packet): the broker publishes the will.
        sock = link._client.socket() if link._client is not None else None
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        await expect(service, topics.status, b"offline")
        await expect(service, topics.status, b"online")
        assert await link.wait_connected(20)
        await link.publish(topics.telemetry, b"after")
        await link.stop()

    try:
        asyncio.run(main())
    finally:
        service.close()


@pytest.mark.parametrize("link_thread", [True, False], ids=["thread", "event-loop"])
def test_broker_restart_keeps_session_and_subscriptions(broker: Broker, link_thread: bool) -> None:
    device = f"cam-5-{link_thread:d}"
    secret = broker.add_device(device)
    topics = DeviceTopics(device)

    async def main() -> None:
        link = make_link(broker, device, secret, link_thread=link_thread)
        await link.start()
        assert await link.wait_connected(20)
        await asyncio.to_thread(broker.stop)
        with pytest.raises(LinkError):
            for _ in range(200):  # the loss is noticed within moments of the broker going away
                await link.publish(topics.telemetry, b"x", timeout=2.0)
                await asyncio.sleep(0.05)
        await asyncio.to_thread(broker.start)
        assert await link.wait_connected(20)
        service = broker.service_client()
        try:
            service.publish(topics.desired, b"live")
            message = await next_message(link)
            assert (message.topic, message.payload) == (topics.desired, b"live")
            # A clean stop keeps the session: a QoS 1 message sent while the device is away is queued...
            await link.stop()
            service.publish(f"{topics.base}/commands/ping", b'{"id": "1"}')
        finally:
            service.close()
        # ...and delivered to the next connection, which does not even subscribe: the broker kept the
        # subscriptions of the session through the restart.
        again = make_link(broker, device, secret, subscriptions=[], link_thread=link_thread)
        await again.start()
        message = await next_message(again)
        assert (message.topic, message.payload, message.retain) == (
            f"{topics.base}/commands/ping",
            b'{"id": "1"}',
            False,
        )
        await again.stop()

    asyncio.run(main())


def test_topics_names_and_command_parsing() -> None:
    topics = DeviceTopics("cam-7")
    assert topics.desired == "edgewise/v1/devices/cam-7/desired"
    assert topics.reported == "edgewise/v1/devices/cam-7/reported"
    assert topics.status == "edgewise/v1/devices/cam-7/status"
    assert topics.telemetry == "edgewise/v1/devices/cam-7/telemetry"
    assert topics.commands == "edgewise/v1/devices/cam-7/commands/+"
    assert topics.response("r-1") == "edgewise/v1/devices/cam-7/responses/r-1"
    assert topics.command_name("edgewise/v1/devices/cam-7/commands/ping") == "ping"
    assert topics.command_name("edgewise/v1/devices/cam-8/commands/ping") is None
    assert topics.command_name("edgewise/v1/devices/cam-7/desired") is None
    assert topics.command_name("edgewise/v1/devices/cam-7/commands/") is None
    with pytest.raises(ValueError):
        topics.response("a/b")
    with pytest.raises(Exception, match="cannot be used in a topic"):
        DeviceTopics("bad/id")

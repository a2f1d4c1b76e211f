"""The reporter against a real Mosquitto: retained, compact, sorted, only on change, and again after a reconnect."""

from __future__ import annotations

import asyncio
import queue
import socket

from edgewise.runtime.agent.link import DeviceTopics, Reporter

from tests.runtime.agent.conftest import Broker
from tests.runtime.agent.link.support import expect, make_link


def test_reports_on_change_and_after_reconnect(broker: Broker) -> None:
    secret = broker.add_device("cam-r")
    topics = DeviceTopics("cam-r")
    service = broker.service_client()
    service.subscribe(topics.reported)

    async def main() -> None:
        link = make_link(broker, "cam-r", secret)
        reporter = Reporter(link=link, topics=topics)
        await reporter.report({"b": 1, "a": {"y": 2, "x": None}})  # offline: kept for the connect
        assert reporter.pending
        await link.start()
        _, payload, _ = await expect(service, topics.reported)
        assert payload == b'{"a":{"x":null,"y":2},"b":1}'
        await reporter.report({"a": {"x": None, "y": 2}, "b": 1})  # the same state: nothing published
        await reporter.report({"a": 1})
        _, payload, _ = await expect(service, topics.reported)
        assert payload == b'{"a":1}'  # the next message is the changed state, not a repeat of the first
        assert not reporter.pending

        sock = link._client.socket() if link._client is not None else None
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        _, payload, _ = await expect(service, topics.reported)  # republished after the reconnect
        assert payload == b'{"a":1}'
        await link.stop()
        await reporter.report({"a": 2})  # never raises while the link is down
        assert reporter.pending

    try:
        asyncio.run(main())
        # Nothing else was published: the unchanged report did not go out.
        try:
            extra = service.messages.get(timeout=0.5)
        except queue.Empty:
            extra = None
        assert extra is None
    finally:
        service.close()
    late = broker.service_client()
    try:
        late.subscribe(topics.reported)
        assert late.expect(topics.reported) == (topics.reported, b'{"a":1}', True)
    finally:
        late.close()

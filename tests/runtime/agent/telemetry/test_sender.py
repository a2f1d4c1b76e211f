"""The sender against a real Mosquitto: compressed batches, in order, each record once, across a broker restart."""

from __future__ import annotations

import asyncio
import itertools
import queue
import zlib
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from edgewise.runtime.agent.link import DeviceTopics
from edgewise.runtime.agent.telemetry import TelemetrySender, TelemetrySpool
from paho.mqtt.enums import CallbackAPIVersion

from tests.runtime.agent.conftest import Broker
from tests.runtime.agent.link.support import make_link
from tests.support import HOST

_ids = itertools.count()


class Watcher:
    """A service-account subscriber with a persistent session, so it misses nothing across a broker restart."""

    def __init__(self, broker: Broker, topic: str) -> None:
        creds = broker.manager.service_credentials
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"watcher-{next(_ids)}",
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        self._client.username_pw_set(creds.username, creds.password)
        self._client.reconnect_delay_set(0.1, 0.5)
        subscribed: queue.Queue[bool] = queue.Queue()
        self._client.on_connect = lambda c, u, f, reason, p: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(True)
        self._client.on_message = self._on_message
        self._seen: set[bytes] = set()
        self._client.connect(HOST, broker.port, keepalive=10)
        self._client.loop_start()
        subscribed.get(timeout=20)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # The broker redelivers (DUP set) what it sent this subscriber just before a restart if the subscriber's
        # PUBACK did not reach it in time: that repeat is the broker's, not the sender's, so it is skipped.
        if message.dup and message.payload in self._seen:
            return
        self._seen.add(bytes(message.payload))
        self.messages.put(orjson.loads(zlib.decompress(message.payload)))

    def records(self, count: int) -> list[dict[str, Any]]:
        """The records of the next messages until `count` records arrived."""
        records: list[dict[str, Any]] = []
        while len(records) < count:
            message = self.messages.get(timeout=30)
            assert message["deviceId"] == "cam-t" and set(message["dropped"]) == {"ttl", "maxBytes"}
            records += message["records"]
        return records

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_sender_drains_in_order_exactly_once_across_an_outage(broker: Broker, tmp_path: Path) -> None:
    secret = broker.add_device("cam-t")
    topics = DeviceTopics("cam-t")
    watcher = Watcher(broker, topics.telemetry)
    spool = TelemetrySpool(path=tmp_path / "telemetry.sqlite", max_bytes=1 << 30, time_to_live=3600.0)

    async def main() -> list[dict[str, Any]]:
        link = make_link(broker, "cam-t", secret, subscriptions=[])
        sender = TelemetrySender(spool=spool, link=link, topics=topics, device_id="cam-t", batch_max_records=700)
        await link.start()
        task = asyncio.create_task(sender.run())
        try:
            spool.append([("event", None, {"i": i}) for i in range(3000)])
            sender.wake()
            received = await asyncio.to_thread(watcher.records, 3000)
            while spool.pending_count():  # acknowledged once the PUBACKs are in
                await asyncio.sleep(0.05)

            await asyncio.to_thread(broker.stop)
            for start in range(3000, 8000, 1000):  # appended while the broker is away
                spool.append([("event", "m", {"i": i}) for i in range(start, start + 1000)])
                sender.wake()
            await asyncio.sleep(0.5)
            assert spool.pending_count() == 5000
            await asyncio.to_thread(broker.start)
            received += await asyncio.to_thread(watcher.records, 5000)
            while spool.pending_count():
                await asyncio.sleep(0.05)
            assert sender.sent_records == 8000
            return received
        finally:
            task.cancel()
            await link.stop()

    try:
        received = asyncio.run(main())
        assert [r["seq"] for r in received] == list(range(1, 8001))
        assert [r["data"]["i"] for r in received] == list(range(8000))
        assert received[0]["kind"] == "event" and received[0]["module"] is None and received[-1]["module"] == "m"
        assert watcher.messages.empty()  # nothing arrived twice
    finally:
        watcher.close()
        spool.close()

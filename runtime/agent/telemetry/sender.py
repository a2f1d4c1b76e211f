"""Drains the spool onto the telemetry topic: compressed batches, a few in flight, acknowledged strictly in order.

A batch's records leave the spool only after the broker's PUBACK for it and for every batch before it, so
on a lost connection everything not yet acknowledged is sent again from the spool once the link is back:
each record arrives once and in order unless the agent crashes between PUBACK and the delete (the cloud
drops such duplicates by `seq`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import zlib

import orjson
from edgewise.runtime.agent.errors import AgentError, LinkError
from edgewise.runtime.agent.link.mqtt import MqttLink
from edgewise.runtime.agent.link.topics import DeviceTopics
from edgewise.runtime.agent.telemetry.spool import TelemetrySpool

log = logging.getLogger(__name__)

COMPRESSION_LEVEL = 1  # fast: the device's CPU is scarcer than the link's bytes for JSON this repetitive
IN_FLIGHT = 4  # batches published and awaiting PUBACK at once
PUBLISH_TIMEOUT = 30.0
IDLE_CHECK = 1.0  # seconds between looks at the spool when nobody calls wake()


class TelemetrySender:
    def __init__(
        self,
        *,
        spool: TelemetrySpool,
        link: MqttLink,
        topics: DeviceTopics,
        device_id: str,
        batch_max_records: int = 5000,
    ) -> None:
        self._spool = spool
        self._link = link
        self._topic = topics.telemetry
        self._device_id = device_id
        self._batch_max = max(1, batch_max_records)
        self._wake = asyncio.Event()
        self.sent_records = 0  # records acknowledged by the broker since start

    def configure(self, *, batch_max_records: int) -> None:
        self._batch_max = max(1, batch_max_records)

    def wake(self) -> None:
        """Records were appended: send them now rather than at the next idle check."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: while connected and records are pending, send them."""
        while True:
            self._wake.clear()
            if not self._link.connected:
                await self._link.wait_connected()
                continue
            if self._spool.pending_count() > 0:
                await self._drain()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_CHECK):
                    await self._wake.wait()

    async def _drain(self) -> None:
        """Send until the spool is empty or the link fails; unacknowledged batches are resent next time."""
        inflight: collections.deque[tuple[int, int, asyncio.Task[None]]] = collections.deque()
        cursor = 0  # highest seq handed to a publish in this drain
        try:
            while self._link.connected:
                while len(inflight) < IN_FLIGHT:
                    batch = await asyncio.to_thread(self._build, cursor)
                    if batch is None:
                        break
                    cursor, count, payload = batch
                    publish = self._link.publish(self._topic, payload, qos=1, timeout=PUBLISH_TIMEOUT)
                    inflight.append((cursor, count, asyncio.create_task(publish)))
                if not inflight:
                    return
                last, count, task = inflight.popleft()
                await task  # LinkError: stop here; everything after `last` acknowledged stays spooled
                self.sent_records += count
                await asyncio.to_thread(self._spool.acknowledge, last)
        except LinkError as exc:
            log.info("telemetry paused: %s; %d records wait in the spool", exc, self._spool.pending_count())
        except AgentError:
            log.exception("telemetry spool failed; retrying")
            await asyncio.sleep(IDLE_CHECK)
        finally:
            for _, _, task in inflight:
                task.cancel()
            for _, _, task in inflight:
                with contextlib.suppress(asyncio.CancelledError, LinkError):
                    await task

    def _build(self, after: int) -> tuple[int, int, bytes] | None:
        """The next batch after seq `after`: (its last seq, its record count, the compressed message)."""
        records = self._spool.pending(self._batch_max, after=after)
        if not records:
            return None
        message = {"deviceId": self._device_id, "records": records, "dropped": self._spool.dropped()}
        payload = zlib.compress(orjson.dumps(message), COMPRESSION_LEVEL)
        return int(records[-1]["seq"]), len(records), payload

"""The ingest: devices' `status`, `reported` and `telemetry` messages into the store.

`IngestLink` receives in paho's thread; an asyncio consumer takes the messages in arrival order, stores a
run of them per hop to a worker thread (each message its own transaction), then acknowledges them. A message
the store cannot take now (the database is unreachable) is retried with backoff instead of acknowledged; one
that can never be stored (not JSON, an unknown device) is logged and acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from edgewise.cloud.broker import BrokerManager
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.ingest.decode import decode_batch
from edgewise.cloud.ingest.mqtt import Delivery, IngestLink
from edgewise.cloud.store.device_records import DEVICE_STATUSES
from edgewise.cloud.store.sql import SqlStore

log = logging.getLogger("edgewise.ingest")

ROOT = "edgewise/v1/devices"
TOPICS = (f"{ROOT}/+/status", f"{ROOT}/+/reported", f"{ROOT}/+/telemetry")
CLIENT_ID = "edgewise-service-ingest"
MAX_RUN = 256  # messages stored per hop to the worker thread
RETRY_MIN, RETRY_MAX = 0.5, 30.0


@dataclass
class IngestCounters:
    """What the ingest did since it started (for logs and benchmarks)."""

    messages: int = 0
    records: int = 0
    duplicates: int = 0
    ignored: int = 0


class TelemetryIngest:
    """Subscribes as the service account and keeps devices' state and telemetry in the store."""

    def __init__(self, *, store: SqlStore, broker: BrokerManager, client_id: str = CLIENT_ID) -> None:
        self.store = store
        self.counters = IngestCounters()
        self._stopping = threading.Event()
        self._queue: asyncio.Queue[Delivery] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._link = IngestLink(
            host=broker.host if broker.host not in ("0.0.0.0", "::", "") else "127.0.0.1",
            port=lambda: broker.port,
            credentials=broker.service_credentials,
            client_id=client_id,
            topics=TOPICS,
            deliver=self._deliver,
        )

    async def start(self) -> None:
        """Start consuming and connecting (in the background: a broker not up yet is retried, never fatal)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._consume(), name="edgewise-ingest")
        self._link.start()

    async def wait_ready(self, timeout: float = 10.0) -> bool:
        """Whether the subscriptions are in place (for start-up logs and tests)."""
        return await self._link.wait_subscribed(timeout)

    async def stop(self) -> None:
        """Disconnect (unacknowledged messages stay with the broker's session) and stop consuming."""
        self._stopping.set()
        await asyncio.to_thread(self._link.stop)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _deliver(self, delivery: Delivery) -> None:
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while the service stops
            loop.call_soon_threadsafe(queue.put_nowait, delivery)

    async def _consume(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            run = [await queue.get()]
            while len(run) < MAX_RUN and not queue.empty():
                run.append(queue.get_nowait())
            await asyncio.to_thread(self._store_run, run)

    def _store_run(self, run: list[Delivery]) -> None:
        for delivery in run:
            delay = RETRY_MIN
            while True:
                try:
                    self.handle(delivery.topic, delivery.payload, retained=delivery.retain)
                    break
                except sa.exc.OperationalError as exc:
                    if self._stopping.is_set():
                        return  # not acknowledged: the broker delivers it again to the next service
                    log.warning("cannot store an MQTT message now (%s); retrying in %.1fs", exc.orig, delay)
                    self._stopping.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
                except Exception:
                    log.exception("could not store the MQTT message on %s; it is dropped", delivery.topic)
                    break
            self._link.ack(delivery)

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """Store one message (blocking: call it off the event loop)."""
        parts = topic.split("/")
        if len(parts) != 5 or "/".join(parts[:3]) != ROOT:
            log.debug("ignored a message on %s", topic)
            return
        device_id, channel = parts[3], parts[4]
        self.counters.messages += 1
        received = time.time()
        seen_at = None if retained else received  # a retained message replays the past
        try:
            if channel == "status":
                known = self._status(device_id, payload, seen_at)
            elif channel == "reported":
                known = self._reported(device_id, payload, seen_at)
            elif channel == "telemetry":
                known = self._telemetry(device_id, payload, received)
            else:
                return
        except InvalidInputError as exc:
            self.counters.ignored += 1
            log.warning("ignored a %s message of device %s: %s", channel, device_id, exc)
            return
        if not known:
            self.counters.ignored += 1
            log.debug("ignored a %s message of unknown device %s", channel, device_id)

    def _status(self, device_id: str, payload: bytes, seen_at: float | None) -> bool:
        status = payload.decode(errors="replace").strip()
        if status not in DEVICE_STATUSES:
            raise InvalidInputError(f"status {status[:40]!r} is not one of {', '.join(DEVICE_STATUSES)}")
        return self.store.update_device_state(device_id, status=status, seen_at=seen_at)

    def _reported(self, device_id: str, payload: bytes, seen_at: float | None) -> bool:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"the reported state is not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise InvalidInputError("the reported state is not a JSON object")
        return self.store.record_reported(device_id, document, seen_at=seen_at)

    def _telemetry(self, device_id: str, payload: bytes, received: float) -> bool:
        batch = decode_batch(payload, device_id=device_id)
        result = self.store.insert_telemetry(
            device_id, batch.records, dropped=batch.dropped or None, invalid=batch.invalid, received_at=received
        )
        if result is None:
            return False
        self.counters.records += result.inserted
        self.counters.duplicates += result.duplicates
        if batch.invalid:
            log.warning("device %s sent %d malformed telemetry records; they were left out", device_id, batch.invalid)
        return True

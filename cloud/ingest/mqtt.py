"""The ingest's MQTT connection: the only module of the ingest that imports paho.

It logs in as the service account with a persistent session (clean session off, a fixed client id), so QoS 1
messages published while the service was away are delivered when it is back. paho's network loop runs in a
thread of its own; every message is handed to the asyncio consumer and acknowledged (PUBACK) only once the
consumer has stored it, so a message is never lost between the broker and the store. The connection is
re-established with exponential backoff; paho's own reconnect is off.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from edgewise.cloud.broker import Credentials
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger("edgewise.ingest")

KEEPALIVE = 30
MIN_BACKOFF = 0.2
MAX_BACKOFF = 30.0
QOS = 1


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One received message; `connection` says which connection it arrived on (its PUBACK belongs there)."""

    topic: str
    payload: bytes
    retain: bool
    mid: int
    qos: int
    connection: int


class IngestLink:
    """A subscriber that keeps itself connected and hands every message to `deliver` (called in paho's thread)."""

    def __init__(
        self,
        *,
        host: str,
        port: Callable[[], int],
        credentials: Credentials,
        client_id: str,
        topics: Sequence[str],
        deliver: Callable[[Delivery], None],
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.host = host
        self._port = port
        self.credentials = credentials
        self.client_id = client_id
        self.topics = tuple(topics)
        self._deliver = deliver
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self._connection = 0
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.subscribed = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="edgewise-ingest-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect cleanly (the session stays with the broker) and end the thread."""
        self._stopping.set()
        with self._lock:
            client = self._client
        if client is not None:
            client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a stored message; one that arrived on an earlier connection is redelivered by the broker
        anyway, so its PUBACK is not sent on the new connection (where its id may mean another message)."""
        if delivery.qos == 0:
            return
        with self._lock:
            client = self._client if self._connection == delivery.connection else None
        if client is not None:
            client.ack(delivery.mid, delivery.qos)

    async def wait_subscribed(self, timeout: float) -> bool:
        """Whether the first subscription was granted within `timeout` seconds."""
        return await asyncio.to_thread(self.subscribed.wait, timeout)

    # -- paho's thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._min_backoff
        while not self._stopping.is_set():
            client = self._new_client()
            with self._lock:
                self._connection += 1
                self._client = client
            try:
                client.connect(self.host, self._port(), keepalive=KEEPALIVE)
            except OSError as exc:
                log.info(
                    "cannot reach the MQTT broker at %s:%s (%s); retrying in %.1fs", self.host, self._port(), exc, delay
                )
            else:
                client.loop_forever(retry_first_connection=False)
                if self.connected.is_set():
                    delay = self._min_backoff  # it was up: start the backoff anew
            finally:
                self.connected.clear()
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self._max_backoff)
        with self._lock:
            self._client = None

    def _new_client(self) -> paho.Client:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.username_pw_set(self.credentials.username, self.credentials.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("the MQTT broker refused the service account %s: %s", self.credentials.username, reason)
            client.disconnect()
            return
        self.connected.set()
        log.info(
            "telemetry ingest connected to %s:%s (session %s)",
            self.host,
            self._port(),
            "resumed" if flags.session_present else "new",
        )
        if flags.session_present and self.subscribed.is_set():
            return  # the broker kept the subscriptions, and re-subscribing would replay every retained message
        client.subscribe([(topic, QOS) for topic in self.topics])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[Any], properties: Any) -> None:
        refused = [topic for topic, code in zip(self.topics, codes, strict=False) if code.is_failure]
        if refused:
            log.error("the MQTT broker refused the subscriptions %s to the service account", ", ".join(refused))
        self.subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not self._stopping.is_set():
            log.info("telemetry ingest lost the MQTT broker (%s); reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            connection = self._connection
        self._deliver(
            Delivery(
                topic=message.topic,
                payload=bytes(message.payload),
                retain=bool(message.retain),
                mid=message.mid,
                qos=message.qos,
                connection=connection,
            )
        )

"""A small synchronous paho-mqtt client for the broker tests, and a thread that runs brokers' event loop."""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Coroutine
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import HOST

TIMEOUT = 20.0
_ids = itertools.count()


class LoopThread:
    """An asyncio loop in a thread, standing in for the service's loop (the embedded broker lives in it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Client:
    """One MQTT 3.1.1 connection; received messages queue up in `messages`."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self._connected: queue.Queue[Any] = queue.Queue()
        self._acks: dict[int, queue.Queue[list[Any]]] = {}
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-{next(_ids)}-{id(self)}",
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = lambda c, u, f, reason, p: self._connected.put(reason)
        self._client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, bool(m.retain)))
        self._client.on_subscribe = self._on_subscribe
        self.port = port

    def connect(self) -> Any:
        """Connect and return the broker's reason code (check `.is_failure`)."""
        self._client.connect(HOST, self.port, keepalive=30)
        self._client.loop_start()
        return self._connected.get(timeout=TIMEOUT)

    def subscribe(self, topic_filter: str) -> list[Any]:
        """Subscribe at QoS 1 and return the granted codes (a failure code when refused)."""
        answer: queue.Queue[list[Any]] = queue.Queue()
        with _lock:
            _, mid = self._client.subscribe(topic_filter, qos=1)
            assert mid is not None
            self._acks[mid] = answer
        return answer.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)

    def expect(self, topic: str, payload: bytes | None = None) -> tuple[str, bytes, bool]:
        """The next message on `topic` (with `payload`, if given), skipping others; fails after TIMEOUT."""
        while True:
            message = self.messages.get(timeout=TIMEOUT)
            if message[0] == topic and (payload is None or message[1] == payload):
                return message

    def received_before(self, topic: str, payload: bytes) -> list[tuple[str, bytes, bool]]:
        """Everything received up to the message (`topic`, `payload`), which must arrive."""
        seen = []
        while True:
            message = self.messages.get(timeout=TIMEOUT)
            if message[0] == topic and message[1] == payload:
                return seen
            seen.append(message)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[Any], properties: Any) -> None:
        with _lock:
            answer = self._acks.pop(mid, None)
        if answer is not None:
            answer.put(list(codes))


_lock = threading.Lock()


def refused(codes: list[Any]) -> bool:
    return all(getattr(code, "is_failure", False) or getattr(code, "value", code) >= 0x80 for code in codes)

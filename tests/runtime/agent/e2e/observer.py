"""The workspace's view of one device over MQTT: the service account watching `edgewise/v1/devices/<id>/#`.

The observer keeps a persistent session (clean session off, fixed client id), so with Mosquitto's persistence it
misses nothing while the broker restarts: its subscription and the QoS 1 messages queued for it survive.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

HOST = "127.0.0.1"
TOPIC_ROOT = "edgewise/v1/devices"


def decode_telemetry(payload: bytes) -> dict[str, Any]:
    """A telemetry message: zlib-compressed JSON, or plain JSON when it starts with `{`."""
    raw = payload if payload[:1] == b"{" else zlib.decompress(payload)
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("a telemetry message must be a JSON object")
    return document


@dataclass
class Telemetry:
    """Telemetry received so far: the messages in arrival order and every record by seq (duplicates kept)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    by_seq: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    undecodable: list[str] = field(default_factory=list)
    redelivered: int = 0  # messages the broker sent the observer again (DUP set) after a lost acknowledgement

    def highest(self) -> int:
        return max(self.by_seq, default=0)

    def duplicates(self) -> dict[int, int]:
        return {seq: len(records) for seq, records in self.by_seq.items() if len(records) > 1}

    def gaps(self) -> list[int]:
        return [seq for seq in range(1, self.highest() + 1) if seq not in self.by_seq]

    def records(self) -> list[dict[str, Any]]:
        return [records[0] for _, records in sorted(self.by_seq.items())]

    def kinds(self) -> set[str]:
        return {str(record.get("kind")) for record in self.records()}


class DeviceObserver:
    """A service-account MQTT client on one device's topics."""

    def __init__(self, *, port: int, username: str, password: str, device_id: str) -> None:
        self.device_id = device_id
        self.prefix = f"{TOPIC_ROOT}/{device_id}"
        self._lock = threading.Condition()
        self.reported: dict[str, Any] | None = None
        self.reported_history: list[dict[str, Any]] = []
        self.status: str | None = None
        self.status_history: list[str] = []
        self.telemetry = Telemetry()
        self.responses: dict[str, dict[str, Any]] = {}
        self.connects = 0
        self._subscribed = threading.Event()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"e2e-observer-{device_id}-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
            clean_session=False,
        )
        self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self.port = port

    # ---- connection ----

    def start(self, *, timeout: float = 20.0) -> DeviceObserver:
        self._client.connect(HOST, self.port, keepalive=5)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"the observer did not subscribe to {self.prefix}/# within {timeout:g}s")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            return
        with self._lock:
            self.connects += 1
        client.subscribe(f"{self.prefix}/#", qos=1)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        name = message.topic[len(self.prefix) + 1 :]
        payload: bytes = message.payload
        with self._lock:
            if name == "reported" and payload:
                document = json.loads(payload)
                self.reported = document
                self.reported_history.append(document)
            elif name == "status":
                self.status = payload.decode(errors="replace")
                self.status_history.append(self.status)
            elif name == "telemetry":
                self._add_telemetry(payload, redelivery=bool(message.dup))
            elif name.startswith("responses/"):
                document = json.loads(payload)
                self.responses[str(document.get("id", name.split("/", 1)[1]))] = document
            self._lock.notify_all()

    def _add_telemetry(self, payload: bytes, *, redelivery: bool) -> None:
        try:
            message = decode_telemetry(payload)
        except (ValueError, zlib.error) as exc:
            self.telemetry.undecodable.append(f"{exc}: {payload[:80]!r}")
            return
        seqs = [int(record["seq"]) for record in message.get("records", [])]
        if redelivery and seqs and all(seq in self.telemetry.by_seq for seq in seqs):
            # The broker's second delivery to this observer, not a second message from the device.
            self.telemetry.redelivered += 1
            return
        self.telemetry.messages.append(message)
        for record in message.get("records", []):
            self.telemetry.by_seq.setdefault(int(record["seq"]), []).append(record)

    # ---- publishing ----

    def publish(self, name: str, payload: bytes, *, retain: bool = False, timeout: float = 20.0) -> None:
        """Publish at QoS 1 on `<device prefix>/<name>` and wait for the broker's acknowledgement."""
        info = self._client.publish(f"{self.prefix}/{name}", payload, qos=1, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publish on {name} was not acknowledged within {timeout:g}s")

    def publish_desired(self, document: dict[str, Any] | bytes) -> None:
        payload = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.publish("desired", payload, retain=True)

    def call(self, method: str, args: dict[str, Any] | None = None, *, timeout: float = 30.0) -> dict[str, Any]:
        """Invoke a direct method and wait for its response document."""
        request_id = uuid.uuid4().hex
        self.publish(f"commands/{method}", json.dumps({"id": request_id, "args": args or {}}).encode())
        response: dict[str, Any] = self.wait(
            lambda: self.responses.get(request_id), timeout=timeout, what=f"the response to {method}"
        )
        return response

    # ---- waiting ----

    def wait(self, predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Wait until `predicate()` (evaluated under the observer's lock) is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"timed out after {timeout:g}s waiting for {what}; last reported: "
                        f"{json.dumps(self.reported, indent=1)[:3000]}; status: {self.status}"
                    )
                self._lock.wait(min(left, 0.2))

    def wait_reported(
        self, predicate: Callable[[dict[str, Any]], Any], *, timeout: float = 45.0, what: str = "reported state"
    ) -> dict[str, Any]:
        """The first reported state (the latest, re-checked on every message) that satisfies `predicate`."""

        def check() -> dict[str, Any] | None:
            state = self.reported
            return state if state is not None and predicate(state) else None

        result: dict[str, Any] = self.wait(check, timeout=timeout, what=what)
        return result

    def module(self, name: str) -> dict[str, Any]:
        """The latest reported entry of module `name` ({} when none)."""
        with self._lock:
            state = self.reported or {}
            entry = (state.get("modules") or {}).get(name) or {}
            return dict(entry)

"""The workspace's side of a simulated fleet: one service-account MQTT client on every device's topics.

It publishes desired manifests and records what devices report, with the monotonic time each reported
version was first seen, so a benchmark can measure convergence without a second clock. It only reads what
the agents publish; it never writes a device's `reported` or `status`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import paho.mqtt.client as paho
from edgewise.simulators.faults import check_loopback
from paho.mqtt.enums import CallbackAPIVersion

TOPIC_ROOT = "edgewise/v1/devices"
Document = dict[str, Any]


def applied(state: Mapping[str, Any] | None, version: int, code: int = 200) -> bool:
    """Whether a reported state says manifest `version` was applied with status `code`."""
    if not state:
        return False
    status = state.get("lastDesiredStatus") or {}
    return state.get("lastDesiredVersion") == version and status.get("code") == code


class FleetObserver:
    """A paho client (own thread) with a persistent session, watching `reported` and `status` of all devices."""

    def __init__(self, *, port: int, username: str, password: str, host: str = "127.0.0.1") -> None:
        self.host = check_loopback(host)
        self.port = port
        self._cond = threading.Condition()
        self.reported: dict[str, Document] = {}
        self.status: dict[str, str] = {}
        self.status_history: dict[str, list[str]] = {}
        self.applied_at: dict[tuple[str, int], float] = {}  # (device, version) → when first reported applied
        self._watches: dict[str, Callable[[Document], bool]] = {}
        self.seen_at: dict[tuple[str, str], float] = {}  # (watch, device) → when a report first matched it
        self.connects = 0
        self._subscribed = threading.Event()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"fleet-observer-{uuid.uuid4().hex[:10]}",
            protocol=paho.MQTTv311,
            clean_session=False,
        )
        self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.max_inflight_messages_set(100)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message

    def start(self, *, timeout: float = 20.0) -> FleetObserver:
        self._client.connect(self.host, self.port, keepalive=5)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"the fleet observer did not subscribe within {timeout:g}s")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> FleetObserver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paho thread ------------------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            return
        with self._cond:
            self.connects += 1
        client.subscribe([(f"{TOPIC_ROOT}/+/reported", 1), (f"{TOPIC_ROOT}/+/status", 1)])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        parts = str(message.topic).split("/")
        if len(parts) != 5:
            return
        device, name, payload = parts[3], parts[4], bytes(message.payload)
        now = time.monotonic()
        with self._cond:
            if name == "reported" and payload:
                try:
                    document = json.loads(payload)
                except ValueError:
                    return
                if isinstance(document, dict):
                    self.reported[device] = document
                    version = document.get("lastDesiredVersion")
                    if isinstance(version, int) and applied(document, version):
                        self.applied_at.setdefault((device, version), now)
                    for watch, predicate in self._watches.items():
                        if (watch, device) not in self.seen_at and predicate(document):
                            self.seen_at[(watch, device)] = now
            elif name == "status":
                text = payload.decode(errors="replace")
                self.status[device] = text
                self.status_history.setdefault(device, []).append(text)
            self._cond.notify_all()

    # -- publishing -------------------------------------------------------------------------------

    def publish_desired(self, manifests: Mapping[str, Document | bytes], *, timeout: float = 30.0) -> float:
        """Publish each device's manifest (retained, QoS 1) and wait for every PUBACK; returns when they went out."""
        sent = time.monotonic()
        infos = []
        for device, document in manifests.items():
            payload = document if isinstance(document, bytes) else json.dumps(document).encode()
            infos.append((device, self._client.publish(f"{TOPIC_ROOT}/{device}/desired", payload, qos=1, retain=True)))
        deadline = time.monotonic() + timeout
        for device, info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError(f"the desired manifest of {device} was not acknowledged within {timeout:g}s")
        return sent

    # -- reading and waiting ----------------------------------------------------------------------

    def watch(self, name: str, predicate: Callable[[Document], bool]) -> None:
        """From now on, record in `seen_at[(name, device)]` the monotonic time a report of each device first
        satisfies `predicate` (evaluated as the report arrives, so the time does not depend on polling)."""
        with self._cond:
            self._watches[name] = predicate

    def seen(self, name: str, devices: Iterable[str]) -> dict[str, float]:
        """The devices whose reports matched watch `name` so far, with when."""
        with self._cond:
            return {d: self.seen_at[(name, d)] for d in devices if (name, d) in self.seen_at}

    def snapshot(self, device: str) -> tuple[Document | None, str | None]:
        with self._cond:
            return self.reported.get(device), self.status.get(device)

    def wait(self, predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Wait until `predicate()` (evaluated under the observer's lock, on every message) is truthy."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
                self._cond.wait(min(left, 0.2))

    def wait_applied(self, devices: Iterable[str], version: int, *, timeout: float, code: int = 200) -> None:
        """Wait until every device reports manifest `version` applied; the error names the ones that did not."""
        devices = list(devices)

        def done() -> bool:
            return all(applied(self.reported.get(d), version, code) for d in devices)

        try:
            self.wait(done, timeout=timeout, what=f"{len(devices)} devices to apply v{version}")
        except TimeoutError as exc:
            with self._cond:
                late = {d: _brief(self.reported.get(d)) for d in devices if not applied(self.reported.get(d), version)}
            raise TimeoutError(f"{exc}; not yet: {json.dumps(dict(list(late.items())[:10]))}") from None

    def wait_status(self, devices: Iterable[str], status: str, *, timeout: float) -> None:
        devices = list(devices)
        try:
            self.wait(
                lambda: all(self.status.get(d) == status for d in devices),
                timeout=timeout,
                what=f"{len(devices)} devices to be {status}",
            )
        except TimeoutError as exc:
            with self._cond:
                other = {d: self.status.get(d) for d in devices if self.status.get(d) != status}
            raise TimeoutError(f"{exc}; still: {dict(list(other.items())[:10])}") from None


def _brief(state: Document | None) -> Any:
    if state is None:
        return None
    return {"version": state.get("lastDesiredVersion"), "status": state.get("lastDesiredStatus")}

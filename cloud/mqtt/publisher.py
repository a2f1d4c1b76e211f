"""The service's publishing MQTT connection: retained QoS 1 desired manifests, on the service account.

One paho client with its network loop in a thread. paho queues a publish while the connection is down and
reconnects by itself, so a broker restart delays manifests instead of losing them; `publish` waits for the
broker's acknowledgement up to a timeout and raises ServiceUnavailableError after it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import paho.mqtt.client as paho
from edgewise.cloud.errors import ServiceUnavailableError
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger("edgewise.mqtt")

TOPIC_ROOT = "edgewise/v1/devices"
_ANY_ADDRESS = ("0.0.0.0", "::", "")


def desired_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/desired"


class Publisher:
    """Publishes retained desired manifests; `start` connects, `stop` disconnects."""

    def __init__(self, *, host: str, port: int, username: str, password: str, timeout: float = 10.0) -> None:
        self.host = "127.0.0.1" if host in _ANY_ADDRESS else host
        self.port = port
        self.timeout = timeout
        self._connected = threading.Event()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"edgewise-service-publisher-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
        )
        self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        """Connect (blocking up to `timeout`); ServiceUnavailableError when the broker does not accept us."""
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise ServiceUnavailableError(f"cannot reach the MQTT broker at {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(self.timeout):
            self.stop()
            raise ServiceUnavailableError(
                f"the MQTT broker at {self.host}:{self.port} did not accept the service account"
            )

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as exc:
            raise ServiceUnavailableError(f"could not publish on {topic}: {exc}") from exc
        if not info.is_published():
            raise ServiceUnavailableError(f"the MQTT broker did not acknowledge the message on {topic} in time")

    def publish_desired(self, device_id: str, document: Mapping[str, Any]) -> None:
        self.publish(desired_topic(device_id), orjson.dumps(dict(document)))

    def clear_desired(self, device_id: str) -> None:
        """Remove the retained manifest of a device that is gone (an empty retained message clears it)."""
        self.publish(desired_topic(device_id), b"")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("the MQTT broker refused the service's publisher: %s", reason)
            return
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()
        log.info("the service's MQTT publisher disconnected (%s); paho reconnects", reason)

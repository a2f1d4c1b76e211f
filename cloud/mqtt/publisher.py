"""The service's publishing MQTT connection: retained QoS 1 desired manifests, on the service account.

One paho client with its network loop in a thread. paho queues a publish while the connection is down and
reconnects by itself, so a broker restart delays manifests instead of losing them. A batch of messages is
handed to paho back to back and only then are the broker's acknowledgements awaited, so a hundred manifests
cost one wait rather than a hundred; a batch fails with UnacknowledgedError, naming the topics the broker did
not acknowledge, when it stops acknowledging for `timeout` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import paho.mqtt.client as paho
from edgewise.cloud.errors import ServiceUnavailableError
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger("edgewise.mqtt")

TOPIC_ROOT = "edgewise/v1/devices"
_ANY_ADDRESS = ("0.0.0.0", "::", "")
# Messages sent before the first acknowledgement comes back: a deployment's batch goes out in one go instead of
# twenty at a time (paho's default); paho keeps the order either way.
IN_FLIGHT = 1000
_NAMED = 10  # topics an error message lists before it says how many more


def desired_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/desired"


class UnacknowledgedError(ServiceUnavailableError):
    """The broker did not acknowledge some messages of a batch in time (paho keeps them queued and sends them
    again once the connection is back)."""

    def __init__(self, message: str, *, topics: Sequence[str]) -> None:
        super().__init__(message)
        self.topics = tuple(topics)


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
        self._client.max_inflight_messages_set(IN_FLIGHT)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and not dropped it since."""
        return self._connected.is_set()

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
        self.publish_all([(topic, payload)], retain=retain)

    def publish_all(self, messages: Sequence[tuple[str, bytes]], *, retain: bool = True) -> None:
        """Queue every (topic, payload) at QoS 1 in order, then wait for all the broker's acknowledgements.

        Raises UnacknowledgedError naming the topics still unacknowledged once the broker has acknowledged
        nothing for `timeout` seconds (or at once for those paho could not hand to a connection)."""
        sent = [(topic, self._client.publish(topic, payload, qos=1, retain=retain)) for topic, payload in messages]
        missing: list[str] = []
        causes: set[str] = set()
        deadline = time.monotonic() + self.timeout
        for topic, info in sent:
            try:
                # after the first miss the others are only checked: the broker has gone quiet for `timeout`
                info.wait_for_publish(max(0.0, deadline - time.monotonic()) if not missing else 0.0)
                acknowledged = info.is_published()
            except (RuntimeError, ValueError) as exc:
                causes.add(str(exc))
                acknowledged = False
            if acknowledged:
                deadline = time.monotonic() + self.timeout  # the broker is answering: give the rest a full timeout
            else:
                missing.append(topic)
        if missing:
            raise UnacknowledgedError(self._unacknowledged(missing, len(sent), causes), topics=missing)

    def publish_desired(self, device_id: str, document: Mapping[str, Any]) -> None:
        self.publish_desired_all({device_id: document})

    def publish_desired_all(self, documents: Mapping[str, Mapping[str, Any]]) -> None:
        """Publish each device's manifest (device id -> document) as one batch, in the mapping's order."""
        self.publish_all([(desired_topic(device), orjson.dumps(dict(doc))) for device, doc in documents.items()])

    def clear_desired(self, device_id: str) -> None:
        """Remove the retained manifest of a device that is gone (an empty retained message clears it)."""
        self.publish(desired_topic(device_id), b"")

    def _unacknowledged(self, missing: Sequence[str], total: int, causes: set[str]) -> str:
        named = ", ".join(missing[:_NAMED]) + (f" and {len(missing) - _NAMED} more" if len(missing) > _NAMED else "")
        why = f" ({'; '.join(sorted(causes))})" if causes else ""
        return (
            f"the MQTT broker at {self.host}:{self.port} did not acknowledge {len(missing)} of {total} message(s) "
            f"in time{why}: {named}; they stay queued and go out again when the broker is reachable"
        )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("the MQTT broker refused the service's publisher: %s", reason)
            return
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()
        log.info("the service's MQTT publisher disconnected (%s); paho reconnects", reason)

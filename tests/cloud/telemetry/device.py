"""A device's side of the MQTT contract spoken by a plain paho client with the device's own credentials."""

from __future__ import annotations

import queue
import zlib
from typing import Any

import orjson
import paho.mqtt.client as paho
from edgewise.runtime.agent.config import Connection
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import HOST

TIMEOUT = 20.0
ROOT = "edgewise/v1/devices"


class DeviceClient:
    """Logs in as the device (client id = device id, last will `offline` retained, as the agent does)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.device_id = connection.device_id
        self._connected: queue.Queue[Any] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            clean_session=False,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,
        )
        self._client.username_pw_set(self.device_id, connection.secret)
        self._client.will_set(self.topic("status"), b"offline", qos=1, retain=True)
        self._client.on_connect = lambda c, u, f, reason, p: self._connected.put(reason)

    def topic(self, name: str) -> str:
        return f"{ROOT}/{self.device_id}/{name}"

    def connect(self) -> DeviceClient:
        self._client.connect(HOST, self.connection.broker_port, keepalive=30)
        self._client.loop_start()
        reason = self._connected.get(timeout=TIMEOUT)
        assert not reason.is_failure, f"{self.device_id} was refused: {reason}"
        return self

    def publish(self, name: str, payload: bytes, *, retain: bool = False) -> None:
        self._client.publish(self.topic(name), payload, qos=1, retain=retain).wait_for_publish(TIMEOUT)

    def report(self, document: dict[str, Any]) -> None:
        self.publish("reported", orjson.dumps(document), retain=True)

    def telemetry(self, records: list[dict[str, Any]], *, compress: bool = True, dropped: Any = None) -> None:
        message = {"deviceId": self.device_id, "records": records, "dropped": dropped or {"ttl": 0, "maxBytes": 0}}
        body = orjson.dumps(message)
        self.publish("telemetry", zlib.compress(body) if compress else body)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def health(seq: int, ts: float, cpu: float = 20.0, disk_free: int = 5 * 2**30) -> dict[str, Any]:
    data = {"cpuPercent": cpu, "memoryUsedBytes": 2**30, "memoryTotalBytes": 4 * 2**30, "diskFreeBytes": disk_free,
            "diskTotalBytes": 32 * 2**30, "load1m": 0.25}  # fmt: skip
    return {"seq": seq, "ts": ts, "kind": "health", "module": None, "data": data}


def scoring(seq: int, ts: float, module: str, requests: int, errors: int, rate: float) -> dict[str, Any]:
    model = {"name": "iris", "version": "1", "inferenceCount": requests, "successCount": requests - errors,
             "failCount": errors, "requests": requests, "errors": errors, "requestsPerSecond": rate,
             "meanLatencyMs": 1.5, "meanQueueMs": 0.1}  # fmt: skip
    return {"seq": seq, "ts": ts, "kind": "scoring", "module": module, "data": {"available": True, "models": [model]}}

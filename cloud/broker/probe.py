"""One MQTT connection attempt: how the service learns that a broker is up and accepts its account."""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt.client as mqtt
from edgewise.cloud.errors import AuthenticationError, ServiceUnavailableError
from paho.mqtt.enums import CallbackAPIVersion

from .accounts import Credentials


def try_connect(*, host: str, port: int, credentials: Credentials | None, timeout: float = 5.0) -> None:
    """Connect, wait for the broker's answer and disconnect.

    Raises ServiceUnavailableError when nothing answers in time and AuthenticationError when the broker
    refuses the credentials.
    """
    result: dict[str, Any] = {}

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        result["reason"] = reason

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"edgewise-probe-{time.monotonic_ns()}",
        protocol=mqtt.MQTTv311,
        reconnect_on_failure=False,
    )
    client.on_connect = on_connect
    if credentials is not None:
        client.username_pw_set(credentials.username, credentials.password)
    deadline = time.monotonic() + timeout
    try:
        client.connect(host, port, keepalive=10)
        while "reason" not in result and time.monotonic() < deadline:
            client.loop(timeout=0.05)
    except OSError as exc:
        raise ServiceUnavailableError(f"cannot connect to the MQTT broker at {host}:{port}: {exc}") from exc
    finally:
        _close(client)
    if "reason" not in result:
        raise ServiceUnavailableError(f"the MQTT broker at {host}:{port} did not answer within {timeout:g}s")
    reason = result["reason"]
    if reason.is_failure:
        who = credentials.username if credentials is not None else "anonymous"
        raise AuthenticationError(f"the MQTT broker at {host}:{port} refused the account {who!r}: {reason}")


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    for _ in range(20):  # the DISCONNECT goes out on the next loop pass, which then closes the socket
        if client.socket() is None:
            return
        client.loop(timeout=0.01)
    sock = client.socket()
    if sock is not None:
        sock.close()

"""The reported state: published whole and retained, only when it changed, and again after every reconnect."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from edgewise.runtime.agent.errors import LinkError
from edgewise.runtime.agent.link.mqtt import MqttLink
from edgewise.runtime.agent.link.topics import DeviceTopics

log = logging.getLogger(__name__)


def encode_state(state: Mapping[str, Any]) -> bytes:
    """Compact JSON with sorted keys, so equal states give equal bytes."""
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


class Reporter:
    """Keeps the broker's retained `reported` message equal to the latest state given to `report`."""

    def __init__(self, *, link: MqttLink, topics: DeviceTopics) -> None:
        self._link = link
        self._topic = topics.reported
        self._latest: bytes | None = None
        self._acknowledged: bytes | None = None
        self._lock = asyncio.Lock()
        link.on_connect(self._reconnected)

    async def report(self, state: Mapping[str, Any]) -> None:
        """Publish `state` unless the broker already holds it; a failure waits for the next connect."""
        self._latest = encode_state(state)
        await self._flush()

    @property
    def pending(self) -> bool:
        """Whether the latest state has not been acknowledged by the broker yet."""
        return self._latest is not None and self._latest != self._acknowledged

    async def _reconnected(self) -> None:
        # The broker may have lost or been given another retained copy while the device was away.
        self._acknowledged = None
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:  # one publish at a time, always of the newest state
            payload = self._latest
            if payload is None or payload == self._acknowledged or not self._link.connected:
                return
            try:
                await self._link.publish(self._topic, payload, retain=True)
            except LinkError as exc:
                log.info("reported state not published yet (%s); it goes out on reconnect", exc)
                return
            self._acknowledged = payload

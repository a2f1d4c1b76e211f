"""Every MQTT topic a device uses, built in one place (the layout is in docs/agent.md)."""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.runtime.agent.config import DEVICE_ID
from edgewise.runtime.agent.errors import ConfigError

TOPIC_ROOT = "edgewise/v1/devices"


@dataclass(frozen=True)
class DeviceTopics:
    """The topics under `edgewise/v1/devices/{device_id}/`."""

    device_id: str

    def __post_init__(self) -> None:
        if not DEVICE_ID.match(self.device_id):
            raise ConfigError(f"device id {self.device_id!r} cannot be used in a topic; use letters, digits, '.-_'")

    @property
    def base(self) -> str:
        return f"{TOPIC_ROOT}/{self.device_id}"

    @property
    def desired(self) -> str:
        return f"{self.base}/desired"

    @property
    def reported(self) -> str:
        return f"{self.base}/reported"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def commands(self) -> str:
        """The filter that matches every direct method sent to this device."""
        return f"{self.base}/commands/+"

    def response(self, request_id: str) -> str:
        """Where the answer to the direct method `request_id` goes."""
        if not request_id or any(c in request_id for c in "/+#\0"):
            raise ValueError(f"request id {request_id!r} must be non-empty without '/', '+', '#'")
        return f"{self.base}/responses/{request_id}"

    def command_name(self, topic: str) -> str | None:
        """The method name of a command topic of this device ("ping"), or None for any other topic."""
        prefix = f"{self.base}/commands/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix) :]
        return name if name and "/" not in name else None

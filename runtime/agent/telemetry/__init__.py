"""Telemetry: the on-disk spool, the sender that drains it over MQTT, and the periodic collector."""

from edgewise.runtime.agent.telemetry.collect import ModuleTap, TelemetryCollector
from edgewise.runtime.agent.telemetry.sender import TelemetrySender
from edgewise.runtime.agent.telemetry.spool import TelemetrySpool

__all__ = ["ModuleTap", "TelemetryCollector", "TelemetrySender", "TelemetrySpool"]

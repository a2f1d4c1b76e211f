"""The workspace service's own MQTT clients (the publisher of desired manifests)."""

from __future__ import annotations

from .publisher import Publisher, UnacknowledgedError, desired_topic

__all__ = ["Publisher", "UnacknowledgedError", "desired_topic"]

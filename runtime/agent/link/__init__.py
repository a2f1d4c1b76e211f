"""The device's MQTT link: topic names, the connection, and the reported state."""

from edgewise.runtime.agent.link.mqtt import Message, MqttLink
from edgewise.runtime.agent.link.reporter import Reporter
from edgewise.runtime.agent.link.topics import DeviceTopics

__all__ = ["DeviceTopics", "Message", "MqttLink", "Reporter"]

"""The workspace's MQTT broker: settings, accounts and topic rules, and the brokers that enforce them."""

from __future__ import annotations

from .accounts import Accounts, Credentials, hash_password, verify_password
from .manager import BrokerManager
from .mosquitto import stop_leftover
from .probe import try_connect
from .rules import SERVICE_USERNAME, device_topic_filter, may_publish, may_subscribe
from .settings import BROKER_CHOICES, BrokerKind, BrokerSettings, find_mosquitto, parse_broker

__all__ = [
    "BROKER_CHOICES",
    "SERVICE_USERNAME",
    "Accounts",
    "BrokerKind",
    "BrokerManager",
    "BrokerSettings",
    "Credentials",
    "device_topic_filter",
    "find_mosquitto",
    "hash_password",
    "may_publish",
    "may_subscribe",
    "parse_broker",
    "stop_leftover",
    "try_connect",
    "verify_password",
]

"""Simulated device fleets and network faults for tests and benchmarks (see DESIGN.md).

Every device is a real agent (a process, or an `Agent` on a shared event loop) talking MQTT to a real
broker; faults act on the broker or on the network between them, never on what a device reports.
"""

from edgewise.simulators.clock import Stopwatch, wait_until, wait_until_async
from edgewise.simulators.faults import LinkProxy, ProxyStats, restart_broker
from edgewise.simulators.fleet import (
    DeviceCredentials,
    DeviceSettings,
    Fleet,
    connection_string,
    device_ids,
    kill_module_processes,
    register_devices,
)
from edgewise.simulators.inprocess import InProcessFleet, rss_bytes
from edgewise.simulators.manifests import manifest_document, signed_manifest
from edgewise.simulators.observer import FleetObserver, applied
from edgewise.simulators.processes import AgentProcess, ProcessFleet

__all__ = [
    "AgentProcess",
    "DeviceCredentials",
    "DeviceSettings",
    "Fleet",
    "FleetObserver",
    "InProcessFleet",
    "LinkProxy",
    "ProcessFleet",
    "ProxyStats",
    "Stopwatch",
    "applied",
    "connection_string",
    "device_ids",
    "kill_module_processes",
    "manifest_document",
    "register_devices",
    "restart_broker",
    "rss_bytes",
    "signed_manifest",
    "wait_until",
    "wait_until_async",
]

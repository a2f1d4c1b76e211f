"""The agent's own Prometheus metrics, in a registry of their own (never the process-wide default).

Module counters are incremented by the executor, running time by the health loop, and the telemetry and
disk figures are read at scrape time or refreshed after each reconcile pass. Process figures come from
/proc/self so no extra library is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edgewise.runtime.agent.errors import ConfigError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
DEPLOYMENT_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, float("inf"))


class _ProcessFigures(Collector):
    """Resident memory and CPU time of the agent process, read from /proc/self on every scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rss = GaugeMetricFamily("edgewise_agent_memory_rss_bytes", "Resident memory of the agent process.")
        cpu = GaugeMetricFamily("edgewise_agent_cpu_seconds", "CPU time (user + system) the agent process used.")
        try:
            rss.add_metric([], float(_rss_bytes()))
            with open("/proc/self/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            cpu.add_metric([], (int(fields[11]) + int(fields[12])) / _TICKS)  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu.add_metric([], usage.ru_utime + usage.ru_stime)
        yield rss
        yield cpu


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * _PAGE


class AgentMetrics:
    """Counters, gauges and a histogram describing what the agent did to its modules and its telemetry."""

    def __init__(self, *, state_dir: Path) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._server: Any = None
        r = self.registry
        self.module_starts = Counter(
            "edgewise_agent_module_starts", "Module processes started.", ["module"], registry=r
        )
        self.module_stops = Counter(
            "edgewise_agent_module_stops", "Module processes stopped by the agent.", ["module"], registry=r
        )
        self.module_restarts = Counter(
            "edgewise_agent_module_restarts",
            "Module starts after an exit or a failed health check.",
            ["module"],
            registry=r,
        )
        self.module_failures = Counter(
            "edgewise_agent_module_failures",
            "Module exits with an error, failed starts and failed updates.",
            ["module"],
            registry=r,
        )
        self.module_running_seconds = Counter(
            "edgewise_agent_module_running_seconds",
            "Seconds a module was seen running and live.",
            ["module"],
            registry=r,
        )
        self.deployment_seconds = Histogram(
            "edgewise_agent_deployment_seconds",
            "Time from accepting a manifest to having applied it.",
            buckets=DEPLOYMENT_BUCKETS,
            registry=r,
        )
        disk = Gauge("edgewise_agent_disk_free_bytes", "Free bytes on the state directory's file system.", registry=r)
        disk.set_function(lambda: _disk_free(state_dir))
        self.telemetry_spooled = Gauge(
            "edgewise_agent_telemetry_records_spooled", "Telemetry records ever written to the spool.", registry=r
        )
        self.telemetry_pending = Gauge(
            "edgewise_agent_telemetry_records_pending", "Telemetry records waiting in the spool.", registry=r
        )
        self.telemetry_sent = Gauge(
            "edgewise_agent_telemetry_records_sent", "Telemetry records acknowledged by the broker.", registry=r
        )
        self.telemetry_dropped = Gauge(
            "edgewise_agent_telemetry_records_dropped",
            "Telemetry records dropped by the spool's bounds.",
            ["reason"],
            registry=r,
        )
        r.register(_ProcessFigures())

    def observe_telemetry(self, *, last_sequence: int, pending: int, dropped: Mapping[str, int]) -> None:
        total_dropped = sum(dropped.values())
        self.telemetry_spooled.set(last_sequence)
        self.telemetry_pending.set(pending)
        self.telemetry_sent.set(max(0, last_sequence - pending - total_dropped))
        for reason, count in dropped.items():
            self.telemetry_dropped.labels(reason=reason).set(count)

    def forget_module(self, module: str) -> None:
        """Drop the series of a module that left the manifest."""
        for metric in (
            self.module_starts,
            self.module_stops,
            self.module_restarts,
            self.module_failures,
            self.module_running_seconds,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(module)

    def exposition(self) -> bytes:
        """The text format a scrape returns."""
        return generate_latest(self.registry)

    def serve(self, *, host: str, port: int) -> int:
        """Serve /metrics on host:port in a background thread; returns the bound port."""
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving /metrics (when it was served)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _disk_free(path: Path) -> float:
    try:
        stats = os.statvfs(path)
    except OSError:
        return float("nan")
    return float(stats.f_bavail * stats.f_frsize)

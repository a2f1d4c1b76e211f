"""The agent's Prometheus metrics: its own registry, the text exposition, and the HTTP endpoint."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from edgewise.runtime.agent.metrics import AgentMetrics
from prometheus_client.parser import text_string_to_metric_families

from tests.support import HOST, free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_exposition_has_module_telemetry_and_process_figures(tmp_path: Path) -> None:
    metrics = AgentMetrics(state_dir=tmp_path)
    metrics.module_starts.labels(module="iris").inc()
    metrics.module_restarts.labels(module="iris").inc(2)
    metrics.module_failures.labels(module="iris").inc()
    metrics.module_running_seconds.labels(module="iris").inc(5.0)
    metrics.deployment_seconds.observe(3.2)
    metrics.observe_telemetry(last_sequence=100, pending=10, dropped={"ttl": 5, "maxBytes": 1})
    found = samples(metrics.exposition().decode())
    iris = (("module", "iris"),)
    assert found[("edgewise_agent_module_starts_total", iris)] == 1
    assert found[("edgewise_agent_module_restarts_total", iris)] == 2
    assert found[("edgewise_agent_module_failures_total", iris)] == 1
    assert found[("edgewise_agent_module_running_seconds_total", iris)] == 5.0
    assert found[("edgewise_agent_deployment_seconds_count", ())] == 1
    assert found[("edgewise_agent_telemetry_records_spooled", ())] == 100
    assert found[("edgewise_agent_telemetry_records_pending", ())] == 10
    assert found[("edgewise_agent_telemetry_records_sent", ())] == 84
    assert found[("edgewise_agent_telemetry_records_dropped", (("reason", "ttl"),))] == 5
    assert found[("edgewise_agent_disk_free_bytes", ())] > 0
    assert found[("edgewise_agent_memory_rss_bytes", ())] > 1_000_000
    assert found[("edgewise_agent_cpu_seconds", ())] > 0
    # Its own registry: nothing from the process-wide default collectors.
    assert not any(name.startswith("python_gc") for name, _ in found)


def test_forgetting_a_module_drops_its_series(tmp_path: Path) -> None:
    metrics = AgentMetrics(state_dir=tmp_path)
    metrics.module_starts.labels(module="old").inc()
    metrics.forget_module("old")
    metrics.forget_module("never-seen")
    assert 'module="old"' not in metrics.exposition().decode()


def test_served_over_http(tmp_path: Path) -> None:
    metrics = AgentMetrics(state_dir=tmp_path)
    metrics.module_stops.labels(module="iris").inc()
    port = metrics.serve(host=HOST, port=free_port())
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
    finally:
        metrics.close()
    assert 'edgewise_agent_module_stops_total{module="iris"} 1.0' in body

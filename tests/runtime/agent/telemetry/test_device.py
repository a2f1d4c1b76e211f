"""Device health read from this machine's /proc and file system."""

from __future__ import annotations

from pathlib import Path

from edgewise.runtime.agent.device import device_health


def test_device_health_reads_this_machine(tmp_path: Path) -> None:
    first = device_health(tmp_path)
    sum(i * i for i in range(200_000))  # some CPU time between the two readings
    second = device_health(tmp_path)
    assert set(second) == {
        "cpuPercent",
        "memoryUsedBytes",
        "memoryTotalBytes",
        "diskFreeBytes",
        "diskTotalBytes",
        "load1m",
    }
    for health in (first, second):
        assert 0.0 <= health["cpuPercent"] <= 100.0
        assert 0 < health["memoryUsedBytes"] < health["memoryTotalBytes"]
        assert 0 < health["diskFreeBytes"] <= health["diskTotalBytes"]
        assert health["load1m"] >= 0.0

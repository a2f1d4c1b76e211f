"""Device health from /proc and statvfs: CPU, memory, disk and load, cheap enough to read every interval."""

from __future__ import annotations

import os
import threading
from pathlib import Path

_PROC_STAT = Path("/proc/stat")
_PROC_MEMINFO = Path("/proc/meminfo")


class _CpuMeter:
    """CPU busy percentage between two readings of /proc/stat (since boot for the first one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[int, int] = (0, 0)  # (busy, total) jiffies

    def percent(self) -> float:
        busy, total = _cpu_times()
        with self._lock:
            last_busy, last_total = self._last
            self._last = (busy, total)
        elapsed = total - last_total
        if elapsed <= 0:
            return 0.0
        return round(100.0 * max(0, busy - last_busy) / elapsed, 2)


def _cpu_times() -> tuple[int, int]:
    try:
        line = _PROC_STAT.read_text().split("\n", 1)[0]
    except OSError:
        return 0, 0
    values = [int(v) for v in line.split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already part of user)
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return total - idle, total


def _meminfo() -> tuple[int, int]:
    """(used, total) bytes; "used" leaves out what the kernel could hand back (MemAvailable)."""
    fields: dict[str, int] = {}
    try:
        for line in _PROC_MEMINFO.read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                fields[name] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        return 0, 0
    total = fields.get("MemTotal", 0)
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    return max(0, total - available), total


_cpu = _CpuMeter()


def device_health(path: Path) -> dict[str, float]:
    """Health of the device; disk figures are for the file system holding `path` (the state directory)."""
    used, total = _meminfo()
    try:
        disk = os.statvfs(path)
        disk_free, disk_total = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
    except OSError:
        disk_free = disk_total = 0
    try:
        load1m = os.getloadavg()[0]
    except OSError:
        load1m = 0.0
    return {
        "cpuPercent": _cpu.percent(),
        "memoryUsedBytes": float(used),
        "memoryTotalBytes": float(total),
        "diskFreeBytes": float(disk_free),
        "diskTotalBytes": float(disk_total),
        "load1m": round(load1m, 2),
    }

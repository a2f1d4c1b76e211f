"""The images report's summary: median pull throughput per server and client, and the edgewise/Distribution
ratio held to the target."""

from __future__ import annotations

import statistics
from typing import Any

TARGET_RATIO = 0.8
SERVERS = ("edgewise", "distribution")


def mb_per_s(pull: dict[str, Any]) -> float:
    """MB (10^6 bytes) per second of one pull."""
    return round(float(pull["bytes"]) / 1e6 / float(pull["seconds"]), 1)


def summarize(pulls: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per client: each server's median MB/s (and range), the ratio edgewise/Distribution, the verdict."""
    out: dict[str, Any] = {}
    for client, by_server in pulls.items():
        entry: dict[str, Any] = {}
        for server in SERVERS:
            rates = [mb_per_s(p) for p in by_server.get(server, [])]
            cpu = [p["server_cpu_seconds"] for p in by_server.get(server, []) if "server_cpu_seconds" in p]
            entry[server] = {
                "median_mb_per_s": round(statistics.median(rates), 1) if rates else None,
                "min_mb_per_s": min(rates, default=None),
                "max_mb_per_s": max(rates, default=None),
                "repetitions": len(rates),
                "median_server_cpu_seconds": round(statistics.median(cpu), 3) if cpu else None,
            }
        ours, theirs = entry["edgewise"]["median_mb_per_s"], entry["distribution"]["median_mb_per_s"]
        ratio = round(ours / theirs, 3) if ours is not None and theirs else None
        entry["edgewise_over_distribution"] = ratio
        entry["target"] = f">= {TARGET_RATIO}"
        entry["pass"] = None if ratio is None else ratio >= TARGET_RATIO
        out[client] = entry
    return out

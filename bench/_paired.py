"""Edgewise against the floor in alternating rounds, both servers up at once.

Measured one after the other, a p50 ratio near 1.1 drifts by several percent with the machine's state;
alternating short rounds (ABBA order) exposes both servers to the same drift, and the median of the
per-round ratios is what the p50 target is judged on.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _cases import ModelCase
from _measure import WARM_REQUESTS, Client, endpoint

Launcher = Callable[[str], Any]  # name -> a started _servers.Launch


def paired_p50(
    cases: list[ModelCase], launch: Launcher, client: Client, work: Path, rounds: int, seconds: float
) -> dict[str, Any]:
    """Per model: each round's p50 for both servers, and the median ratio edgewise/floor."""
    servers: list[Any] = []
    try:
        servers.extend(launch(name) for name in ("floor", "edgewise"))
        return {case.name: _one(case, servers, client, work, rounds, seconds) for case in cases}
    finally:
        for server in servers:
            server.stop()


def _one(
    case: ModelCase, servers: list[Any], client: Client, work: Path, rounds: int, seconds: float
) -> dict[str, Any]:
    targets = []
    for server in servers:
        target, verify = endpoint("grpc", server.grpc_port, case, work / "bodies-paired")
        size, problem = verify()
        if problem or size is None:
            return {"error": f"{server.name}: sample request failed: {problem}"}
        targets.append(target.with_response_bytes(size + 5))
        client.warm(targets[-1], WARM_REQUESTS)
    p50: dict[str, list[float]] = {"floor": [], "edgewise": []}
    for index in range(rounds):
        order = [0, 1] if index % 2 == 0 else [1, 0]
        for i in order:
            run = client.latency(targets[i], seconds)
            if not run.get("verified") or run.get("p50_ms") is None:
                return {"error": f"{servers[i].name}: round {index} not verified: {run}"}
            p50[servers[i].name].append(float(run["p50_ms"]))
    ratios = [e / f for e, f in zip(p50["edgewise"], p50["floor"], strict=True)]
    return {
        "rounds": rounds,
        "seconds_per_round": seconds,
        "floor_p50_ms": p50["floor"],
        "edgewise_p50_ms": p50["edgewise"],
        "median_ratio": round(statistics.median(ratios), 3),
        "spread": [round(min(ratios), 3), round(max(ratios), 3)],
    }

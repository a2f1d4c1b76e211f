"""The tracking report's summary: edgewise/MLflow ratios per workload and the edgewise targets."""

from __future__ import annotations

from typing import Any

# (workload, figure, True when a higher figure is better)
FIGURES = (
    ("one_at_a_time", "points_per_s", True),
    ("batched", "points_per_s", True),
    ("register", "ms_per_version", False),
    ("search", "ms_median", False),
)
TARGET_POINTS_PER_S = 50_000
TARGET_MS_PER_VERSION = 2.0


def _figure(systems: dict[str, Any], system: str, workload: str, figure: str) -> float | None:
    value = systems.get(system, {}).get(workload, {}).get(figure)
    return float(value) if isinstance(value, int | float) else None


def ratios(systems: dict[str, Any]) -> dict[str, Any]:
    """edgewise divided by MLflow per workload, with which way is better; None where a side is missing."""
    out: dict[str, Any] = {}
    for workload, figure, higher_better in FIGURES:
        ours = _figure(systems, "edgewise", workload, figure)
        theirs = _figure(systems, "mlflow", workload, figure)
        ratio = round(ours / theirs, 3) if ours is not None and theirs else None
        faster = None
        if ratio:
            faster = round(ratio if higher_better else 1 / ratio, 2)
        out[f"{workload}.{figure}"] = {
            "edgewise": ours,
            "mlflow": theirs,
            "edgewise_over_mlflow": ratio,
            "better": "higher" if higher_better else "lower",
            "edgewise_times_faster": faster,
        }
    return out


def targets(systems: dict[str, Any]) -> dict[str, Any]:
    """The brief's targets for edgewise: one-at-a-time points/s end to end, and ms per registration."""
    points = _figure(systems, "edgewise", "one_at_a_time", "points_per_s")
    ms = _figure(systems, "edgewise", "register", "ms_per_version")
    return {
        "one_at_a_time_points_per_s": {
            "value": points,
            "target": f">= {TARGET_POINTS_PER_S}",
            "pass": None if points is None else points >= TARGET_POINTS_PER_S,
        },
        "register_ms_per_version": {
            "value": ms,
            "target": f"<= {TARGET_MS_PER_VERSION}",
            "pass": None if ms is None else ms <= TARGET_MS_PER_VERSION,
        },
    }

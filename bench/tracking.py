"""Tracking benchmark: the same four workloads on edgewise and MLflow 3, each in a fresh store on 127.0.0.1.

1. metric points logged one call at a time from a training script, until the server returns them all;
2. the same points in batches of 1,000 (edgewise `Client.log_metrics`, MLflow `log_batch`);
3. model-version registrations from an existing run's model file (per-version time);
4. a search by tag over those versions, half of them tagged stage=prod.

MLflow runs as `mlflow server` (SQLite backend) from its own venv under .bench/venvs/mlflow; edgewise as
`edgewise up`. It only reports figures and never fails on them; a side that cannot run becomes an error entry.

    .venv/bin/python bench/tracking.py            # 10,000 points, 100 versions (MLflow's part takes minutes)
    .venv/bin/python bench/tracking.py --quick    # smoke run, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _tracking_edgewise
import _tracking_mlflow
from _harness import idle_cores
from _tracking_common import Workloads, model_file
from _tracking_report import ratios, targets

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("edgewise", "mlflow")
# Measured on this machine before this benchmark existed (MLflow server, one client, SQLite).
REFERENCE_MLFLOW = {
    "one_at_a_time_points_per_s": 147,
    "batched_points_per_s": 6400,
    "register_ms_per_version": 7,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few points and versions, for a smoke test")
    parser.add_argument(
        "--points", type=int, default=None, help="points logged one at a time (default 10,000)"
    )
    parser.add_argument(
        "--batch-points", type=int, default=None, help="points logged in batches (default 10,000)"
    )
    parser.add_argument("--versions", type=int, default=None, help="model versions registered (default 100)")
    parser.add_argument("--searches", type=int, default=None, help="repeats of the tag search (default 20)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="subset of " + ",".join(SYSTEMS))
    parser.add_argument(
        "--mlflow-http",
        choices=("gunicorn", "uvicorn"),
        default="gunicorn",
        help="MLflow's HTTP server (see bench/_tracking_mlflow.py for why gunicorn is the default)",
    )
    parser.add_argument(
        "--start-timeout", type=float, default=180.0, help="seconds a server gets to be ready"
    )
    parser.add_argument("--output", type=Path, default=ROOT / ".bench" / "tracking.json")
    opts = parser.parse_args()
    opts.systems = [s for s in opts.systems.split(",") if s]
    unknown = set(opts.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    quick = opts.quick
    opts.workloads = Workloads(
        points=opts.points or (300 if quick else 10_000),
        batch_points=opts.batch_points or (2_000 if quick else 10_000),
        versions=opts.versions or (10 if quick else 100),
        searches=opts.searches or (3 if quick else 20),
        timeout=3600.0,
    )
    return opts


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_system(name: str, work: Path, model: Path, opts: argparse.Namespace) -> dict[str, Any]:
    """One system in a fresh directory; whatever goes wrong becomes the system's error entry."""
    log(f"{name}: starting")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    try:
        if name == "edgewise":
            result = _tracking_edgewise.run(work, opts.workloads, model, opts.start_timeout)
        else:
            result = _tracking_mlflow.run(work, opts.workloads, model, opts.start_timeout, opts.mlflow_http)
    except Exception as exc:  # a side that cannot install, start or finish is reported, not fatal
        log(f"{name}: {type(exc).__name__}: {str(exc)[:500]}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    log(f"{name}: done in {result['wall_seconds']} s")
    return result


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main() -> None:
    opts = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers we started
    started = time.monotonic()
    work = ROOT / ".bench" / "tracking-work"
    work.mkdir(parents=True, exist_ok=True)
    model = model_file(work)
    workloads: Workloads = opts.workloads
    report: dict[str, Any] = {
        "meta": {
            "quick": opts.quick,
            "points_one_at_a_time": workloads.points,
            "points_batched": workloads.batch_points,
            "batch_size": 1000,
            "model_versions": workloads.versions,
            "search_repeats": workloads.searches,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": _loadavg(),
            "idle_cores_at_start": idle_cores(),
            "timing": "each workload is timed inside its client process, from the first call to the query "
            "that returns everything written; process start-up and server start-up are not counted",
            "mlflow_reference_measured_earlier": REFERENCE_MLFLOW,
        },
        "systems": {},
    }
    for name in opts.systems:
        report["systems"][name] = bench_system(name, work / name, model, opts)
    report["ratios"] = ratios(report["systems"])
    report["targets"] = targets(report["systems"])
    report["meta"]["total_seconds"] = round(time.monotonic() - started, 1)
    report["meta"]["loadavg_at_end"] = _loadavg()
    text = json.dumps(report, indent=2)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(text + "\n")
    print(text)
    for name, check in report["targets"].items():
        print(f"{name:<44}{check['value']!s:>12} {check['target']:<14} pass={check['pass']}", file=sys.stderr)
    log(f"wrote {opts.output}")


if __name__ == "__main__":
    main()

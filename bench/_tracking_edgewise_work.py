"""The four tracking workloads against an `edgewise up` service, in two parts.

`--part train` is submitted to the service as a run's script: the SDK run bound to it logs one point per
call, then the script writes the model file to outputs/ (the run's model to register) and prints its
timings as one JSON line. `--part registry` runs afterwards as a plain process with EDGEWISE_URL/TOKEN:
batched logging into that run, registrations from its outputs/model.onnx, and the tag search.
Each timing starts at the first call and ends when the service answers a query with everything written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edgewise.cloud.client import Client
from edgewise.cloud.sdk import Run
from edgewise.cloud.store.records import MetricPoint

BATCH = 1000  # points per Client.log_metrics call, as MLflow's log_batch allows
RESULT_MARK = "TRACKING-BENCH-RESULT "


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("train", "registry"), required=True)
    parser.add_argument("--points", type=int, required=True)
    parser.add_argument("--batch-points", type=int, required=True)
    parser.add_argument("--versions", type=int, required=True)
    parser.add_argument("--searches", type=int, required=True)
    parser.add_argument("--run-id", help="registry part: the finished training run")
    parser.add_argument("--model-file", default="model.onnx", help="train part: the file to put in outputs/")
    return parser.parse_args()


def expect(what: str, got: int, wanted: int) -> None:
    if got != wanted:
        raise SystemExit(f"{what}: the service answered {got}, expected {wanted}")


def _rate(points: int, started: float, logged: float, flushed: float, done: float) -> dict[str, Any]:
    return {
        "points": points,
        "seconds": round(done - started, 4),
        "points_per_s": round(points / (done - started), 1),
        "seconds_logging": round(logged - started, 4),
        "seconds_flush": round(flushed - logged, 4),
        "seconds_query": round(done - flushed, 4),
    }


def one_at_a_time(points: int) -> dict[str, Any]:
    """`run.log()` per point on the submitted run, `run.flush()`, then the metrics query through the API."""
    run = Run.get_context()
    client = Client()
    started = time.perf_counter()
    for step in range(points):
        run.log("loss", 1.0 / (step + 1), step=step)
    logged = time.perf_counter()
    if not run.flush(timeout=600):
        raise SystemExit("run.flush() did not finish within 600 s")
    flushed = time.perf_counter()
    stored = client.get_metrics(run.id, "loss")
    done = time.perf_counter()
    expect("metric points", len(stored), points)
    result = _rate(points, started, logged, flushed, done)
    result["run_id"] = run.id
    return result


def batched(client: Client, run_id: str, points: int) -> dict[str, Any]:
    """`Client.log_metrics` with 1,000 points a call, then the metrics query."""
    started = time.perf_counter()
    for first in range(0, points, BATCH):
        now = time.time()
        batch = [
            MetricPoint(name="loss_batched", value=1.0 / (step + 1), step=step, timestamp=now)
            for step in range(first, min(points, first + BATCH))
        ]
        client.log_metrics(run_id, batch)
    logged = time.perf_counter()
    stored = client.get_metrics(run_id, "loss_batched")
    done = time.perf_counter()
    expect("metric points", len(stored), points)
    result = _rate(points, started, logged, logged, done)
    result["batch_size"] = BATCH
    return result


def register(client: Client, run_id: str, versions: int) -> dict[str, Any]:
    """`Client.register_model` from the run's outputs/model.onnx; every other version tagged stage=prod."""
    started = time.perf_counter()
    for index in range(versions):
        tags = {"stage": "prod"} if index % 2 == 0 else None
        client.register_model(name="bench-model", run_id=run_id, path="outputs/model.onnx", tags=tags)
    done = time.perf_counter()
    return {
        "versions": versions,
        "seconds": round(done - started, 4),
        "ms_per_version": round(1000 * (done - started) / versions, 3),
        "call": "Client.register_model(run_id=..., path='outputs/model.onnx')",
    }


def search(client: Client, versions: int, repeats: int) -> dict[str, Any]:
    """`Client.list_models(tags={"stage": "prod"})`, repeated; every answer must hold the tagged half."""
    wanted = (versions + 1) // 2
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        found = client.list_models(tags={"stage": "prod"})
        times.append(time.perf_counter() - started)
        expect("versions tagged prod", len(found), wanted)
    return {
        "matches": wanted,
        "repeats": repeats,
        "ms_median": round(1000 * statistics.median(times), 3),
        "ms_min": round(1000 * min(times), 3),
        "call": "Client.list_models(tags=...)",
    }


def main() -> None:
    opts = parse_args()
    if opts.part == "train":
        result = {"one_at_a_time": one_at_a_time(opts.points)}
        Path("outputs").mkdir(exist_ok=True)
        shutil.copyfile(opts.model_file, "outputs/model.onnx")
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    if not opts.run_id:
        raise SystemExit("--part registry needs --run-id")
    client = Client()
    result = {"batched": batched(client, opts.run_id, opts.batch_points)}
    print(f"batched: {result['batched']['points_per_s']} points/s", file=sys.stderr)
    result["register"] = register(client, opts.run_id, opts.versions)
    print(f"register: {result['register']['ms_per_version']} ms/version", file=sys.stderr)
    result["search"] = search(client, opts.versions, opts.searches)
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

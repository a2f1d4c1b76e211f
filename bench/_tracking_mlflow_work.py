"""The four tracking workloads against an MLflow tracking server; runs with the MLflow venv's python.

It imports only MLflow and the standard library, talks only to MLFLOW_TRACKING_URI (a server on 127.0.0.1)
and prints one JSON object on stdout. Each timing starts at the first call and ends when the server
answers a query with everything written, so buffering on the client cannot flatter a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric

BATCH = 1000  # MLflow's own limit of metrics per log_batch call
METRIC = "loss"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, required=True)
    parser.add_argument("--batch-points", type=int, required=True)
    parser.add_argument("--versions", type=int, required=True)
    parser.add_argument("--searches", type=int, required=True)
    parser.add_argument("--model-file", required=True)
    return parser.parse_args()


def expect(what: str, got: int, wanted: int) -> None:
    if got != wanted:
        raise SystemExit(f"{what}: the server answered {got}, expected {wanted}")


def one_at_a_time(client: MlflowClient, points: int) -> dict[str, Any]:
    """`mlflow.log_metric` per point from a script's active run, then the history query."""
    with mlflow.start_run(run_name="one-at-a-time") as run:
        started = time.perf_counter()
        for step in range(points):
            mlflow.log_metric(METRIC, 1.0 / (step + 1), step=step)
        logged = time.perf_counter()
        history = client.get_metric_history(run.info.run_id, METRIC)
        done = time.perf_counter()
    expect("metric history", len(history), points)
    return _rate(points, started, logged, done)


def batched(client: MlflowClient, points: int) -> dict[str, Any]:
    """`log_batch` with 1,000 metrics a call, then the history query."""
    with mlflow.start_run(run_name="batched") as run:
        run_id = run.info.run_id
        started = time.perf_counter()
        for first in range(0, points, BATCH):
            now = int(time.time() * 1000)
            metrics = [
                Metric(METRIC, 1.0 / (step + 1), now, step)
                for step in range(first, min(points, first + BATCH))
            ]
            client.log_batch(run_id, metrics=metrics)
        logged = time.perf_counter()
        history = client.get_metric_history(run_id, METRIC)
        done = time.perf_counter()
    expect("metric history", len(history), points)
    result = _rate(points, started, logged, done)
    result["batch_size"] = BATCH
    return result


def _rate(points: int, started: float, logged: float, done: float) -> dict[str, Any]:
    return {
        "points": points,
        "seconds": round(done - started, 4),
        "points_per_s": round(points / (done - started), 1),
        "seconds_logging": round(logged - started, 4),
        "seconds_query": round(done - logged, 4),
    }


def model_run(model_file: str) -> str:
    """A finished run that holds the model file as its artifact `model/model.onnx`."""
    with mlflow.start_run(run_name="trained-model") as run:
        mlflow.log_artifact(model_file, artifact_path="model")
    return run.info.run_id


def register_lean(client: MlflowClient, run_id: str, versions: int) -> dict[str, Any]:
    """`create_registered_model` once, then `create_model_version` from the run; every other one tagged prod.

    MLflow 3's `mlflow.register_model("runs:/...")` only accepts MLflow-format logged models, not a plain
    file, so the registry's own calls are timed (the one-liner makes the same two calls and more).
    """
    name = "bench-model"
    source = f"runs:/{run_id}/model"
    started = time.perf_counter()
    client.create_registered_model(name)
    for index in range(versions):
        tags = {"stage": "prod"} if index % 2 == 0 else {}
        client.create_model_version(name, source, run_id=run_id, tags=tags)
    done = time.perf_counter()
    return _per_version(
        versions, started, done, "MlflowClient.create_registered_model + create_model_version"
    )


def _per_version(versions: int, started: float, done: float, how: str) -> dict[str, Any]:
    return {
        "versions": versions,
        "seconds": round(done - started, 4),
        "ms_per_version": round(1000 * (done - started) / versions, 3),
        "call": how,
    }


def search(client: MlflowClient, versions: int, repeats: int) -> dict[str, Any]:
    """`search_model_versions("tags.stage = 'prod'")`, repeated; every answer must hold the tagged half."""
    wanted = (versions + 1) // 2
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        found = client.search_model_versions("tags.stage = 'prod'")
        times.append(time.perf_counter() - started)
        expect("versions tagged prod", len(found), wanted)
    return {
        "matches": wanted,
        "repeats": repeats,
        "ms_median": round(1000 * statistics.median(times), 3),
        "ms_min": round(1000 * min(times), 3),
        "call": "MlflowClient.search_model_versions",
    }


def main() -> None:
    opts = parse_args()
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if not uri.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise SystemExit(f"refusing tracking URI {uri!r}: this benchmark only talks to 127.0.0.1")
    mlflow.set_experiment("tracking-bench")
    client = MlflowClient()
    result: dict[str, Any] = {"mlflow": mlflow.__version__}
    result["one_at_a_time"] = one_at_a_time(client, opts.points)
    print(f"one at a time: {result['one_at_a_time']['points_per_s']} points/s", file=sys.stderr)
    result["batched"] = batched(client, opts.batch_points)
    print(f"batched: {result['batched']['points_per_s']} points/s", file=sys.stderr)
    run_id = model_run(opts.model_file)
    result["register"] = register_lean(client, run_id, opts.versions)
    print(f"register: {result['register']['ms_per_version']} ms/version", file=sys.stderr)
    result["search"] = search(client, opts.versions, opts.searches)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Prometheus metrics at /metrics: request outcomes, durations and batch sizes per model and version."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from edgewise.runtime.scoring import metrics as server_metrics
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from examples.models import matmul_model
from tests.runtime.scoring.builders import add_model
from tests.support import ServerProcess, wait_until, write_config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _build(repo: Path) -> None:
    for version in (1, 2):
        add_model(repo / "adder" / str(version) / "model.onnx", offset=float(version))
    write_config(repo / "adder", version_policy={"all": {}})
    matmul_model(repo / "batched" / "1" / "model.onnx", features=4, outputs=2)
    write_config(repo / "batched", max_batch_size=16)
    add_model(repo / "reloaded" / "1" / "model.onnx", offset=1.0)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(_build, "--metrics", "--repository-poll-secs", "0.2")


def scrape(server: ServerProcess) -> Samples:
    with server.http() as client:
        reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def send(
    client: grpcclient.InferenceServerClient, model: str, version: str, rows: int, features: int = 4
) -> None:
    tensor = grpcclient.InferInput("x", [rows, features], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, features), dtype=np.float32))
    client.infer(model, [tensor], model_version=version)


def test_request_outcomes_and_durations_per_version(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = scrape(server)
    for _ in range(3):
        send(client, "adder", "1", rows=1)
    for _ in range(2):
        send(client, "adder", "2", rows=1)
    with pytest.raises(InferenceServerException):
        send(client, "adder", "2", rows=1, features=5)  # wrong shape: a failure of version 2
    # REST requests count the same way.
    http = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    http.infer("adder", [tensor], model_version="1")
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "edgewise_inference_requests_total"
    assert delta(requests, model="adder", version="1", outcome="success") == 4
    assert delta(requests, model="adder", version="1", outcome="failure") == 0
    assert delta(requests, model="adder", version="2", outcome="success") == 2
    assert delta(requests, model="adder", version="2", outcome="failure") == 1

    duration = "edgewise_inference_request_duration_seconds"
    assert delta(f"{duration}_count", model="adder", version="1") == 4
    assert delta(f"{duration}_count", model="adder", version="2") == 3
    assert delta(f"{duration}_sum", model="adder", version="1") > 0
    assert value(after, f"{duration}_bucket", model="adder", version="1", le="+Inf") == value(
        after, f"{duration}_count", model="adder", version="1"
    )
    compute = "edgewise_inference_compute_duration_seconds_count"
    assert delta(compute, model="adder", version="1") == 4
    assert delta(compute, model="adder", version="2") == 2  # the failed request never reached the backend


def test_batch_sizes_and_queue_times(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = scrape(server)
    for rows in (1, 3, 12):
        send(client, "batched", "1", rows=rows)
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    labels = {"model": "batched", "version": "1"}
    stats = client.get_inference_statistics("batched").model_stats[0]
    batch = "edgewise_inference_batch_size"
    assert delta(f"{batch}_sum", **labels) == 16
    assert value(after, f"{batch}_count", **labels) == stats.execution_count
    assert value(after, f"{batch}_sum", **labels) == stats.inference_count
    assert delta(f"{batch}_bucket", le="1.0", **labels) == 1
    assert delta(f"{batch}_bucket", le="4.0", **labels) == 2
    assert delta(f"{batch}_bucket", le="16.0", **labels) == 3
    assert delta("edgewise_inference_queue_duration_seconds_count", **labels) == 3


def test_model_ready_gauge_follows_load_and_unload(server: ServerProcess) -> None:
    samples = scrape(server)
    for version in ("1", "2"):
        assert value(samples, "edgewise_model_ready", model="adder", version=version) == 1
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.unload_model("adder")
    samples = scrape(server)
    for version in ("1", "2"):
        assert value(samples, "edgewise_model_ready", model="adder", version=version) == 0
    client.load_model("adder")
    samples = scrape(server)
    for version in ("1", "2"):
        assert value(samples, "edgewise_model_ready", model="adder", version=version) == 1


def test_metrics_are_off_without_the_flag(server_factory: Callable[..., ServerProcess]) -> None:
    plain = server_factory(lambda repo: matmul_model(repo / "m" / "1" / "model.onnx", features=4, outputs=2))
    with plain.http() as client:
        reply = client.get("/metrics")
    assert reply.status_code == 404
    assert "--metrics" in reply.json()["error"]


def test_model_ready_gauge_after_a_version_is_reloaded(server: ServerProcess) -> None:
    """A changed model file reloads the same version number; the gauge must stay 1 for the new load."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    assert client.infer("reloaded", [tensor]).as_numpy("y").tolist() == [[1.0] * 4]
    staging = add_model(server.repo / "reloaded" / ".staging.onnx", offset=5.0)
    os.replace(staging, server.repo / "reloaded" / "1" / "model.onnx")
    wait_until(
        lambda: client.infer("reloaded", [tensor]).as_numpy("y").tolist() == [[5.0] * 4],
        what="the changed file to serve",
    )
    assert value(scrape(server), "edgewise_model_ready", model="reloaded", version="1") == 1


def test_a_forking_process_makes_the_next_servers_metrics_ahead() -> None:
    server_metrics.make_spare()
    spare = server_metrics.server_metrics()
    again = server_metrics.server_metrics()
    assert spare is not again and spare.registry is not again.registry  # the spare serves one server only

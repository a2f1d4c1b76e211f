"""Dynamic batching: concurrent requests are merged into one backend call, and each caller gets its rows.

The models wait up to two seconds for company, and each test sends exactly max_batch_size rows at once, so
a full batch runs as soon as the last request arrives; the delay only bounds a slow machine's stragglers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.runtime.scoring.builders import sklearn_classifier
from tests.support import ServerProcess, write_config

DELAY_US = 2_000_000
SINGLES = 8  # max_batch_size of "singles": eight one-row requests fill it
ROWS = (1, 2, 3, 4, 5, 6, 7, 4)  # sum 32: max_batch_size of "mixed"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, np.ndarray]:
    path, rows = sklearn_classifier(tmp_path_factory.mktemp("sklearn") / "model.onnx", seed=3)
    return path.read_bytes(), rows


@pytest.fixture(scope="module")
def session(classifier: tuple[bytes, np.ndarray]) -> ort.InferenceSession:
    return ort.InferenceSession(classifier[0], providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def server(
    server_factory: Callable[..., ServerProcess], classifier: tuple[bytes, np.ndarray]
) -> ServerProcess:
    def build(repo: Path) -> None:
        for model, max_batch in (("singles", SINGLES), ("mixed", sum(ROWS))):
            (repo / model / "1").mkdir(parents=True)
            (repo / model / "1" / "model.onnx").write_bytes(classifier[0])
            write_config(
                repo / model,
                max_batch_size=max_batch,
                dynamic_batching={"max_queue_delay_microseconds": DELAY_US},
            )

    return server_factory(build)


def statistics(server: ServerProcess, model: str) -> Any:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    return client.get_inference_statistics(model).model_stats[0]


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on threads released at the same moment; return results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait(timeout=60)
        try:
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def grpc_call(server: ServerProcess, model: str, rows: np.ndarray) -> Callable[[], dict[str, np.ndarray]]:
    client = grpcclient.InferenceServerClient(server.grpc_url)  # one client (channel) per caller
    tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)

    def call() -> dict[str, np.ndarray]:
        result = client.infer(model, [tensor])
        return {name: result.as_numpy(name) for name in ("label", "probabilities")}

    return call


def rest_call(server: ServerProcess, model: str, rows: np.ndarray) -> Callable[[], dict[str, np.ndarray]]:
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }

    def call() -> dict[str, np.ndarray]:
        with httpx.Client(base_url=server.base_url, timeout=60.0, trust_env=False) as client:
            reply = client.post(f"/v2/models/{model}/infer", json=body)
        reply.raise_for_status()
        return {
            o["name"]: np.array(
                o["data"], dtype=np.int64 if o["datatype"] == "INT64" else np.float32
            ).reshape(o["shape"])
            for o in reply.json()["outputs"]
        }

    return call


def test_concurrent_single_rows_are_merged(
    server: ServerProcess, classifier: tuple[bytes, np.ndarray], session: ort.InferenceSession
) -> None:
    rows = classifier[1][:SINGLES]
    before = statistics(server, "singles")
    results = run_together([grpc_call(server, "singles", rows[i : i + 1]) for i in range(SINGLES)])
    after = statistics(server, "singles")

    want_label, want_proba = session.run(["label", "probabilities"], {"features": rows})
    for i, result in enumerate(results):
        assert not isinstance(result, Exception), result
        np.testing.assert_array_equal(result["label"], want_label[i : i + 1])
        np.testing.assert_allclose(result["probabilities"], want_proba[i : i + 1], rtol=1e-5, atol=1e-7)

    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == SINGLES
    assert executions < inferences
    assert max(b.batch_size for b in after.batch_stats) > 1
    assert after.inference_stats.queue.count - before.inference_stats.queue.count == SINGLES
    assert after.inference_stats.success.count - before.inference_stats.success.count == SINGLES


def test_each_caller_gets_its_own_rows_across_protocols(
    server: ServerProcess, classifier: tuple[bytes, np.ndarray], session: ort.InferenceSession
) -> None:
    data = classifier[1]
    offsets = np.cumsum((0, *ROWS))
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(len(ROWS))]
    calls = [(grpc_call if i % 2 == 0 else rest_call)(server, "mixed", part) for i, part in enumerate(parts)]
    before = statistics(server, "mixed")
    results = run_together(calls)
    after = statistics(server, "mixed")

    for part, result in zip(parts, results, strict=True):
        assert not isinstance(result, Exception), result
        want_label, want_proba = session.run(["label", "probabilities"], {"features": part})
        assert result["label"].shape == (len(part),)
        np.testing.assert_array_equal(result["label"], want_label)
        np.testing.assert_allclose(result["probabilities"], want_proba, rtol=1e-5, atol=1e-6)
    assert after.inference_count - before.inference_count == sum(ROWS)
    assert after.execution_count - before.execution_count < len(ROWS)


def test_a_batch_over_max_batch_size_is_rejected(
    server: ServerProcess, classifier: tuple[bytes, np.ndarray]
) -> None:
    rows = classifier[1][: SINGLES + 1]
    with pytest.raises(InferenceServerException) as info:
        grpc_call(server, "singles", rows)()
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert str(SINGLES) in info.value.message()
    with pytest.raises(httpx.HTTPStatusError) as http_info:
        rest_call(server, "singles", rows)()
    assert http_info.value.response.status_code == 400
    # A full batch on its own is fine.
    assert grpc_call(server, "singles", rows[:SINGLES])()["label"].shape == (SINGLES,)


def test_statistics_over_rest_match_grpc(server: ServerProcess) -> None:
    with server.http() as client:
        doc = client.get("/v2/models/singles/versions/1/stats").json()
    [stats] = doc["model_stats"]
    grpc_stats = statistics(server, "singles")
    assert stats["name"] == "singles" and stats["version"] == "1"
    assert stats["inference_count"] == grpc_stats.inference_count
    assert stats["execution_count"] == grpc_stats.execution_count
    assert {b["batch_size"] for b in stats["batch_stats"]} == {b.batch_size for b in grpc_stats.batch_stats}

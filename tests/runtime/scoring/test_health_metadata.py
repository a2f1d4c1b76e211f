"""Health, readiness and metadata over gRPC and REST, grpc.health.v1 and server reflection."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.utils import InferenceServerException

from edgewise import __version__
from examples.models import matmul_model, mlp_model
from tests.runtime.scoring.builders import feed_fifo, fifo_model, identity_model, upper_model
from tests.support import ServerProcess, free_port, wait_until, write_config

INFERENCE_SERVICE = "inference.GRPCInferenceService"


def _build(repo: Path) -> None:
    mlp_model(repo / "mlp" / "1" / "model.onnx", sizes=(8, 6, 3))
    matmul_model(repo / "matmul" / "1" / "model.onnx", features=4, outputs=2)
    identity_model(repo / "static" / "1" / "model.onnx", "FP32", dims=(2, 3))
    upper_model(repo / "upper" / "1" / "model.onnx")
    mlp_model(repo / "renamed" / "1" / "model.onnx", sizes=(8, 6, 3))
    write_config(
        repo / "renamed",
        input=[{"name": "pixels", "onnx_name": "input"}],
        output=[{"name": "scores", "onnx_name": "probabilities"}],
    )


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(_build)


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def http_client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


# -- health ------------------------------------------------------------------------------------------


def test_server_live_and_ready(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert http_client.is_server_live()
    assert http_client.is_server_ready()


def test_rest_health_answers_by_status_code(server: ServerProcess) -> None:
    with server.http() as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/models/mlp/ready").status_code == 200
        assert client.get("/v2/models/mlp/versions/1/ready").status_code == 200
        assert client.get("/v2/models/mlp/versions/9/ready").status_code == 400


@pytest.mark.parametrize("model", ["mlp", "matmul", "static", "upper", "renamed"])
def test_model_ready(
    model: str, grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    assert grpc_client.is_model_ready(model)
    assert grpc_client.is_model_ready(model, "1")
    assert http_client.is_model_ready(model)
    assert http_client.is_model_ready(model, "1")


def test_model_ready_is_false_for_a_missing_version(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    assert not grpc_client.is_model_ready("mlp", "2")
    assert not http_client.is_model_ready("mlp", "2")


def test_model_ready_for_an_unknown_model(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    with pytest.raises(InferenceServerException) as info:
        grpc_client.is_model_ready("no-such-model")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert not http_client.is_model_ready("no-such-model")


def test_grpc_health_checking_protocol(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        assert stub.Check(health_pb2.HealthCheckRequest(service=INFERENCE_SERVICE)).status == serving
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_server_reflection(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {INFERENCE_SERVICE, "grpc.health.v1.Health"} <= services
        assert any(name.startswith("grpc.reflection.") for name in services)
        # The listed service can be described: a client such as grpcurl builds calls from this alone.
        service = descriptor_pool.DescriptorPool(database).FindServiceByName(INFERENCE_SERVICE)
        methods = {method.name for method in service.methods}
        assert {
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "ModelStreamInfer",
            "ModelStatistics",
            "RepositoryIndex",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
        } <= methods
        assert service.methods_by_name["ModelInfer"].input_type.full_name == "inference.ModelInferRequest"


# -- metadata ----------------------------------------------------------------------------------------


def test_server_metadata(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    grpc_meta = grpc_client.get_server_metadata()
    assert grpc_meta.name == "edgewise"
    assert grpc_meta.version == __version__
    assert {"binary_tensor_data", "statistics", "model_repository"} <= set(grpc_meta.extensions)
    rest_meta = http_client.get_server_metadata()
    assert rest_meta == {"name": "edgewise", "version": __version__, "extensions": list(grpc_meta.extensions)}


def _tensors(items: Iterable[Any]) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, shape) of metadata tensors, from either a protobuf message or REST JSON."""
    out = []
    for t in items:
        if isinstance(t, dict):
            out.append((t["name"], t["datatype"], [int(d) for d in t["shape"]]))
        else:
            out.append((t.name, t.datatype, [int(d) for d in t.shape]))
    return out


EXPECTED_METADATA = {
    "mlp": ([("input", "FP32", [-1, 8])], [("logits", "FP32", [-1, 3]), ("probabilities", "FP32", [-1, 3])]),
    "matmul": ([("x", "FP32", [-1, 4])], [("y", "FP32", [-1, 2])]),
    "static": ([("x", "FP32", [2, 3])], [("y", "FP32", [2, 3])]),
    "upper": ([("text", "BYTES", [-1])], [("upper", "BYTES", [-1])]),
    "renamed": ([("pixels", "FP32", [-1, 8])], [("logits", "FP32", [-1, 3]), ("scores", "FP32", [-1, 3])]),
}


@pytest.mark.parametrize("model", sorted(EXPECTED_METADATA))
def test_model_metadata_over_grpc(model: str, grpc_client: grpcclient.InferenceServerClient) -> None:
    inputs, outputs = EXPECTED_METADATA[model]
    for version in ("", "1"):
        meta = grpc_client.get_model_metadata(model, version)
        assert meta.name == model
        assert list(meta.versions) == ["1"]
        assert meta.platform == "onnxruntime_onnx"
        assert _tensors(meta.inputs) == inputs
        assert _tensors(meta.outputs) == outputs


@pytest.mark.parametrize("model", sorted(EXPECTED_METADATA))
def test_model_metadata_over_rest(model: str, http_client: httpclient.InferenceServerClient) -> None:
    inputs, outputs = EXPECTED_METADATA[model]
    for version in ("", "1"):
        meta = http_client.get_model_metadata(model, version)
        assert meta["name"] == model
        assert meta["versions"] == ["1"]
        assert meta["platform"] == "onnxruntime_onnx"
        assert _tensors(meta["inputs"]) == inputs
        assert _tensors(meta["outputs"]) == outputs


def test_renamed_tensors_serve_under_their_new_names(grpc_client: grpcclient.InferenceServerClient) -> None:
    pixels = np.random.default_rng(1).random((2, 8), dtype=np.float32)
    tensor = grpcclient.InferInput("pixels", [2, 8], "FP32")
    tensor.set_data_from_numpy(pixels)
    result = grpc_client.infer("renamed", [tensor], outputs=[grpcclient.InferRequestedOutput("scores")])
    scores = result.as_numpy("scores")
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert result.as_numpy("probabilities") is None


# -- liveness before readiness -----------------------------------------------------------------------


def test_live_while_a_model_is_still_loading(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A model whose file is a named pipe stays LOADING until the test writes it: no race to win."""
    model_bytes = matmul_model(tmp_path / "matmul.onnx", features=4, outputs=2).read_bytes()

    def build(repo: Path) -> None:
        matmul_model(repo / "quick" / "1" / "model.onnx", features=4, outputs=2)
        fifo_model(repo / "slow" / "1" / "model.onnx")

    # Polling off: a rescan would open the pipe again after it changed.
    server = server_factory(build, "--repository-poll-secs", "0", ready=False)
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    http_client = httpclient.InferenceServerClient(server.http_url)

    def slow_is_loading() -> bool:
        index = {e["name"]: e for e in http_client.get_model_repository_index()}
        return index.get("slow", {}).get("state") == "LOADING"

    wait_until(slow_is_loading, timeout=60, what="model 'slow' to be LOADING")
    assert grpc_client.is_server_live()
    assert http_client.is_server_live()
    assert not grpc_client.is_server_ready()
    assert not http_client.is_server_ready()
    assert not grpc_client.is_model_ready("slow")
    with grpc.insecure_channel(server.grpc_url) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="")).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("slow", [tensor])
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert "loading" in info.value.message()

    feed_fifo(server.repo / "slow" / "1" / "model.onnx", model_bytes)
    wait_until(server.is_ready, timeout=60, what="the server to become ready")
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("slow")
    assert grpc_client.is_model_ready("quick")
    result = grpc_client.infer("slow", [tensor])
    assert result.as_numpy("y").shape == (1, 2)


def test_listens_on_the_ports_it_is_given(server_factory: Callable[..., ServerProcess]) -> None:
    grpc_port, http_port = free_port(), free_port()

    def build(repo: Path) -> None:
        matmul_model(repo / "m" / "1" / "model.onnx", features=4, outputs=2)

    server = server_factory(build, "--grpc-port", str(grpc_port), "--http-port", str(http_port))
    assert (server.grpc_port, server.http_port) == (grpc_port, http_port)
    assert grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_server_ready()
    assert httpclient.InferenceServerClient(f"127.0.0.1:{http_port}").is_model_ready("m")


def test_stops_on_sigterm_while_a_model_load_is_blocked(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """A model file that never finishes arriving must not keep the server from shutting down."""

    def build(repo: Path) -> None:
        fifo_model(repo / "stuck" / "1" / "model.onnx")

    server = server_factory(build, "--repository-poll-secs", "0", ready=False)
    http_client = httpclient.InferenceServerClient(server.http_url)
    wait_until(
        lambda: {e["name"]: e["state"] for e in http_client.get_model_repository_index()}.get("stuck") == "LOADING",
        timeout=60,
        what="model 'stuck' to be LOADING",
    )
    server.process.terminate()
    try:
        server.process.wait(60)  # a deadline for a hang, not a measurement
    except subprocess.TimeoutExpired:
        pytest.fail(f"edgewise-score ignored SIGTERM while a model was loading:\n{server.log()}")
    assert "exiting with a model load still running" in server.log()

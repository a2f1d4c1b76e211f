"""Errors reach clients with the right status over both protocols, and the server keeps serving.

unknown model or version -> NOT_FOUND / 404; bad tensors -> INVALID_ARGUMENT / 400; a model that failed to
load -> UNAVAILABLE / 503 with the reason, which the repository index shows too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.service_pb2 as service_pb2
import tritonclient.grpc.service_pb2_grpc as service_pb2_grpc
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from examples.models import matmul_model
from tests.runtime.scoring.builders import corrupt_model, identity_model, save, upper_model
from tests.support import ServerProcess, wait_until, write_config

MATMUL_X = np.arange(8, dtype=np.float32).reshape(2, 4)


def _adder(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "adder",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3])],
    )
    save(graph, path)


def _bfloat16(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "bf16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["batch", 2])],
    )
    save(graph, path)


def _build(repo: Path) -> None:
    matmul_model(repo / "matmul" / "1" / "model.onnx", features=4, outputs=2)
    identity_model(repo / "static" / "1" / "model.onnx", "FP32", dims=(2, 3))
    upper_model(repo / "upper" / "1" / "model.onnx")
    _adder(repo / "adder" / "1" / "model.onnx")
    corrupt_model(repo / "broken" / "1" / "model.onnx")
    _bfloat16(repo / "bfloat16" / "1" / "model.onnx")
    identity_model(repo / "bad_config" / "1" / "model.onnx", "FP32")
    (repo / "bad_config" / "config.json").write_text("{not json")
    identity_model(repo / "unbatchable" / "1" / "model.onnx", "FP32", dims=(2, 3))
    write_config(repo / "unbatchable", max_batch_size=8)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(_build)


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Any:
    channel = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Any:
    """After every test, the servers the test used still answer a valid request."""
    yield
    for name in ("server", "small_server"):
        if name in request.fixturenames:
            assert_serves(request.getfixturevalue(name))


def assert_serves(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(MATMUL_X)
    assert client.infer("matmul", [tensor]).as_numpy("y").shape == (2, 2)
    with server.http() as http:
        body = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": MATMUL_X.ravel().tolist()}]
        }
        assert http.post("/v2/models/matmul/infer", json=body).status_code == 200


def grpc_error(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def grpc_infer(
    client: grpcclient.InferenceServerClient,
    model: str,
    tensors: dict[str, np.ndarray],
    datatype: str = "FP32",
    version: str = "",
) -> Any:
    inputs = []
    for name, data in tensors.items():
        tensor = grpcclient.InferInput(name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return client.infer(model, inputs, model_version=version)


def rest_infer(server: ServerProcess, path: str, body: Any, **kwargs: Any) -> Any:
    with server.http() as http:
        if isinstance(body, bytes):
            return http.post(path, content=body, **kwargs)
        return http.post(path, json=body, **kwargs)


def fp32_json(name: str, shape: list[int], data: list[float]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": shape, "data": data}


# -- NOT_FOUND / 404 ---------------------------------------------------------------------------------


def test_unknown_model(server: ServerProcess, grpc_client: grpcclient.InferenceServerClient) -> None:
    error = grpc_error(lambda: grpc_infer(grpc_client, "nope", {"x": MATMUL_X}))
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "nope" in error.message()
    assert grpc_error(lambda: grpc_client.get_model_metadata("nope")).status() == "StatusCode.NOT_FOUND"
    assert grpc_error(lambda: grpc_client.get_inference_statistics("nope")).status() == "StatusCode.NOT_FOUND"

    reply = rest_infer(server, "/v2/models/nope/infer", {"inputs": [fp32_json("x", [1, 4], [0, 1, 2, 3])]})
    assert reply.status_code == 404
    assert "nope" in reply.json()["error"]
    with server.http() as http:
        assert http.get("/v2/models/nope").status_code == 404
        assert http.get("/v2/models/nope/stats").status_code == 404


@pytest.mark.parametrize("version", ["9", "0", "latest"])
def test_unknown_version(
    version: str, server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    error = grpc_error(lambda: grpc_infer(grpc_client, "matmul", {"x": MATMUL_X}, version=version))
    assert error.status() == "StatusCode.NOT_FOUND"
    assert version in error.message()
    body = {"inputs": [fp32_json("x", [1, 4], [0, 1, 2, 3])]}
    reply = rest_infer(server, f"/v2/models/matmul/versions/{version}/infer", body)
    assert reply.status_code == 404
    with server.http() as http:
        assert http.get(f"/v2/models/matmul/versions/{version}").status_code == 404


# -- INVALID_ARGUMENT / 400 --------------------------------------------------------------------------


def test_wrong_datatype(server: ServerProcess, grpc_client: grpcclient.InferenceServerClient) -> None:
    error = grpc_error(lambda: grpc_infer(grpc_client, "matmul", {"x": MATMUL_X.astype(np.int32)}, "INT32"))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "INT32" in error.message() and "FP32" in error.message()
    body = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    reply = rest_infer(server, "/v2/models/matmul/infer", body)
    assert reply.status_code == 400
    assert "FP32" in reply.json()["error"]


def test_unsupported_datatype(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP8", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    reply = rest_infer(server, "/v2/models/matmul/infer", body)
    assert reply.status_code == 400
    assert "FP8" in reply.json()["error"]


@pytest.mark.parametrize(
    ("model", "shape"),
    [("matmul", (2, 5)), ("matmul", (8,)), ("matmul", (1, 2, 4)), ("static", (3, 3)), ("static", (2, 2))],
)
def test_wrong_shape(
    model: str, shape: tuple[int, ...], server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    data = np.zeros(shape, dtype=np.float32)
    error = grpc_error(lambda: grpc_infer(grpc_client, model, {"x": data}))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "shape" in error.message()
    reply = rest_infer(
        server, f"/v2/models/{model}/infer", {"inputs": [fp32_json("x", list(shape), [0.0] * data.size)]}
    )
    assert reply.status_code == 400


def test_missing_input(server: ServerProcess, grpc_client: grpcclient.InferenceServerClient) -> None:
    error = grpc_error(lambda: grpc_infer(grpc_client, "adder", {"a": np.ones((1, 3), dtype=np.float32)}))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'b'" in error.message()
    reply = rest_infer(server, "/v2/models/adder/infer", {"inputs": [fp32_json("b", [1, 3], [1, 2, 3])]})
    assert reply.status_code == 400
    assert "'a'" in reply.json()["error"]
    reply = rest_infer(server, "/v2/models/adder/infer", {"inputs": []})
    assert reply.status_code == 400


def test_unknown_input(server: ServerProcess, grpc_client: grpcclient.InferenceServerClient) -> None:
    tensors = {"x": MATMUL_X, "extra": np.ones((2, 4), dtype=np.float32)}
    error = grpc_error(lambda: grpc_infer(grpc_client, "matmul", tensors))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "extra" in error.message()
    reply = rest_infer(server, "/v2/models/matmul/infer", {"inputs": [fp32_json("X", [1, 4], [1, 2, 3, 4])]})
    assert reply.status_code == 400
    assert "'X'" in reply.json()["error"]


def test_input_given_twice(server: ServerProcess) -> None:
    twice = [fp32_json("x", [1, 4], [1, 2, 3, 4]), fp32_json("x", [1, 4], [1, 2, 3, 4])]
    reply = rest_infer(server, "/v2/models/matmul/infer", {"inputs": twice})
    assert reply.status_code == 400


def test_unknown_requested_output(
    server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    tensor = grpcclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(MATMUL_X)
    outputs = [grpcclient.InferRequestedOutput("z")]
    error = grpc_error(lambda: grpc_client.infer("matmul", [tensor], outputs=outputs))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'z'" in error.message()


def test_raw_bytes_not_matching_the_shape(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="matmul")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(MATMUL_X.tobytes()[:-4])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "28 bytes" in info.value.details()


def test_typed_contents_not_matching_the_shape(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="matmul")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend([1.0] * 7)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_raw_contents_for_some_inputs_only(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="adder")
    request.inputs.add(name="a", datatype="FP32", shape=[1, 3])
    request.inputs.add(name="b", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(np.ones(3, dtype=np.float32).tobytes())
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_typed_value_out_of_range(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="matmul")
    tensor = request.inputs.add(name="x", datatype="INT8", shape=[1, 2])
    tensor.contents.int_contents.extend([1, 1000])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not fit INT8" in info.value.details()  # caught while decoding, before the datatype check


def test_rest_binary_size_not_matching_the_shape(server: ServerProcess) -> None:
    payload = MATMUL_X.tobytes()[:-4]
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": 28}}
            ]
        }
    ).encode()
    reply = rest_infer(
        server,
        "/v2/models/matmul/infer",
        header + payload,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 400
    assert "28 bytes" in reply.json()["error"]

    # binary_data_size pointing past the end of the body
    header = header.replace(b"28", b"64")
    reply = rest_infer(
        server,
        "/v2/models/matmul/infer",
        header + payload,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 400


def test_rest_json_value_count_not_matching_the_shape(server: ServerProcess) -> None:
    reply = rest_infer(server, "/v2/models/matmul/infer", {"inputs": [fp32_json("x", [2, 4], [1, 2, 3])]})
    assert reply.status_code == 400
    assert "shape" in reply.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"inputs": 3}',
        b'{"inputs": [{"name": "x"}]}',
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "data": [1, 2, 3, 4]}]}',
    ],
)
def test_malformed_rest_request(body: bytes, server: ServerProcess) -> None:
    reply = rest_infer(server, "/v2/models/matmul/infer", body, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"]


def test_bad_inference_header_length(server: ServerProcess) -> None:
    body = json.dumps({"inputs": [fp32_json("x", [1, 4], [1, 2, 3, 4])]}).encode()
    for value in ("abc", str(len(body) + 10)):
        reply = rest_infer(
            server, "/v2/models/matmul/infer", body, headers={"Inference-Header-Content-Length": value}
        )
        assert reply.status_code == 400


@pytest.mark.parametrize("body", [b"nope", b"[]", b'"ready"'])
def test_malformed_repository_index_request(body: bytes, server: ServerProcess) -> None:
    with server.http() as client:
        reply = client.post("/v2/repository/index", content=body)
    assert reply.status_code == 400
    assert reply.json()["error"]


def test_text_that_is_not_utf8_for_a_string_model(server: ServerProcess, grpc_client: Any) -> None:
    text = np.array([b"fine", b"\xff\xfe broken"], dtype=object)
    tensor = grpcclient.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(text)
    error = grpc_error(lambda: grpc_client.infer("upper", [tensor]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "UTF-8" in error.message()


def test_failed_requests_are_counted(grpc_client: grpcclient.InferenceServerClient) -> None:
    def fails() -> int:
        stats = grpc_client.get_inference_statistics("static").model_stats[0]
        return int(stats.inference_stats.fail.count)

    before = fails()
    grpc_error(lambda: grpc_infer(grpc_client, "static", {"x": np.zeros((5, 3), dtype=np.float32)}))
    assert fails() == before + 1


# -- models that fail to load ------------------------------------------------------------------------

FAILED = {
    "broken": "cannot load",
    "bfloat16": "not served",
    "bad_config": "not valid JSON",
    "unbatchable": "dynamic first dimension",
}


@pytest.mark.parametrize("model", sorted(FAILED))
def test_failed_model_reason_in_the_index(
    model: str, server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    reason = FAILED[model]
    entries = [e for e in grpc_client.get_model_repository_index().models if e.name == model]
    assert len(entries) == 1
    assert entries[0].state == "UNAVAILABLE"
    assert reason in entries[0].reason
    http = httpclient.InferenceServerClient(server.http_url)
    rest_entries = [e for e in http.get_model_repository_index() if e["name"] == model]
    assert [(e["state"], reason in e["reason"]) for e in rest_entries] == [("UNAVAILABLE", True)]
    ready_only = {e.name for e in grpc_client.get_model_repository_index().models if e.state == "READY"}
    assert {"matmul", "static", "upper", "adder"} <= ready_only
    with server.http() as client:
        ready = client.post("/v2/repository/index", json={"ready": True}).json()
        assert model not in {e["name"] for e in ready}


@pytest.mark.parametrize("model", sorted(FAILED))
def test_failed_model_is_unavailable_with_the_reason(
    model: str, server: ServerProcess, grpc_client: grpcclient.InferenceServerClient
) -> None:
    reason = FAILED[model]
    assert not grpc_client.is_model_ready(model)
    with server.http() as client:
        assert client.get(f"/v2/models/{model}/ready").status_code == 400
    error = grpc_error(lambda: grpc_infer(grpc_client, model, {"x": np.zeros((2, 3), dtype=np.float32)}))
    assert error.status() == "StatusCode.UNAVAILABLE"
    assert reason in error.message()
    reply = rest_infer(server, f"/v2/models/{model}/infer", {"inputs": [fp32_json("x", [2, 3], [0.0] * 6)]})
    assert reply.status_code == 503
    assert reason in reply.json()["error"]
    metadata = grpc_error(lambda: grpc_client.get_model_metadata(model))
    assert metadata.status() == "StatusCode.UNAVAILABLE"


def test_load_of_a_broken_model_fails_with_the_reason(server: ServerProcess) -> None:
    with server.http() as client:
        reply = client.post("/v2/repository/models/broken/load")
    assert reply.status_code == 500
    assert "cannot load" in reply.json()["error"]


def test_server_stays_ready_beside_failed_models(grpc_client: grpcclient.InferenceServerClient) -> None:
    assert grpc_client.is_server_ready()


# -- limits and strict readiness ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    def build(repo: Path) -> None:
        matmul_model(repo / "matmul" / "1" / "model.onnx", features=4, outputs=2)

    return server_factory(build, "--max-message-bytes", "4096")


def test_oversized_grpc_request(small_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(small_server.grpc_url)
    big = np.zeros((300, 4), dtype=np.float32)  # 4800 bytes of tensor: over 4096, under twice that
    error = grpc_error(lambda: grpc_infer(client, "matmul", {"x": big}))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "4096" in error.message()
    huge = np.zeros((3000, 4), dtype=np.float32)  # beyond twice the limit: the transport refuses it
    assert (
        grpc_error(lambda: grpc_infer(client, "matmul", {"x": huge})).status()
        == "StatusCode.RESOURCE_EXHAUSTED"
    )


def test_oversized_rest_request(small_server: ServerProcess) -> None:
    big = np.zeros((300, 4), dtype=np.float32)
    reply = rest_infer(
        small_server, "/v2/models/matmul/infer", {"inputs": [fp32_json("x", [300, 4], big.ravel().tolist())]}
    )
    assert reply.status_code == 400
    assert "4096" in reply.json()["error"]
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [300, 4], "parameters": {"binary_data_size": 4800}}
            ]
        }
    ).encode()
    reply = rest_infer(
        small_server,
        "/v2/models/matmul/infer",
        header + big.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 400


def test_oversized_stream_request_gets_an_error_reply(small_server: ServerProcess) -> None:
    import queue

    client = grpcclient.InferenceServerClient(small_server.grpc_url)
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for rows in (300, 2):
            tensor = grpcclient.InferInput("x", [rows, 4], "FP32")
            tensor.set_data_from_numpy(np.zeros((rows, 4), dtype=np.float32))
            client.async_stream_infer("matmul", [tensor])
        (first, first_error), (second, second_error) = results.get(timeout=60), results.get(timeout=60)
    finally:
        client.stop_stream()
    assert first is None and "4096" in first_error.message()
    assert second_error is None and second.as_numpy("y").shape == (2, 2)


def test_strict_readiness_waits_for_every_model(server_factory: Callable[..., ServerProcess]) -> None:
    def build(repo: Path) -> None:
        matmul_model(repo / "matmul" / "1" / "model.onnx", features=4, outputs=2)
        corrupt_model(repo / "broken" / "1" / "model.onnx")

    strict = server_factory(build, "--strict-readiness", ready=False)
    client = grpcclient.InferenceServerClient(strict.grpc_url)

    def broken_failed() -> bool:
        return any(
            e.name == "broken" and e.state == "UNAVAILABLE"
            for e in client.get_model_repository_index().models
        )

    wait_until(broken_failed, timeout=60, what="model 'broken' to fail")
    wait_until(lambda: client.is_model_ready("matmul"), timeout=60, what="model 'matmul'")
    assert client.is_server_live()
    assert not client.is_server_ready()
    assert not strict.is_ready()
    assert_serves(strict)  # not ready as a whole, but the good model answers

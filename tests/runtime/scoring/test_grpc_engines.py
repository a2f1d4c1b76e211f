"""Both gRPC transports (native libnghttp2 and grpcio) behave the same to real clients.

The rest of the scoring tests run on the default transport (native where it builds); this module runs the
gRPC surface on each one explicitly: inference, streaming, health, reflection, errors, compression,
deadlines and many concurrent calls on one connection.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from edgewise.proto import inference_pb2 as pb
from edgewise.proto import inference_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from examples.models import matmul_model
from tests.support import ServerProcess, require_native_grpc

LIMIT = 64 * 1024  # --max-message-bytes of the servers under test
MATMUL = "inference.GRPCInferenceService/ModelInfer"


def _build(repo: Path) -> None:
    matmul_model(repo / "matmul" / "1" / "model.onnx", features=4, outputs=2)


@pytest.fixture(scope="module", params=["native", "grpcio"])
def server(request: pytest.FixtureRequest, server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    engine = str(request.param)
    if engine == "native":
        require_native_grpc()
    started = server_factory(_build, "--grpc-engine", engine, "--max-message-bytes", str(LIMIT))
    assert f"(gRPC transport: {engine})" in started.log()
    return started


def _expected(server: ServerProcess, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(server.repo / "matmul" / "1" / "model.onnx"))
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def _request(x: np.ndarray, request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="matmul", id=request_id)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "x", "FP32"
    tensor.shape.extend(x.shape)
    request.raw_input_contents.append(x.astype(np.float32).tobytes())
    return request


def _decode(response: pb.ModelInferResponse) -> np.ndarray:
    shape = tuple(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(shape)


def test_tritonclient_infer(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = grpcclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("matmul", [inp], request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("y"), _expected(server, x), rtol=1e-6)
    assert result.get_response().id == "r-1"
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("matmul")


def test_stream_infer(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i in range(20):
            x = np.full((1, 4), float(i), dtype=np.float32)
            inp = grpcclient.InferInput("x", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            client.async_stream_infer("matmul", [inp], request_id=str(i))
        bad = grpcclient.InferInput("x", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        client.async_stream_infer("matmul", [bad], request_id="bad")
        got = [results.get(timeout=30) for _ in range(21)]
    finally:
        client.stop_stream()
    errors = [error for _, error in got if error is not None]
    assert len(errors) == 1 and "shape" in str(errors[0]).lower()
    ids = sorted(int(r.get_response().id) for r, e in got if e is None)  # type: ignore[attr-defined]
    assert ids == list(range(20))


def test_health_check_and_watch(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        assert stub.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status == serving
        with pytest.raises(grpc.RpcError) as missing:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == serving
        watch.cancel()


def test_reflection_lists_and_describes(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        asks = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(asks), timeout=30))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


def test_unknown_method_is_unimplemented(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/NoSuchCall")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_errors_keep_their_status(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=30)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in (unknown.value.details() or "")
        with pytest.raises(grpc.RpcError) as garbage:
            channel.unary_unary(f"/{MATMUL}")(b"\xff\xff\xff", timeout=30)
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_message_size_limits(server: ServerProcess) -> None:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(server.grpc_url, options=options) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        over = np.zeros((LIMIT // 16 + 64, 4), dtype=np.float32)  # just over the limit
        with pytest.raises(grpc.RpcError) as oversized:
            stub.ModelInfer(_request(over), timeout=30)
        assert oversized.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "exceeds the limit" in (oversized.value.details() or "")
        huge = np.zeros((LIMIT // 4, 4), dtype=np.float32)  # four times the limit: the transport refuses it
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(_request(huge), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        x = np.ones((3, 4), dtype=np.float32)  # the connection still serves
        np.testing.assert_allclose(_decode(stub.ModelInfer(_request(x), timeout=30)), _expected(server, x))


def test_compressed_requests(server: ServerProcess) -> None:
    for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        with grpc.insecure_channel(server.grpc_url, compression=compression) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            x = np.linspace(0, 1, 40, dtype=np.float32).reshape(10, 4)
            got = _decode(stub.ModelInfer(_request(x), timeout=30))
            np.testing.assert_allclose(got, _expected(server, x), rtol=1e-6)


def test_metadata_and_deadline_pass_through(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        x = np.ones((1, 4), dtype=np.float32)
        metadata = (("x-request-tag", "abc"), ("x-trace-bin", b"\x00\x01\xfe"))
        response, call = stub.ModelInfer.with_call(_request(x, "m-1"), metadata=metadata, timeout=0.5)
        assert response.id == "m-1"
        assert call.code() == grpc.StatusCode.OK


def test_many_concurrent_calls_on_one_connection(server: ServerProcess) -> None:
    async def run() -> list[pb.ModelInferResponse]:
        async with grpc.aio.insecure_channel(server.grpc_url) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            calls = [
                stub.ModelInfer(_request(np.full((1, 4), float(i), dtype=np.float32), str(i)), timeout=60)
                for i in range(300)
            ]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(run())
    for response in responses:
        i = int(response.id)
        x = np.full((1, 4), float(i), dtype=np.float32)
        np.testing.assert_allclose(_decode(response), _expected(server, x), rtol=1e-6)


def test_statistics_count_the_calls(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = client.get_inference_statistics("matmul").model_stats[0].inference_count
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    for _ in range(5):
        client.infer("matmul", [inp])
    after = client.get_inference_statistics("matmul").model_stats[0].inference_count
    assert after - before == 5
    with pytest.raises(InferenceServerException):
        client.get_inference_statistics("nope")


def test_metadata_over_16_kib_is_refused_and_the_connection_serves_on(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        x = np.ones((1, 4), dtype=np.float32)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(_request(x), metadata=(("x-huge", "h" * 20000),), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        np.testing.assert_allclose(_decode(stub.ModelInfer(_request(x), timeout=30)), _expected(server, x))


def test_a_stream_of_many_requests_sent_at_once_is_answered_in_full(server: ServerProcess) -> None:
    """More requests than one flow-control window holds: the server takes them as it answers them."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    count = 600
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        x = np.ones((LIMIT // 16 - 64, 4), dtype=np.float32)  # close to the limit: ~64 KiB per request
        for i in range(count):
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            client.async_stream_infer("matmul", [inp], request_id=str(i))
        got = [results.get(timeout=120) for _ in range(count)]
    finally:
        client.stop_stream()
    assert [error for _, error in got if error is not None] == []
    assert sorted(int(r.get_response().id) for r, _ in got) == list(range(count))  # type: ignore[attr-defined]

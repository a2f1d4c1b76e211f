"""Inference round trips: every datatype over gRPC (raw and typed contents) and REST (JSON and binary).

Also requested-output subsets, request ids and parameters, string models, a scikit-learn model checked
against onnxruntime in-process, and ModelStreamInfer.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.service_pb2 as service_pb2
import tritonclient.grpc.service_pb2_grpc as service_pb2_grpc
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.runtime.scoring.builders import (
    DATATYPES,
    NP_DTYPE,
    identity_model,
    label_model,
    sample,
    sklearn_classifier,
    two_output_model,
    upper_model,
)
from tests.support import ServerProcess

# Which typed field of InferTensorContents carries each datatype (FP16 has none: raw bytes only).
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def identity_name(datatype: str) -> str:
    return f"identity_{datatype.lower()}"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, np.ndarray]:
    path, rows = sklearn_classifier(tmp_path_factory.mktemp("sklearn") / "model.onnx")
    return path.read_bytes(), rows


@pytest.fixture(scope="module")
def server(
    server_factory: Callable[..., ServerProcess], classifier: tuple[bytes, np.ndarray]
) -> ServerProcess:
    def build(repo: Path) -> None:
        for datatype in DATATYPES:
            identity_model(repo / identity_name(datatype) / "1" / "model.onnx", datatype)
        two_output_model(repo / "two_outputs" / "1" / "model.onnx")
        upper_model(repo / "upper" / "1" / "model.onnx")
        label_model(repo / "labels" / "1" / "model.onnx")
        (repo / "classifier" / "1").mkdir(parents=True)
        (repo / "classifier" / "1" / "model.onnx").write_bytes(classifier[0])

    return server_factory(build)


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def http_client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Any:
    channel = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def json_safe(array: np.ndarray, datatype: str) -> np.ndarray:
    """JSON carries text, not arbitrary bytes: BYTES values come back from REST JSON as str."""
    if datatype != "BYTES":
        return array
    out = np.empty(array.shape, dtype=object)
    out.reshape(-1)[:] = [v.decode("utf-8") for v in array.reshape(-1)]
    return out


def assert_same(got: np.ndarray | None, want: np.ndarray, datatype: str) -> None:
    assert got is not None
    assert got.shape == want.shape
    if datatype != "BYTES":
        assert got.dtype == NP_DTYPE[datatype]
    np.testing.assert_array_equal(got, want)


# -- every datatype, four ways -----------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DATATYPES)
def test_round_trip_grpc_raw(datatype: str, grpc_client: grpcclient.InferenceServerClient) -> None:
    data = sample(datatype, rows=3)
    tensor = grpcclient.InferInput("x", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    result = grpc_client.infer(identity_name(datatype), [tensor])
    response = result.get_response()
    assert response.model_name == identity_name(datatype)
    assert response.model_version == "1"
    assert response.outputs[0].datatype == datatype
    assert len(response.raw_output_contents) == 1  # raw in, raw out
    assert_same(result.as_numpy("y"), data, datatype)


def typed_request(model: str, datatype: str, data: np.ndarray, **fields: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, **fields)
    tensor = request.inputs.add(name="x", datatype=datatype, shape=list(data.shape))
    getattr(tensor.contents, TYPED_FIELD[datatype]).extend(data.reshape(-1).tolist())
    return request


def typed_output(response: Any, index: int, datatype: str) -> np.ndarray:
    output = response.outputs[index]
    values = list(getattr(output.contents, TYPED_FIELD[datatype]))
    dtype = object if datatype == "BYTES" else NP_DTYPE[datatype]
    array = np.empty(len(values), dtype=object) if datatype == "BYTES" else np.array(values, dtype=dtype)
    if datatype == "BYTES":
        array[:] = values
    return array.reshape(list(output.shape))


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "FP16"])
def test_round_trip_grpc_typed_contents(datatype: str, stub: Any) -> None:
    data = sample(datatype, rows=2, seed=1)
    response = stub.ModelInfer(typed_request(identity_name(datatype), datatype, data))
    assert len(response.raw_output_contents) == 0  # typed in, typed out
    assert response.outputs[0].datatype == datatype
    assert_same(typed_output(response, 0, datatype), data, datatype)


def test_fp16_has_no_typed_contents(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_fp16")
    request.inputs.add(name="x", datatype="FP16", shape=[1, 3])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in info.value.details()


@pytest.mark.parametrize("datatype", DATATYPES)
def test_round_trip_rest_json(datatype: str, http_client: httpclient.InferenceServerClient) -> None:
    data = sample(datatype, rows=2, seed=2)
    tensor = httpclient.InferInput("x", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=False)
    output = httpclient.InferRequestedOutput("y", binary_data=False)
    result = http_client.infer(identity_name(datatype), [tensor], outputs=[output])
    response = result.get_response()
    assert response["model_name"] == identity_name(datatype)
    assert response["model_version"] == "1"
    assert "data" in response["outputs"][0]
    assert_same(result.as_numpy("y"), json_safe(data, datatype), datatype)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_round_trip_rest_binary(datatype: str, http_client: httpclient.InferenceServerClient) -> None:
    data = sample(datatype, rows=4, seed=3)
    tensor = httpclient.InferInput("x", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=True)
    output = httpclient.InferRequestedOutput("y", binary_data=True)
    result = http_client.infer(identity_name(datatype), [tensor], outputs=[output])
    assert "binary_data_size" in result.get_output("y")["parameters"]
    assert_same(result.as_numpy("y"), data, datatype)


def test_rest_json_request_by_hand(server: ServerProcess) -> None:
    """A request as a client without tritonclient writes it: plain JSON, nested data, no parameters."""
    body = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}]}
    with server.http() as client:
        reply = client.post("/v2/models/identity_int32/versions/1/infer", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    doc = reply.json()
    assert doc["model_name"] == "identity_int32"
    assert doc["outputs"] == [{"name": "y", "datatype": "INT32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]


def test_empty_batch(grpc_client: grpcclient.InferenceServerClient) -> None:
    data = np.zeros((0, 3), dtype=np.float32)
    tensor = grpcclient.InferInput("x", [0, 3], "FP32")
    tensor.set_data_from_numpy(data)
    result = grpc_client.infer("identity_fp32", [tensor])
    assert result.as_numpy("y").shape == (0, 3)


# -- outputs, ids, parameters ------------------------------------------------------------------------


def _two_output_input(client: Any, data: np.ndarray, **kwargs: Any) -> Any:
    tensor = client.InferInput("x", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, **kwargs)
    return tensor


def test_requested_outputs_subset_grpc(grpc_client: grpcclient.InferenceServerClient) -> None:
    data = np.array([[1.5, -2.0, 0.0, 3.0]], dtype=np.float32)
    tensor = _two_output_input(grpcclient, data)
    only_flag = grpc_client.infer("two_outputs", [tensor], outputs=[grpcclient.InferRequestedOutput("flag")])
    assert [o.name for o in only_flag.get_response().outputs] == ["flag"]
    np.testing.assert_array_equal(only_flag.as_numpy("flag"), data > 0)
    assert only_flag.as_numpy("doubled") is None

    every = grpc_client.infer("two_outputs", [tensor])
    assert sorted(o.name for o in every.get_response().outputs) == ["doubled", "flag"]
    np.testing.assert_array_equal(every.as_numpy("doubled"), data * 2)


def test_requested_outputs_subset_rest_mixed_encodings(http_client: httpclient.InferenceServerClient) -> None:
    data = np.array([[1.5, -2.0, 0.0, 3.0], [-1.0, 1.0, 2.0, -3.0]], dtype=np.float32)
    tensor = _two_output_input(httpclient, data, binary_data=True)
    result = http_client.infer(
        "two_outputs", [tensor], outputs=[httpclient.InferRequestedOutput("doubled", binary_data=False)]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["doubled"]
    np.testing.assert_array_equal(result.as_numpy("doubled"), data * 2)

    # One output as binary data and one as JSON in the same response.
    result = http_client.infer(
        "two_outputs",
        [tensor],
        outputs=[
            httpclient.InferRequestedOutput("doubled", binary_data=True),
            httpclient.InferRequestedOutput("flag", binary_data=False),
        ],
    )
    assert "binary_data_size" in result.get_output("doubled")["parameters"]
    assert "data" in result.get_output("flag")
    np.testing.assert_array_equal(result.as_numpy("doubled"), data * 2)
    np.testing.assert_array_equal(result.as_numpy("flag"), data > 0)


def test_request_id_and_parameters_grpc(grpc_client: grpcclient.InferenceServerClient) -> None:
    tensor = _two_output_input(grpcclient, np.ones((1, 4), dtype=np.float32))
    params = {"tag": "edge-7", "attempt": 3, "trace": True}
    result = grpc_client.infer("two_outputs", [tensor], request_id="req-42", parameters=params)
    response = result.get_response()
    assert response.id == "req-42"
    echoed = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()}
    assert echoed == params

    no_id = grpc_client.infer("two_outputs", [tensor])
    assert no_id.get_response().id == ""


def test_request_id_and_parameters_rest(http_client: httpclient.InferenceServerClient) -> None:
    tensor = _two_output_input(httpclient, np.ones((1, 4), dtype=np.float32), binary_data=False)
    params = {"tag": "edge-7", "attempt": 3}
    result = http_client.infer("two_outputs", [tensor], request_id="req-43", parameters=params)
    response = result.get_response()
    assert response["id"] == "req-43"
    # Transport parameters such as binary_data_output steer the encoding and are not echoed.
    assert response["parameters"] == params


# -- string and scikit-learn models ------------------------------------------------------------------


def test_string_model_grpc_and_rest(
    grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient
) -> None:
    text = np.array([b"edge", b"Mixed Case 42", b""], dtype=object)
    g_in = grpcclient.InferInput("text", [3], "BYTES")
    g_in.set_data_from_numpy(text)
    upper = grpc_client.infer("upper", [g_in]).as_numpy("upper")
    assert upper.tolist() == [b"EDGE", b"MIXED CASE 42", b""]

    h_in = httpclient.InferInput("text", [3], "BYTES")
    h_in.set_data_from_numpy(text, binary_data=False)
    upper = http_client.infer("upper", [h_in], outputs=[httpclient.InferRequestedOutput("upper", False)])
    assert upper.as_numpy("upper").tolist() == ["EDGE", "MIXED CASE 42", ""]


def test_label_encoder_model(grpc_client: grpcclient.InferenceServerClient, stub: Any) -> None:
    labels = np.array([b"dog", b"fish", b"cat", b"bird"], dtype=object)
    tensor = grpcclient.InferInput("label", [4], "BYTES")
    tensor.set_data_from_numpy(labels)
    assert grpc_client.infer("labels", [tensor]).as_numpy("id").tolist() == [1, -1, 0, 2]

    request = service_pb2.ModelInferRequest(model_name="labels")
    typed = request.inputs.add(name="label", datatype="BYTES", shape=[2])
    typed.contents.bytes_contents.extend([b"bird", b"cat"])
    response = stub.ModelInfer(request)
    assert list(response.outputs[0].contents.int64_contents) == [2, 0]


def test_sklearn_classifier_matches_onnxruntime(
    classifier: tuple[bytes, np.ndarray],
    grpc_client: grpcclient.InferenceServerClient,
    http_client: httpclient.InferenceServerClient,
) -> None:
    model, rows = classifier
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    want_label, want_proba = session.run(["label", "probabilities"], {"features": rows})

    g_in = grpcclient.InferInput("features", list(rows.shape), "FP32")
    g_in.set_data_from_numpy(rows)
    result = grpc_client.infer("classifier", [g_in])
    np.testing.assert_array_equal(result.as_numpy("label"), want_label)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), want_proba)

    h_in = httpclient.InferInput("features", list(rows.shape), "FP32")
    h_in.set_data_from_numpy(rows, binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
    result = http_client.infer("classifier", [h_in], outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("label"), want_label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), want_proba, rtol=1e-6)


# -- streaming ---------------------------------------------------------------------------------------


def test_model_stream_infer(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        sent = {}
        for i in range(5):
            data = sample("INT32", rows=i + 1, seed=i)
            tensor = grpcclient.InferInput("x", list(data.shape), "INT32")
            tensor.set_data_from_numpy(data)
            client.async_stream_infer("identity_int32", [tensor], request_id=f"s{i}")
            sent[f"s{i}"] = data
        # A bad request on the stream gets an error reply and does not end the stream.
        wrong = grpcclient.InferInput("nope", [1, 3], "INT32")
        wrong.set_data_from_numpy(np.zeros((1, 3), dtype=np.int32))
        client.async_stream_infer("identity_int32", [wrong], request_id="bad")
        last = grpcclient.InferInput("x", [1, 3], "FP64")
        last.set_data_from_numpy(sample("FP64", rows=1))
        client.async_stream_infer("identity_fp64", [last], request_id="after-error")

        got = [results.get(timeout=60) for _ in range(7)]
    finally:
        client.stop_stream()
        client.close()
    answers = [r for r, e in got if e is None]
    errors = [e for r, e in got if e is not None]
    assert [r.get_response().id for r in answers] == ["s0", "s1", "s2", "s3", "s4", "after-error"]
    for result in answers[:5]:
        np.testing.assert_array_equal(result.as_numpy("y"), sent[result.get_response().id])
    assert len(errors) == 1
    assert isinstance(errors[0], InferenceServerException)
    assert "nope" in errors[0].message()

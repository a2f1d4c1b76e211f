"""Fast tests of the pure pieces: repository config, version policies, datatypes, wire codecs, registry."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from edgewise.proto import inference_pb2 as pb
from edgewise.runtime.scoring.backends.base import Backend
from edgewise.runtime.scoring.cli import ArgumentsError, read_arguments
from edgewise.runtime.scoring.datatypes import (
    NUMPY_DTYPES,
    ONNX_TYPES,
    bytes_array,
    decode_bytes_tensor,
    encode_bytes_tensor,
    numpy_dtype,
    protocol_datatype,
)
from edgewise.runtime.scoring.errors import InvalidInputError, ModelLoadError
from edgewise.runtime.scoring.protocol.convert import request_from_proto, response_to_proto
from edgewise.runtime.scoring.protocol.rest_codec import decode_request, encode_response
from edgewise.runtime.scoring.registry import ModelRegistry, warmup_inputs
from edgewise.runtime.scoring.repository import (
    ModelConfig,
    VersionPolicy,
    model_dirs,
    read_config,
    versions_on_disk,
)
from edgewise.runtime.scoring.types import (
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    TensorSpec,
)

# -- repository config -------------------------------------------------------------------------------


def write(model_dir: Path, config: object) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return model_dir


def test_config_defaults_without_a_file(tmp_path: Path) -> None:
    config = read_config(tmp_path / "digits")
    assert config == ModelConfig(name="digits")
    assert config.max_batch_size == 0
    assert config.version_policy == VersionPolicy("latest", num_versions=1)
    assert config.warmup is True
    assert config.model_filename == "model.onnx"


def test_config_every_key(tmp_path: Path) -> None:
    model_dir = write(
        tmp_path / "digits",
        {
            "max_batch_size": 64,
            "dynamic_batching": {"max_queue_delay_microseconds": 150},
            "version_policy": {"specific": {"versions": [3, 1]}},
            "input": [{"name": "pixels", "onnx_name": "input"}, {"name": "mask"}],
            "output": [{"name": "scores", "onnx_name": "probabilities"}],
            "default_model_filename": "net.onnx",
            "warmup": False,
        },
    )
    config = read_config(model_dir)
    assert config.name == "digits"
    assert config.max_batch_size == 64
    assert config.max_queue_delay_us == 150
    assert config.version_policy == VersionPolicy("specific", versions=(3, 1))
    assert config.input_names == {"input": "pixels", "mask": "mask"}
    assert config.output_names == {"probabilities": "scores"}
    assert config.model_filename == "net.onnx"
    assert config.warmup is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{broken", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"max_batch_size": -1}, "max_batch_size"),
        ({"version_policy": {"newest": {}}}, "unknown version_policy"),
        ({"version_policy": {"all": {}, "latest": {}}}, "exactly one"),
        ({"version_policy": "all"}, "exactly one"),
        ({"input": [{"onnx_name": "x"}]}, "needs a name"),
    ],
)
def test_config_errors(tmp_path: Path, config: object, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        read_config(write(tmp_path / "bad", config))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, VersionPolicy()),
        ({"latest": {}}, VersionPolicy("latest", num_versions=1)),
        ({"latest": {"num_versions": 3}}, VersionPolicy("latest", num_versions=3)),
        ({"all": None}, VersionPolicy("all")),
        ({"specific": {"versions": ["2", 5]}}, VersionPolicy("specific", versions=(2, 5))),
    ],
)
def test_config_version_policies(tmp_path: Path, raw: object, expected: VersionPolicy) -> None:
    config = {} if raw is None else {"version_policy": raw}
    assert read_config(write(tmp_path / "m", config)).version_policy == expected


@pytest.mark.parametrize(
    ("policy", "available", "selected"),
    [
        (VersionPolicy(), [3, 1, 2], [3]),
        (VersionPolicy("latest", num_versions=2), [10, 9, 1], [9, 10]),
        (VersionPolicy("latest", num_versions=5), [2, 1], [1, 2]),
        (VersionPolicy("latest", num_versions=0), [1, 2], []),
        (VersionPolicy("all"), [3, 1, 2], [1, 2, 3]),
        (VersionPolicy("specific", versions=(1, 3, 7)), [1, 2, 3], [1, 3]),
        (VersionPolicy("specific", versions=()), [1, 2], []),
        (VersionPolicy(), [], []),
    ],
)
def test_version_policy_select(policy: VersionPolicy, available: list[int], selected: list[int]) -> None:
    assert policy.select(available) == selected


def test_versions_on_disk_and_model_dirs(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for relative in (
        "m/1/model.onnx",
        "m/10/model.onnx",
        "m/2/other.onnx",
        "m/v3/model.onnx",
        "m/.tmp-4/model.onnx",
        "n/1/net.onnx",
        ".hidden/1/model.onnx",
    ):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x" * len(relative))
    (root / "m" / "3").mkdir()  # a version folder without the model file
    (root / "README").write_text("not a model")

    assert [p.name for p in model_dirs(root)] == ["m", "n"]
    found = versions_on_disk(root / "m", ModelConfig(name="m"))
    assert [v.version for v in found] == [1, 10]
    assert found[0].path == root / "m" / "1" / "model.onnx"
    assert found[0].signature[1] == len("m/1/model.onnx")
    custom = versions_on_disk(root / "n", ModelConfig(name="n", model_filename="net.onnx"))
    assert [v.version for v in custom] == [1]


# -- datatypes ---------------------------------------------------------------------------------------


def test_datatype_tables_agree() -> None:
    assert set(ONNX_TYPES.values()) == set(NUMPY_DTYPES)
    for name, dtype in NUMPY_DTYPES.items():
        assert numpy_dtype(name) == dtype
        assert protocol_datatype(dtype) == name
    assert protocol_datatype(np.dtype("S3")) == "BYTES"
    assert protocol_datatype(np.dtype("U3")) == "BYTES"


def test_unknown_datatypes() -> None:
    with pytest.raises(InvalidInputError, match="FP8"):
        numpy_dtype("FP8")
    with pytest.raises(InvalidInputError):
        protocol_datatype(np.dtype(np.complex64))


@pytest.mark.parametrize(
    "items", [[], [b""], [b"a", b"", "wei\u00df", b"\x00\xff\x00"], [b"x" * 70_000, b"y"]]
)
def test_bytes_tensor_round_trip(items: list[object]) -> None:
    array = bytes_array(items, (len(items),))
    encoded = encode_bytes_tensor(array)
    assert len(encoded) == sum(4 + len(v) for v in array)
    decoded = decode_bytes_tensor(encoded, len(items), "t")
    assert decoded.dtype == object
    assert decoded.tolist() == [v.encode() if isinstance(v, str) else v for v in items]


def test_bytes_tensor_layout() -> None:
    encoded = encode_bytes_tensor(bytes_array(["ab", b"c"], (2,)))
    assert encoded == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"
    assert decode_bytes_tensor(memoryview(encoded), 2, "t").tolist() == [b"ab", b"c"]


@pytest.mark.parametrize(
    ("data", "count", "message"),
    [
        (b"\x02\x00", 1, "truncated length prefix"),
        (struct.pack("<I", 5) + b"abc", 1, "runs past the end"),
        (struct.pack("<I", 1) + b"a", 2, "got 1 BYTES elements"),
        (struct.pack("<I", 0) * 3, 2, "got 3 BYTES elements"),
    ],
)
def test_bytes_tensor_errors(data: bytes, count: int, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_bytes_tensor(data, count, "t")


def test_bytes_array_shapes_and_conversions() -> None:
    array = bytes_array(["a", b"b", np.bytes_(b"c"), 7], (2, 2))
    assert array.shape == (2, 2)
    assert array.ravel().tolist() == [b"a", b"b", b"c", b"7"]


# -- REST codec --------------------------------------------------------------------------------------


def test_rest_decode_json_request() -> None:
    body = orjson.dumps(
        {
            "id": 17,
            "parameters": {"binary_data_output": True, "tag": "x"},
            "inputs": [
                {"name": "a", "datatype": "INT16", "shape": [2, 2], "data": [[1, -2], [3, 4]]},
                {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["hi", "\u00e9"]},
                {"name": "b", "datatype": "BOOL", "shape": [3], "data": [True, False, True]},
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
        }
    )
    request = decode_request("m", "2", body, None)
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "17")
    assert request.parameters == {"binary_data_output": True, "tag": "x"}
    a, s, b = request.inputs
    assert a.data.dtype == np.int16 and a.data.tolist() == [[1, -2], [3, 4]] and a.shape == (2, 2)
    assert s.data.tolist() == [b"hi", "\u00e9".encode()]
    assert b.data.tolist() == [True, False, True]
    assert request.outputs == [RequestedOutput("y", {"binary_data": False}), RequestedOutput("z", {})]


def test_rest_decode_binary_request() -> None:
    floats = np.arange(6, dtype=np.float32)
    strings = encode_bytes_tensor(bytes_array([b"p", b"qr"], (2,)))
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "f", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(strings)},
                },
                {"name": "j", "datatype": "UINT8", "shape": [1], "data": [255]},
            ]
        }
    )
    request = decode_request("m", "", header + floats.tobytes() + strings, len(header))
    f, s, j = request.inputs
    np.testing.assert_array_equal(f.data, floats.reshape(2, 3))
    assert s.data.tolist() == [b"p", b"qr"]
    assert j.data.tolist() == [255]


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (b"{}", None, "'inputs' list"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32"}]}', None, "name, a datatype and a shape"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2]}]}', None, "no data"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}', None, "shape"),
        (b'{"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [-1]}]}', None, "UINT8"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": []}]}',
            None,
            "invalid shape",
        ),
        (b'{"inputs": []}', 99, "larger than"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], '
            b'"parameters": {"binary_data_size": 8}}]}',
            None,
            "runs past",
        ),
    ],
)
def test_rest_decode_errors(body: bytes, header_length: int | None, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_request("m", "", body, header_length)


def _response() -> InferResponse:
    outputs = [
        InferOutput("f", "FP32", (2,), np.array([0.5, -1.0], dtype=np.float32)),
        InferOutput("h", "FP16", (1,), np.array([1.5], dtype=np.float16)),
        InferOutput("s", "BYTES", (2,), bytes_array([b"ok", "\u00e9"], (2,))),
    ]
    return InferResponse("m", "3", outputs, id="r1", parameters={"tag": "x"})


def test_rest_encode_json_response() -> None:
    body, header_length = encode_response(_response(), InferRequest("m", []))
    assert header_length is None
    doc = orjson.loads(body)
    assert doc["model_name"] == "m" and doc["model_version"] == "3" and doc["id"] == "r1"
    assert doc["parameters"] == {"tag": "x"}
    assert [o["data"] for o in doc["outputs"]] == [[0.5, -1.0], [1.5], ["ok", "\u00e9"]]
    assert all("parameters" not in o for o in doc["outputs"])


def test_rest_encode_binary_outputs() -> None:
    request = InferRequest(
        "m",
        [],
        parameters={"binary_data_output": True},
        outputs=[RequestedOutput("s", {"binary_data": False})],
    )
    body, header_length = encode_response(_response(), request)
    assert header_length is not None
    doc = orjson.loads(body[:header_length])
    f, h, s = doc["outputs"]
    assert f["parameters"] == {"binary_data_size": 8} and "data" not in f
    assert h["parameters"] == {"binary_data_size": 2}
    assert s["data"] == ["ok", "\u00e9"]
    rest = body[header_length:]
    np.testing.assert_array_equal(np.frombuffer(rest[:8], dtype="<f4"), [0.5, -1.0])
    np.testing.assert_array_equal(np.frombuffer(rest[8:], dtype="<f2"), [1.5])


# -- gRPC conversion ---------------------------------------------------------------------------------


def test_proto_request_typed_and_raw() -> None:
    typed = pb.ModelInferRequest(model_name="m", model_version="1", id="t")
    tensor = typed.inputs.add(name="x", datatype="UINT16", shape=[1, 3])
    tensor.contents.uint_contents.extend([0, 1, 65535])
    typed.parameters["tag"].string_param = "x"
    request = request_from_proto(typed)
    assert (request.model_name, request.model_version, request.id) == ("m", "1", "t")
    assert request.parameters == {"tag": "x"}
    assert request.inputs[0].data.dtype == np.uint16
    assert request.inputs[0].data.tolist() == [[0, 1, 65535]]

    raw = pb.ModelInferRequest(model_name="m")
    raw.inputs.add(name="x", datatype="INT64", shape=[2])
    raw.raw_input_contents.append(np.array([-1, 2**62], dtype="<i8").tobytes())
    assert request_from_proto(raw).inputs[0].data.tolist() == [-1, 2**62]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.raw_input_contents.append(b"\x00" * 11), "11 bytes"),
        (lambda r: (r.raw_input_contents.append(b"\x00" * 12), r.raw_input_contents.append(b"")), "entries"),
        (lambda r: r.inputs[0].contents.fp32_contents.extend([1.0, 2.0]), "2 values"),
        (lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([-3]), "negative"),
        (
            lambda r: (
                r.inputs[0].contents.fp32_contents.extend([1, 2, 3]),
                r.raw_input_contents.append(b""),
            ),
            "both",
        ),
    ],
)
def test_proto_request_errors(mutate: Callable[[Any], object], message: str) -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[3])
    mutate(request)
    with pytest.raises(InvalidInputError, match=message):
        request_from_proto(request)


def test_proto_response_typed_raw_and_fp16() -> None:
    response = InferResponse(
        "m",
        "1",
        [
            InferOutput("b", "BOOL", (2,), np.array([True, False])),
            InferOutput("s", "BYTES", (1,), bytes_array([b"z"], (1,))),
        ],
        id="q",
        parameters={"n": 2**64 - 1},
    )
    typed = response_to_proto(response, raw=False)
    assert not typed.raw_output_contents
    assert list(typed.outputs[0].contents.bool_contents) == [True, False]
    assert list(typed.outputs[1].contents.bytes_contents) == [b"z"]
    assert typed.parameters["n"].uint64_param == 2**64 - 1
    raw = response_to_proto(response, raw=True)
    assert list(raw.raw_output_contents) == [b"\x01\x00", struct.pack("<I", 1) + b"z"]

    half = InferResponse("m", "1", [InferOutput("h", "FP16", (1,), np.array([2.0], dtype=np.float16))])
    assert response_to_proto(half, raw=False).raw_output_contents == [np.float16(2.0).tobytes()]


# -- registry ----------------------------------------------------------------------------------------


class FakeBackend(Backend):
    def __init__(self, specs: tuple[TensorSpec, ...]) -> None:
        self.specs = specs
        self.calls = 0

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.specs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.specs

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self.calls += 1
        return inputs


def test_warmup_inputs_use_one_for_dynamic_dimensions() -> None:
    feed = warmup_inputs((TensorSpec("a", "FP16", (-1, 3)), TensorSpec("s", "BYTES", (2, -1))))
    assert feed["a"].shape == (1, 3) and feed["a"].dtype == np.float16
    assert feed["s"].shape == (2, 1) and feed["s"].ravel().tolist() == [b"", b""]


def test_registry_readiness_with_a_failed_model(tmp_path: Path) -> None:
    """Strict readiness must see a model that failed to load, though it never reached `_serving`."""
    for name in ("good", "bad"):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.onnx").write_bytes(b"")

    def loader(path: Path, config: ModelConfig) -> Backend:
        if config.name == "bad":
            raise ModelLoadError("cannot load: broken on purpose")
        return FakeBackend((TensorSpec("x", "FP32", (-1, 2)),))

    registry = ModelRegistry(tmp_path, loader=loader)
    asyncio.run(registry.poll())
    assert registry.is_ready("good")
    assert not registry.is_ready("bad")
    assert not registry.all_ready()
    [bad] = [e for e in registry.index() if e.name == "bad"]
    assert (bad.state, bad.reason) == ("UNAVAILABLE", "cannot load: broken on purpose")

    # Removing the broken model makes every remaining model ready.
    for path in sorted((tmp_path / "bad").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "bad").rmdir()
    asyncio.run(registry.poll())
    assert registry.all_ready()
    assert registry.names() == ["good"]


def test_a_small_model_of_the_first_scan_loads_on_the_event_loop(tmp_path: Path) -> None:
    """A worker thread costs a new server more than loading a small model; big ones and later loads use one."""
    import threading

    from edgewise.runtime.scoring.registry import INLINE_LOAD_MAX_BYTES

    (tmp_path / "small" / "1").mkdir(parents=True)
    (tmp_path / "small" / "1" / "model.onnx").write_bytes(b"x" * 100)
    (tmp_path / "big" / "1").mkdir(parents=True)
    (tmp_path / "big" / "1" / "model.onnx").write_bytes(b"x" * 100)
    (tmp_path / "big" / "1" / "weights.bin").write_bytes(b"x" * INLINE_LOAD_MAX_BYTES)  # external data counts
    threads: dict[str, bool] = {}

    def loader(path: Path, config: ModelConfig) -> Backend:
        threads[f"{config.name}/{path.parent.name}"] = threading.current_thread() is threading.main_thread()
        return FakeBackend((TensorSpec("x", "FP32", (-1, 2)),))

    registry = ModelRegistry(tmp_path, loader=loader)
    asyncio.run(registry.poll())
    assert threads == {"small/1": True, "big/1": False}
    (tmp_path / "small" / "2").mkdir()
    (tmp_path / "small" / "2" / "model.onnx").write_bytes(b"x" * 100)
    asyncio.run(registry.poll())
    assert threads["small/2"] is False  # a later load: the server may be serving


def test_the_runtime_warm_up_model_is_what_onnx_serializes_and_leaves_no_thread() -> None:
    """The launcher warms onnxruntime with these bytes before it forks; a thread left behind would not survive
    the fork, so none may be started."""
    import os

    from edgewise.runtime.scoring.backends.onnx import WARM_UP_MODEL, warm_up_runtime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7, producer_name="")
    assert model.SerializeToString() == WARM_UP_MODEL
    threads = set(os.listdir("/proc/self/task"))
    warm_up_runtime()
    assert set(os.listdir("/proc/self/task")) <= threads


def test_read_arguments_gives_the_settings_the_command_line_asks_for(tmp_path: Path) -> None:
    args = ["--model-repository", str(tmp_path), "--grpc-port", "9001", "--metrics", "--log-level", "debug"]
    doc = read_arguments(args)
    assert json.loads(json.dumps(doc)) == doc  # handed to a forked server as JSON
    assert doc["model_repository"] == str(tmp_path) and doc["grpc_port"] == 9001 and doc["metrics"] is True
    assert doc["admin_socket_dir"] is None and doc["log_level"] == "debug"
    assert read_arguments(["--model-repository", "/not/here"])["model_repository"] == "/not/here"  # unchecked


@pytest.mark.parametrize(
    "args",
    [["--grpc-port", "9001"], ["--model-repository", "/m", "--grpc-port", "many"], ["--model-repository", "/m", "-h"]],
)
def test_read_arguments_raises_instead_of_exiting(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ArgumentsError):
        read_arguments(args)
    assert capsys.readouterr() == ("", "")  # nothing printed: the caller (an agent) goes on

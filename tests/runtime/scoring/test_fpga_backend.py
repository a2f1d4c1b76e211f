"""The FPGA backend: fpga.json, input transform and quantize → virtual FPGA → dequantize → head, and
`fpga_cycles` in responses.

The designs are real Amaranth designs through real Yosys CXXRTL and g++: a small stream design
(tests/fpga/stream_design.py) whose arithmetic is easy to follow, and the Accelerator of an integer MLP. The
server is a real `edgewise-score` on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from edgewise.fpga.compiler import CompileOptions, _write_descriptor
from edgewise.fpga.cxxrtl import CxxrtlSource, write_cxxrtl
from edgewise.fpga.hdl import Accelerator
from edgewise.fpga.ir import HeadOutput, IntegerModel
from edgewise.runtime.scoring.backends.fpga import FpgaBackend, VirtualFpga, read_descriptor
from edgewise.runtime.scoring.backends.fpga.virtual import CACHE_ENV
from edgewise.runtime.scoring.errors import InvalidInputError, ModelLoadError
from prometheus_client.parser import text_string_to_metric_families

from tests.fpga.hw_models import random_integer_model
from tests.fpga.stream_design import WeightedSums, cycles_per_vector, weighted_sums
from tests.runtime.scoring import fpga_versions
from tests.runtime.scoring.builders import add_model
from tests.support import ServerProcess

N_IN, N_OUT = 5, 3
INPUT_SCALE, OUTPUT_SCALE = 0.05, 0.0005
CLASSES = ["low", "middle", "high"]
HEADS: list[dict[str, Any]] = [
    {"name": "label", "op": "argmax", "datatype": "BYTES", "labels": CLASSES},
    {"name": "class_id", "op": "argmax", "datatype": "INT64", "labels": [10, 20, 30]},
    {"name": "probabilities", "op": "softmax", "datatype": "FP32", "labels": []},
    {"name": "odds", "op": "sigmoid", "datatype": "FP32", "labels": []},
    {"name": "values", "op": "identity", "datatype": "FP32", "labels": []},
]
CYCLES = cycles_per_vector(N_IN, N_OUT)
# An input transform (x - offset) * gain with a negative and a zero gain.
OFFSET = [0.5, -1.0, 2.0, 0.0, 0.25]
GAIN = [2.0, 0.5, -1.5, 3.0, 0.0]


def fields(**changes: Any) -> dict[str, Any]:
    doc = fpga_versions.descriptor(
        in_features=N_IN, out_features=N_OUT, input_scale=INPUT_SCALE, output_scale=OUTPUT_SCALE, outputs=HEADS
    )
    doc.update(changes)
    return doc


def input_fields(**changes: Any) -> dict[str, Any]:
    """The descriptor's `input`, changed."""
    return {"name": "input", "datatype": "FP32", "shape": [-1, N_IN], "scale": INPUT_SCALE, **changes}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One compile cache for this module and the servers it starts (they inherit the environment)."""
    folder = tmp_path_factory.mktemp("virtual-fpga-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def design(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> CxxrtlSource:
    source = write_cxxrtl(
        WeightedSums(N_IN, N_OUT), toolchain=fpga_versions.toolchain(), out_dir=tmp_path_factory.mktemp("design")
    )
    VirtualFpga.build(source.source, source.include_dir, in_features=N_IN, out_features=N_OUT)  # warm the cache
    return source


def features(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, N_IN)) * 3).astype(np.float32)
    x[0, 0], x[0, 1] = 100.0, -100.0  # beyond the int8 range: clamped
    x[0, 2] = 0.025  # exactly half a step: rounds to even
    return x


def expected(
    x: np.ndarray, offset: list[float] | None = None, gain: list[float] | None = None
) -> dict[str, np.ndarray]:
    """The served outputs, computed here from the design's arithmetic alone (and the input transform, if any)."""
    transformed = x.astype(np.float64)
    if offset is not None:
        transformed = transformed - np.array(offset)
    if gain is not None:
        transformed = transformed * np.array(gain)
    q = np.clip(np.rint(transformed / INPUT_SCALE), -128, 127).astype(np.int8)
    raw = np.stack([weighted_sums(row, N_OUT) for row in q])
    real = raw.astype(np.float64) * OUTPUT_SCALE
    winner = raw.argmax(axis=1)
    exp = np.exp(real - real.max(axis=1, keepdims=True))
    return {
        "label": np.array([CLASSES[i].encode() for i in winner], dtype=object),
        "class_id": np.array([10, 20, 30], dtype=np.int64)[winner],
        "probabilities": (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32),
        "odds": (1 / (1 + np.exp(-real))).astype(np.float32),
        "values": real.astype(np.float32),
    }


def assert_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, array in want.items():
        if array.dtype == np.float32:
            np.testing.assert_allclose(got[name], array, rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], array, err_msg=name)
        assert got[name].dtype == array.dtype, name


# -- the descriptor ----------------------------------------------------------------------------------------------


def test_the_documented_descriptor_is_read(design: CxxrtlSource, tmp_path: Path) -> None:
    """The example of docs/fpga.md, as written there."""
    doc = (Path(__file__).parents[3] / "docs" / "fpga.md").read_text()
    example = json.loads(doc.split("```json", 1)[1].split("```", 1)[0])
    path = fpga_versions.write_version(tmp_path / "1", design, example)
    found = read_descriptor(path)
    assert (found.input_name, found.input_datatype, found.input_shape) == ("input", "FP32", (-1, 16))
    assert (found.input_scale, found.output_scale) == (0.0123, 0.00045)
    assert (found.in_features, found.out_features, found.parallelism, found.clock_hz) == (16, 5, 8, 48_000_000)
    assert [(h.name, h.op, h.datatype, h.labels) for h in found.outputs] == [
        ("label", "argmax", "INT64", (0, 1, 2, 3, 4)),
        ("probabilities", "softmax", "FP32", ()),
    ]
    assert found.design_source == (tmp_path / "1" / "design" / "design.cc").resolve()
    assert found.design_include == (tmp_path / "1" / "design" / "include").resolve()
    assert (found.top, found.device) == ("top", "up5k")
    assert found.bitstream == (tmp_path / "1" / "bitstream.bin").resolve()
    assert found.input_offset is not None and found.input_gain is not None
    assert found.input_offset.dtype == found.input_gain.dtype == np.float64
    assert found.input_offset.tolist() == example["input"]["offset"]
    assert found.input_gain.tolist() == example["input"]["gain"]


def _without(key: str) -> dict[str, Any]:
    doc = fields()
    del doc[key]
    return doc


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (fields(format="edgewise.fpga/2"), "format"),
        (_without("output_scale"), "output_scale"),
        (fields(in_features=True), "in_features"),
        (fields(out_features=0), "out_features"),
        (fields(input={"name": "input", "datatype": "INT8", "shape": [-1, N_IN], "scale": 0.1}), "input.datatype"),
        (fields(input={"name": "input", "datatype": "FP32", "shape": [-1, N_IN + 1], "scale": 0.1}), "input.shape"),
        (fields(input={"name": "input", "datatype": "FP32", "shape": [-1, N_IN], "scale": -1}), "input.scale"),
        (fields(input=input_fields(offset=[0.0] * (N_IN - 1))), "input.offset"),
        (fields(input=input_fields(offset="0.5")), "input.offset"),
        (fields(input=input_fields(offset=[0.0] * (N_IN - 1) + [float("inf")])), "input.offset"),
        (fields(input=input_fields(gain=[1.0] * (N_IN - 1) + [float("nan")])), "input.gain"),
        (fields(input=input_fields(gain=[1.0] * (N_IN - 1) + [True])), "input.gain"),
        (fields(input=input_fields(gain=[[1.0] * N_IN])), "input.gain"),
        (fields(outputs=[]), "outputs"),
        (fields(outputs=[{"name": "y", "op": "tanh", "datatype": "FP32"}]), "outputs[0].op"),
        (fields(outputs=[{"name": "y", "op": "argmax", "datatype": "INT64", "labels": [1, 2]}]), "outputs[0].labels"),
        (
            fields(outputs=[{"name": "y", "op": "argmax", "datatype": "BYTES", "labels": [1, 2, 3]}]),
            "outputs[0].labels",
        ),
        (fields(outputs=[{"name": "y", "op": "softmax", "datatype": "INT64"}]), "outputs[0].datatype"),
        (fields(outputs=[{"name": "y", "op": "identity", "datatype": "FP32"}] * 2), "outputs"),
        (fields(design={"cxxrtl": "design/missing.cc", "include": "design/include", "top": "top"}), "design.cxxrtl"),
        (fields(design={"cxxrtl": "../design.cc", "include": "design/include", "top": "top"}), "design.cxxrtl"),
        (fields(design={"cxxrtl": "design/design.cc", "include": "design", "top": "top"}), "design.include"),
        (fields(parallelism=0), "parallelism"),
        (fields(clock_hz="48MHz"), "clock_hz"),
    ],
)
def test_descriptor_errors_name_the_file_and_the_field(
    design: CxxrtlSource, tmp_path: Path, doc: dict[str, Any], field: str
) -> None:
    path = fpga_versions.write_version(tmp_path / "1", design, doc)
    with pytest.raises(ModelLoadError) as caught:
        read_descriptor(path)
    assert str(path) in str(caught.value)
    assert f"field {field!r}" in str(caught.value)


# -- the backend in this process -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(design: CxxrtlSource, tmp_path_factory: pytest.TempPathFactory) -> FpgaBackend:
    path = fpga_versions.write_version(tmp_path_factory.mktemp("version"), design, fields())
    descriptor = read_descriptor(path)
    fpga = VirtualFpga.build(descriptor.design_source, descriptor.design_include, in_features=N_IN, out_features=N_OUT)
    return FpgaBackend(descriptor, driver=fpga)


def test_backend_quantizes_runs_the_design_and_applies_the_head(backend: FpgaBackend) -> None:
    assert backend.descriptor.input_offset is None and backend.descriptor.input_gain is None
    assert [(s.name, s.datatype, s.shape) for s in backend.inputs] == [("input", "FP32", (-1, N_IN))]
    assert [(s.name, s.datatype, s.shape) for s in backend.outputs] == [
        ("label", "BYTES", (-1,)),
        ("class_id", "INT64", (-1,)),
        ("probabilities", "FP32", (-1, N_OUT)),
        ("odds", "FP32", (-1, N_OUT)),
        ("values", "FP32", (-1, N_OUT)),
    ]
    x = features(7)
    outputs, parameters = backend.predict_with_parameters({"input": x}, [])
    assert_outputs(outputs, expected(x))
    assert parameters == {"fpga_cycles": 7 * CYCLES}


def test_backend_computes_only_the_outputs_asked_for(backend: FpgaBackend) -> None:
    x = features(2, seed=1)
    outputs = backend.predict({"input": x}, ["odds"])
    assert list(outputs) == ["odds"]
    np.testing.assert_allclose(outputs["odds"], expected(x)["odds"], rtol=1e-6)


def test_backend_refuses_nan(backend: FpgaBackend) -> None:
    x = features(1)
    x[0, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        backend.predict({"input": x}, [])


@pytest.fixture(scope="module")
def scaled_backend(design: CxxrtlSource, tmp_path_factory: pytest.TempPathFactory) -> FpgaBackend:
    """The same design behind a descriptor with an input transform."""
    doc = fields(input=input_fields(offset=OFFSET, gain=GAIN))
    path = fpga_versions.write_version(tmp_path_factory.mktemp("scaled"), design, doc)
    descriptor = read_descriptor(path)
    fpga = VirtualFpga.build(descriptor.design_source, descriptor.design_include, in_features=N_IN, out_features=N_OUT)
    return FpgaBackend(descriptor, driver=fpga)


def test_backend_applies_the_input_transform_as_it_quantizes(scaled_backend: FpgaBackend) -> None:
    x = features(7, seed=5)
    outputs, parameters = scaled_backend.predict_with_parameters({"input": x}, [])
    assert_outputs(outputs, expected(x, OFFSET, GAIN))
    assert parameters == {"fpga_cycles": 7 * CYCLES}
    assert not np.array_equal(outputs["values"], expected(x)["values"])  # the transform changes what is served


def test_an_infinite_input_of_a_feature_scaled_by_zero_is_refused(scaled_backend: FpgaBackend) -> None:
    x = features(1)
    x[0, 3] = np.inf  # gain 3: clamped to 127
    scaled_backend.predict({"input": x}, [])
    x[0, 4] = -np.inf  # gain 0: inf * 0 has no value
    with pytest.raises(InvalidInputError, match="scales by 0"):
        scaled_backend.predict({"input": x}, [])


# -- served by edgewise-score --------------------------------------------------------------------------------------


MLP_CLASSES = ("setosa", "versicolor", "virginica", "other", "none")


@pytest.fixture(scope="module")
def mlp() -> IntegerModel:
    """An integer MLP 16-32-32-5 with random weights and an input transform (a leading scaler), served with a
    classifier's head."""
    model = random_integer_model((16, 32, 32, 5), seed=7)
    head = (HeadOutput("label", "argmax", "BYTES", MLP_CLASSES), HeadOutput("probabilities", "softmax"))
    rng = np.random.default_rng(9)
    return dataclasses.replace(
        model,
        input_scale=0.02,
        output_scale=2e-4,
        head=head,
        input_offset=rng.normal(0.0, 0.5, 16),
        input_gain=rng.uniform(0.25, 1.0, 16),
    )


def write_mlp_version(version_dir: Path, model: IntegerModel) -> None:
    """The version folder as the FPGA compiler lays it out: the Accelerator's CXXRTL and the compiler's
    fpga.json."""
    write_cxxrtl(Accelerator(model, parallelism=8), toolchain=fpga_versions.toolchain(), out_dir=version_dir / "design")
    _write_descriptor(version_dir, model, CompileOptions(model_name="mlp", parallelism=8), model.input_name)


@pytest.fixture(scope="module")
def server(design: CxxrtlSource, mlp: IntegerModel, server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    def build(repo: Path) -> None:
        fpga_versions.write_config(repo / "mlp")
        write_mlp_version(repo / "mlp" / "1", mlp)  # compiled by the server as it loads
        fpga_versions.write_config(repo / "sums")
        fpga_versions.write_version(repo / "sums" / "1", design, fields())
        fpga_versions.write_version(repo / "found" / "1", design, fields())  # no config.json: found by fpga.json
        fpga_versions.write_config(repo / "batched", max_batch_size=8)
        fpga_versions.write_version(repo / "batched" / "1", design, fields())
        fpga_versions.write_config(repo / "broken")
        fpga_versions.write_version(repo / "broken" / "1", design, fields(output_scale=0))
        add_model(repo / "adder" / "1" / "model.onnx", offset=1.0)

    return server_factory(build, "--metrics")


def cycle_metrics(server: ServerProcess) -> dict[tuple[str, str], float]:
    """(sample name, model) -> value of the edgewise_fpga_cycles samples of version 1 (all buckets summed)."""
    with server.http() as client:
        text = client.get("/metrics").text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("edgewise_fpga_cycles") and sample.labels.get("version") == "1":
                key = (sample.name, sample.labels["model"])
                found[key] = found.get(key, 0.0) + sample.value
    return found


def _grpc_infer(server: ServerProcess, model: str, x: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor])
    outputs = {h["name"]: result.as_numpy(h["name"]) for h in HEADS}
    return outputs, result.get_response().parameters


def test_grpc_serves_the_design_with_its_cycles(server: ServerProcess) -> None:
    x = features(4, seed=2)
    outputs, parameters = _grpc_infer(server, "sums", x)
    assert_outputs(outputs, expected(x))
    assert parameters["fpga_cycles"].WhichOneof("parameter_choice") == "int64_param"
    assert parameters["fpga_cycles"].int64_param == 4 * CYCLES


def test_rest_serves_the_design_with_its_cycles(server: ServerProcess) -> None:
    x = features(3, seed=3)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, N_IN], "data": x.ravel().tolist()}]}
    with server.http() as client:
        reply = client.post("/v2/models/sums/infer", content=json.dumps(body))
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["parameters"] == {"fpga_cycles": 3 * CYCLES}
    got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}
    want = expected(x)
    assert got["label"].tolist() == [v.decode() for v in want["label"]]
    np.testing.assert_array_equal(got["class_id"], want["class_id"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
    # tritonclient's REST client sees the same parameters
    http = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("input", [3, N_IN], "FP32")
    tensor.set_data_from_numpy(x)
    assert http.infer("sums", [tensor]).get_response()["parameters"] == {"fpga_cycles": 3 * CYCLES}


def test_a_version_folder_with_fpga_json_is_served_without_a_config(server: ServerProcess) -> None:
    x = features(1, seed=4)
    outputs, parameters = _grpc_infer(server, "found", x)
    assert_outputs(outputs, expected(x))
    assert parameters["fpga_cycles"].int64_param == CYCLES
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.get_model_metadata("found").platform == "edgewise_fpga"


def test_metrics_count_the_cycles_of_fpga_models_only(server: ServerProcess) -> None:
    before = cycle_metrics(server)
    for rows in (1, 2, 5):
        _grpc_infer(server, "sums", features(rows, seed=rows))
    after = cycle_metrics(server)

    def delta(name: str) -> float:
        return after.get((name, "sums"), 0.0) - before.get((name, "sums"), 0.0)

    assert delta("edgewise_fpga_cycles_count") == 3
    assert delta("edgewise_fpga_cycles_sum") == 8 * CYCLES
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    assert not client.infer("adder", [tensor]).get_response().parameters
    assert not [key for key in cycle_metrics(server) if key[1] == "adder"]


def test_models_that_cannot_be_served_say_why(server: ServerProcess) -> None:
    with server.http() as client:
        index = {e["name"]: e for e in client.post("/v2/repository/index").json()}
    assert index["batched"]["state"] == "UNAVAILABLE"
    assert "set max_batch_size to 0" in index["batched"]["reason"]
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "field 'output_scale'" in index["broken"]["reason"]
    assert "fpga.json" in index["broken"]["reason"]


def test_the_accelerator_is_served_exactly_as_its_integer_model(server: ServerProcess, mlp: IntegerModel) -> None:
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((6, 16)) * 1.5).astype(np.float32)
    x[0, :2] = 10.0, -10.0  # clamped
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("input", [6, 16], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("mlp", [tensor])
    raw = mlp.forward(mlp.quantize_input(x))  # with the input transform, which fpga.json carries
    real = raw.astype(np.float64) * mlp.output_scale
    exp = np.exp(real - real.max(axis=1, keepdims=True))
    assert result.as_numpy("label").tolist() == [MLP_CLASSES[i].encode() for i in raw.argmax(axis=1)]
    np.testing.assert_allclose(result.as_numpy("probabilities"), exp / exp.sum(axis=1, keepdims=True), rtol=1e-6)
    # The cycles are those of the same design on this process's virtual FPGA (the server compiled it into the
    # shared cache, so this finds it there).
    version = server.repo / "mlp" / "1" / "design"
    fpga = VirtualFpga.build(version / "design.cc", version / "include", in_features=16, out_features=5)
    cycles = sum(fpga.run(row)[1] for row in mlp.quantize_input(x))
    assert result.get_response().parameters["fpga_cycles"].int64_param == cycles

"""scikit-learn preprocessing in the ONNX frontend: a per-feature scale and offset (skl2onnx's Scaler, or Add/Sub/
Mul/Div by constants) of the model input becomes the input transform, applied on the host as the input is
quantized; between layers it is folded into a dense layer. Checked against ONNX Runtime and scikit-learn; the
maps that cannot be folded fail naming their node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgewise.fpga.accuracy import evaluate
from edgewise.fpga.errors import UnsupportedModelError
from edgewise.fpga.frontend import read_onnx
from edgewise.fpga.quantize import quantize
from onnx import TensorProto, helper, numpy_helper

from tests.fpga import models
from tests.fpga.test_frontend import assert_matches_onnxruntime, random_inputs

TARGET_POINTS_LOST = 1.0


def _ops(model: bytes) -> list[str]:
    return [node.op_type for node in onnx.load_from_string(model).graph.node]


def _attributes(model: bytes, op: str) -> dict[str, object]:
    node = next(node for node in onnx.load_from_string(model).graph.node if node.op_type == op)
    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


# -- scikit-learn pipelines -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [None, 17], ids=["to_onnx_with_a_sample", "as_train_py_exports"])
def test_standard_scaler_logistic_regression_is_an_input_transform_and_one_layer(opset: int | None) -> None:
    model, split = models.scaled_logistic_onnx(opset=opset)
    assert _ops(model) == ["Scaler", "LinearClassifier", "Normalizer"]
    float_model = assert_matches_onnxruntime(model, split.test.x)
    assert [(*layer.shape, layer.relu) for layer in float_model.layers] == [(10, 64, False)]
    assert float_model.input_offset is not None and float_model.input_gain is not None
    assert [(out.op, out.datatype, out.labels) for out in float_model.head] == [
        ("argmax", "INT64", tuple(range(10))),
        ("softmax", "FP32", ()),
    ]


def test_a_leading_scaler_is_the_input_transform_and_the_layer_is_the_classifier() -> None:
    """The Scaler's offset and scale become the input transform; the layer keeps the classifier's own weights."""
    model, _ = models.scaled_logistic_onnx()
    scaler, classifier = _attributes(model, "Scaler"), _attributes(model, "LinearClassifier")
    float_model = read_onnx(model)
    assert float_model.input_gain is not None and float_model.input_offset is not None
    np.testing.assert_array_equal(float_model.input_gain, np.asarray(scaler["scale"], np.float32))
    np.testing.assert_allclose(float_model.input_offset, np.asarray(scaler["offset"], np.float32), rtol=1e-12)
    layer = float_model.layers[0]
    np.testing.assert_array_equal(layer.weights, np.asarray(classifier["coefficients"], np.float32).reshape(10, 64))
    np.testing.assert_array_equal(layer.bias, np.asarray(classifier["intercepts"], np.float32))


@pytest.mark.parametrize(
    ("scaler", "exported_as"),
    [("standard", ["Scaler"]), ("maxabs", ["Scaler"]), ("robust", ["Scaler"]), ("minmax", ["Cast", "Mul", "Add"])],
)
def test_every_scaler_before_a_logistic_regression(scaler: str, exported_as: list[str]) -> None:
    """The input transform is the scikit-learn scaler itself; the layer is the classifier's, unscaled."""
    model, split = models.scaled_classifier_onnx(scaler)
    assert _ops(model)[: len(exported_as)] == exported_as
    float_model = assert_matches_onnxruntime(model, split.test.x)
    assert len(float_model.layers) == 1
    pipeline, _ = models.scaled_pipeline(scaler)
    transform, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
    x = split.test.x
    np.testing.assert_allclose(float_model.transform_input(x), transform.transform(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float_model.layers[0].weights, classifier.coef_, rtol=1e-6)


@pytest.mark.parametrize("scaler", ["standard", "minmax"])
def test_scaled_mlp_classifier(scaler: str) -> None:
    model, split = models.scaled_classifier_onnx(scaler, "mlp")
    float_model = assert_matches_onnxruntime(model, split.test.x)
    assert [(*layer.shape, layer.relu) for layer in float_model.layers] == [(32, 64, True), (10, 32, False)]
    mlp = models.scaled_pipeline(scaler, "mlp")[0].steps[1][1]
    np.testing.assert_allclose(float_model.layers[0].weights, mlp.coefs_[0].T, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_quantized_scaled_logistic_regression_loses_at_most_one_point(c: float, seed: int) -> None:
    """StandardScaler gives a near-constant pixel a factor of hundreds; on the host, as the input transform, it
    costs the integer model nothing it would lose in the first layer's int8 weights."""
    model, split = models.scaled_logistic_onnx(c=c, seed=seed)
    float_model = read_onnx(model)
    report = evaluate(float_model, quantize(float_model, split.train.x), split.test)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {session.get_inputs()[0].name: split.test.x})[0]
    assert report.float_accuracy == pytest.approx(float(np.mean(labels == split.test.y)))
    assert report.float_accuracy is not None and report.float_accuracy > 0.94
    assert report.points_lost is not None and report.points_lost <= TARGET_POINTS_LOST


@pytest.mark.parametrize(
    ("scaler", "seed"), [("standard", 0), ("standard", 1), ("standard", 2), ("minmax", 0), ("maxabs", 0), ("robust", 0)]
)
def test_quantized_scaled_mlp_loses_at_most_one_point(scaler: str, seed: int) -> None:
    model, split = models.scaled_classifier_onnx(scaler, "mlp", seed=seed)
    float_model = read_onnx(model)
    report = evaluate(float_model, quantize(float_model, split.train.x), split.test)
    assert report.float_accuracy is not None and report.float_accuracy > 0.9
    assert report.points_lost is not None and report.points_lost <= TARGET_POINTS_LOST


# -- graphs built with onnx.helper --------------------------------------------------------------------------------

RNG = np.random.default_rng(5)
W64 = RNG.normal(size=(6, 4)).astype(np.float32)  # Gemm transB=1: (out, in)
W36 = RNG.normal(size=(3, 6)).astype(np.float32)
B6 = RNG.normal(size=6).astype(np.float32)
B3 = RNG.normal(size=3).astype(np.float32)
POSITIVE6 = RNG.uniform(0.5, 2.0, size=6).astype(np.float32)
SHIFT6 = RNG.normal(size=6).astype(np.float32)
SCALE4 = RNG.uniform(0.5, 2.0, size=4).astype(np.float32)
SHIFT4 = RNG.normal(size=4).astype(np.float32)
INITIALIZERS: dict[str, np.ndarray] = {
    "w0": W64, "w1": W36, "w1t": W36.T.copy(), "b0": B6, "b1": B3, "s6": POSITIVE6, "c6": SHIFT6, "s4": SCALE4,
    "c4": SHIFT4, "neg6": -POSITIVE6, "two": np.array(2.0, np.float32), "zero": np.array(0.0, np.float32),
    "s4z": np.where(np.arange(4) == 1, 0.0, SCALE4).astype(np.float32), "rows": np.array([0, -1], np.int64),
}  # fmt: skip


def _graph(nodes: list[onnx.NodeProto], outputs: list[str], *, dims: list[int | None] | None = None) -> bytes:
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims or [None, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, None]) for name in outputs],
        initializer=[numpy_helper.from_array(value, name) for name, value in INITIALIZERS.items() if name in used],
    )  # fmt: skip
    return models.model_bytes(graph, ml=any(node.domain == "ai.onnx.ml" for node in nodes))


def _node(op: str, inputs: list[str], output: str, name: str = "", **attributes: Any) -> onnx.NodeProto:
    domain = "ai.onnx.ml" if op == "Scaler" else ""
    return helper.make_node(op, inputs, [output], name=name or output, domain=domain, **attributes)


def _scaler(source: str, output: str, scale: np.ndarray, offset: np.ndarray) -> onnx.NodeProto:
    return _node("Scaler", [source], output, scale=scale.tolist(), offset=offset.tolist())


def _hidden(source: str = "x") -> list[onnx.NodeProto]:
    return [_node("Gemm", [source, "w0", "b0"], "h", transB=1), _node("Relu", ["h"], "r")]


CASES: dict[str, tuple[Callable[[], bytes], list[int], int, bool]] = {
    # name: (model, input dims after the batch, layers read, whether the map is the input transform)
    "a Scaler of length 1 first": (
        lambda: _graph([_scaler("x", "s", np.array([2.5]), np.array([0.5])), _node("Gemm", ["s", "w0", "b0"], "y",
                                                                                   transB=1)], ["y"]),
        [4], 1, True,
    ),
    "Sub, Mul and Add by constants first, constant first or second": (
        lambda: _graph([_node("Sub", ["x", "c4"], "a"), _node("Mul", ["s4", "a"], "b"), _node("Add", ["b", "c4"], "c"),
                        _node("Sub", ["c4", "c"], "d"), _node("Gemm", ["d", "w0", "b0"], "y", transB=1)], ["y"]),
        [4], 1, True,
    ),
    "a feature multiplied by zero, then offset: a constant in the bias": (
        lambda: _graph([_node("Mul", ["x", "s4z"], "a"), _node("Add", ["a", "c4"], "b"),
                        _node("Gemm", ["b", "w0", "b0"], "y", transB=1)], ["y"]),
        [4], 1, True,
    ),
    "a Scaler, then a Reshape that keeps the features": (
        lambda: _graph([_scaler("x", "s", SCALE4, SHIFT4), _node("Reshape", ["s", "rows"], "f"),
                        _node("Gemm", ["f", "w0", "b0"], "y", transB=1)], ["y"]),
        [4], 1, True,
    ),
    "a Scaler between Relu and the next layer": (
        lambda: _graph([*_hidden(), _scaler("r", "s", SHIFT6, POSITIVE6), _node("Gemm", ["s", "w1", "b1"], "y",
                                                                                transB=1)], ["y"]),
        [4], 2, False,
    ),
    "Sub then Div after Relu, then MatMul + Add": (
        lambda: _graph([*_hidden(), _node("Sub", ["r", "c6"], "a"), _node("Div", ["a", "s6"], "b"),
                        _node("MatMul", ["b", "w1t"], "m"), _node("Add", ["m", "b1"], "y")], ["y"]),
        [4], 2, False,
    ),
    "an image divided by a scalar, then flattened": (
        lambda: _graph([_node("Div", ["x", "two"], "a"), _node("Flatten", ["a"], "f", axis=1),
                        _node("Gemm", ["f", "w0", "b0"], "y", transB=1)], ["y"], dims=[None, 1, 2, 2]),
        [1, 2, 2], 1, True,
    ),
    "a scale and offset of the last layer's outputs, then Softmax": (
        lambda: _graph([*_hidden(), _node("Gemm", ["r", "w1", "b1"], "z", transB=1),
                        _scaler("z", "s", B3, W36[:, 0]), _node("Softmax", ["s"], "y", axis=1)], ["y"]),
        [4], 2, False,
    ),
    "a positive scale after the last layer's Relu": (
        lambda: _graph([*_hidden(), _node("Mul", ["r", "s6"], "y")], ["y"]),
        [4], 1, False,
    ),
    "a scale computed from constants in the graph": (
        lambda: _graph([_node("Div", ["s4", "two"], "half"), _node("Mul", ["x", "half"], "a"),
                        _node("Gemm", ["a", "w0", "b0"], "y", transB=1)], ["y"]),
        [4], 1, True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_per_feature_maps_become_the_input_transform_or_fold_into_dense_layers(case: str) -> None:
    """A map of the model input leaves the first layer's weights as they are (W64) and becomes the input
    transform; any other map is folded into a layer and leaves the input alone."""
    build, dims, layers, leading = CASES[case]
    x = random_inputs(int(np.prod(dims))).reshape(-1, *dims)
    float_model = assert_matches_onnxruntime(build(), x)
    assert len(float_model.layers) == layers
    transformed = float_model.input_offset is not None or float_model.input_gain is not None
    assert transformed == leading
    if leading:
        np.testing.assert_array_equal(float_model.layers[0].weights, W64)


def test_a_feature_scaled_by_zero_is_a_constant_in_the_bias() -> None:
    """(x * s + c) with s = 0 for a feature is the constant c there: gain 0, no offset, W[:, j] · c in the bias."""
    build = CASES["a feature multiplied by zero, then offset: a constant in the bias"][0]
    float_model = read_onnx(build())
    gain, offset = float_model.input_gain, float_model.input_offset
    assert gain is not None and offset is not None
    np.testing.assert_array_equal(gain, INITIALIZERS["s4z"].astype(np.float64))
    assert offset[1] == 0.0
    np.testing.assert_allclose(offset[[0, 2, 3]], -SHIFT4[[0, 2, 3]] / SCALE4[[0, 2, 3]], rtol=1e-6)
    np.testing.assert_allclose(float_model.layers[0].bias, B6 + W64[:, 1] * SHIFT4[1], rtol=1e-6)


def test_a_scale_of_the_last_layer_is_diag_s_times_w() -> None:
    """y = (z - offset) * s after the last layer: W'' = diag(s) · W and b'' = s · (b - offset)."""
    scale, offset = POSITIVE6, SHIFT6
    model = _graph([_node("Gemm", ["x", "w0", "b0"], "z", transB=1), _scaler("z", "y", scale, offset)], ["y"])
    layer = read_onnx(model).layers[0]
    np.testing.assert_allclose(layer.weights, scale[:, None] * W64, rtol=1e-6)
    np.testing.assert_allclose(layer.bias, scale * (B6 - offset), rtol=1e-5, atol=1e-6)


# -- refusals -----------------------------------------------------------------------------------------------------

REFUSALS: dict[str, tuple[Callable[[], bytes], str, str, str]] = {
    "an offset after the last layer's Relu": (
        lambda: _graph([*_hidden(), _node("Add", ["r", "c6"], "y", name="shift")], ["y"]),
        "Add", "shift", "shifts the output of layer 0 after its Relu, and no dense layer follows",
    ),
    "a negative scale after the last layer's Relu, read by Softmax": (
        lambda: _graph([*_hidden(), _node("Mul", ["r", "neg6"], "m", name="flip"),
                        _node("Softmax", ["m"], "y", axis=1)], ["y"]),
        "Mul", "flip", "negates the output of layer 0 after its Relu",
    ),
    "a Scaler after the output head": (
        lambda: _graph([_node("Gemm", ["x", "w0"], "z", transB=1), _node("Softmax", ["z"], "p", axis=1),
                        _scaler("p", "y", POSITIVE6, SHIFT6)], ["y"]),
        "Scaler", "y", "scales and offsets after the output head",
    ),
    "a constant divided by the data": (
        lambda: _graph([_node("Div", ["two", "x"], "a", name="inverse"), _node("Gemm", ["a", "w0"], "y",
                                                                              transB=1)], ["y"]),
        "Div", "inverse", "divides a constant by the data",
    ),
    "a division by zero": (
        lambda: _graph([_node("Div", ["x", "zero"], "a", name="bad"), _node("Gemm", ["a", "w0"], "y", transB=1)],
                       ["y"]),
        "Div", "bad", "divides by zero",
    ),
    "a scale of the wrong length": (
        lambda: _graph([_node("Mul", ["x", "s6"], "a", name="wide"), _node("Gemm", ["a", "w0"], "y", transB=1)],
                       ["y"]),
        "Mul", "wide", "with 6 values, but its input has 4 features",
    ),
    "a per-element scale of an image": (
        lambda: _graph([_node("Mul", ["x", "s4"], "a", name="pixels"), _node("Flatten", ["a"], "f", axis=1),
                        _node("Gemm", ["f", "w0"], "y", transB=1)], ["y"], dims=[None, 1, 1, 4]),
        "Mul", "pixels", "per element of a multi-dimensional input; flatten it first",
    ),
    "a scaled input read by Softmax": (
        lambda: _graph([_scaler("x", "s", SCALE4, SHIFT4), _node("Softmax", ["s"], "y", name="soft", axis=1)],
                       ["y"]),
        "Softmax", "soft", "applies to the model input",
    ),
    "maps of two lengths on an input of unknown width": (
        lambda: _graph([_node("Mul", ["x", "s4"], "a"), _node("Add", ["a", "c6"], "b", name="bias"),
                        _node("Gemm", ["b", "w0"], "y", transB=1)], ["y"], dims=[None, None]),
        "Add", "bias", "adds a bias with 6 values after a map of 4 features",
    ),
    "a Scaler whose offset and scale differ in length": (
        lambda: _graph([_scaler("x", "s", SCALE4, np.array([0.5])), _node("Gemm", ["s", "w0"], "y", transB=1)],
                       ["y"]),
        "Scaler", "s", "has 4 scale and 1 offset values",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_maps_that_cannot_be_folded_fail_naming_their_node(case: str) -> None:
    build, operator, node, message = REFUSALS[case]
    with pytest.raises(UnsupportedModelError) as caught:
        read_onnx(build())
    assert message in str(caught.value)
    assert (caught.value.operator, caught.value.node) == (operator, node)
    assert str(caught.value).startswith(f"{operator} (node '{node}')")

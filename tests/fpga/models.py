"""Small models for the FPGA tests, trained or built in code in about a second (nothing is downloaded).

Trained models are cached per process, with read-only arrays, so that several tests share one training run.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from edgewise.fpga.calibration import Samples
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

OPSET = 17
ML_OPSET = 1
SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "maxabs": MaxAbsScaler, "robust": RobustScaler}
HEAD_NAMES = {"identity": "logits", "softmax": "probabilities", "sigmoid": "scores", "argmax": "label"}


@dataclass(frozen=True)
class Split:
    """Training samples (also the calibration set) and held-out test samples."""

    train: Samples
    test: Samples


def _frozen(*arrays: np.ndarray) -> None:
    for array in arrays:
        array.flags.writeable = False


def _split(x: np.ndarray, y: np.ndarray, *, test_size: float, seed: int) -> Split:
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=test_size, random_state=seed, stratify=y
    )
    _frozen(x_train, x_test, y_train, y_test)
    return Split(Samples(x_train, y_train), Samples(x_test, y_test))


def _export(estimator: object, features: int, *, zipmap: bool = False) -> bytes:
    options = {id(estimator): {"zipmap": zipmap}} if hasattr(estimator, "classes_") else None
    model = to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, features]))],
        options=options,
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    return bytes(model.SerializeToString())


def _fit(estimator: object, x: np.ndarray, y: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # short training on purpose
        estimator.fit(x, y)  # type: ignore[attr-defined]


# -- scikit-learn models -------------------------------------------------------------------------------------------


@functools.cache
def digits_split(seed: int = 0) -> Split:
    """scikit-learn's bundled 8x8 digits (64 features in [0, 1], 10 classes), 30% held out."""
    digits = load_digits()
    return _split(digits.data / 16.0, digits.target, test_size=0.3, seed=seed)


@functools.cache
def digits_mlp_onnx(hidden: tuple[int, ...] = (32,), seed: int = 0, max_iter: int = 60) -> tuple[bytes, Split]:
    """An MLPClassifier on digits (ZipMap off): outputs `label` (INT64) and `probabilities` (FP32)."""
    split = digits_split(seed)
    model = MLPClassifier(hidden_layer_sizes=hidden, max_iter=max_iter, random_state=seed)
    _fit(model, split.train.x, split.train.y)  # type: ignore[arg-type]
    return _export(model, 64), split


@functools.cache
def benchmark_split(seed: int = 0) -> Split:
    x, y = make_classification(
        n_samples=2400, n_features=16, n_informative=10, n_redundant=4, n_classes=5,
        n_clusters_per_class=1, class_sep=1.5, random_state=seed,
    )  # fmt: skip
    return _split(x, y, test_size=1 / 3, seed=seed)


@functools.cache
def mlp_16_32_32_5_onnx(seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The benchmark model: 16 features, two hidden ReLU layers of 32, 5 classes (`make_classification`).

    Returns the ONNX bytes and 800 held-out samples (x float32 (800, 16), y int (800,)) that training never saw,
    to split into calibration and test data.
    """
    split = benchmark_split(seed)
    model = MLPClassifier(hidden_layer_sizes=(32, 32), max_iter=150, random_state=seed)
    _fit(model, split.train.x, split.train.y)  # type: ignore[arg-type]
    return _export(model, 16), split.test.x, split.test.y  # type: ignore[return-value]


@functools.cache
def mlp_binary_onnx(seed: int = 0, labels: tuple[int | str, int | str] = (0, 1)) -> tuple[bytes, Split]:
    """A two-class MLPClassifier: ONNX writes its probabilities as Concat(1 - Sigmoid, Sigmoid)."""
    x, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=seed)
    split = _split(x, np.asarray(labels)[y], test_size=0.3, seed=seed)
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, random_state=seed)
    _fit(model, split.train.x, split.train.y)  # type: ignore[arg-type]
    return _export(model, 8), split


@functools.cache
def mlp_regressor_onnx(seed: int = 0, targets: int = 1) -> tuple[bytes, Split]:
    """An MLPRegressor (identity head, output `variable`); `targets` outputs per sample."""
    x, y = make_regression(n_samples=600, n_features=10, n_targets=targets, noise=0.1, random_state=seed)
    x_train, x_test, y_train, y_test = train_test_split(x.astype(np.float32), y / 100.0, random_state=seed)
    _frozen(x_train, x_test, y_train, y_test)
    model = MLPRegressor(hidden_layer_sizes=(24,), max_iter=200, random_state=seed)
    _fit(model, x_train, y_train)
    return _export(model, 10), Split(Samples(x_train, y_train), Samples(x_test, y_test))


@functools.cache
def logistic_onnx(
    classes: int = 3, seed: int = 0, labels: tuple[int | str, ...] | None = None, zipmap: bool = False
) -> tuple[bytes, Split]:
    """A LogisticRegression (ai.onnx.ml LinearClassifier, then Normalizer for more than two classes)."""
    x, y = make_classification(
        n_samples=600, n_features=6, n_informative=4, n_redundant=0, n_classes=classes, random_state=seed
    )
    split = _split(x, np.asarray(labels)[y] if labels else y, test_size=0.3, seed=seed)
    model = LogisticRegression(max_iter=200)
    _fit(model, split.train.x, split.train.y)  # type: ignore[arg-type]
    return _export(model, 6, zipmap=zipmap), split


@functools.cache
def scaled_pipeline(
    scaler: str = "standard", classifier: str = "logistic", c: float = 1.0, seed: int = 0
) -> tuple[Pipeline, Split]:
    """make_pipeline(scaler, classifier) fitted on digits: `scaler` a key of SCALERS, `classifier` "logistic"
    (LogisticRegression(C=c), the demo's model) or "mlp" (MLPClassifier with 32 hidden units)."""
    split = digits_split(seed)
    estimator = (
        LogisticRegression(C=c, max_iter=300)
        if classifier == "logistic"
        else MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=seed)
    )
    pipeline = make_pipeline(SCALERS[scaler](), estimator)
    _fit(pipeline, split.train.x, split.train.y)  # type: ignore[arg-type]
    return pipeline, split


@functools.cache
def scaled_classifier_onnx(
    scaler: str = "standard", classifier: str = "logistic", c: float = 1.0, seed: int = 0, opset: int | None = None
) -> tuple[bytes, Split]:
    """`scaled_pipeline` exported with ZipMap off: without `opset` as `to_onnx(pipe, x[:1], options=...)` (input
    `X`, the newest opsets), with it as examples/train/train.py does (input `input`, `target_opset=opset`)."""
    pipeline, split = scaled_pipeline(scaler, classifier, c, seed)
    options = {LogisticRegression: {"zipmap": False}, MLPClassifier: {"zipmap": False}}
    if opset is None:
        model = to_onnx(pipeline, split.train.x[:1], options=options)
    else:
        types = [("input", FloatTensorType([None, split.train.x.shape[1]]))]
        model = to_onnx(pipeline, initial_types=types, options=options, target_opset=opset)
    return bytes(model.SerializeToString()), split


def scaled_logistic_onnx(c: float = 1.0, seed: int = 0, opset: int | None = None) -> tuple[bytes, Split]:
    """The demo's model: make_pipeline(StandardScaler(), LogisticRegression(C=c)) on digits / 16."""
    return scaled_classifier_onnx("standard", "logistic", c, seed, opset)


# -- onnx.helper models --------------------------------------------------------------------------------------------


def model_bytes(graph: onnx.GraphProto, *, ml: bool = False) -> bytes:
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("ai.onnx.ml", ML_OPSET)] if ml else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def dense_weights(shapes: Sequence[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weights (out, in), bias (out,)) per layer for layer sizes `shapes` (inputs first), Glorot-scaled."""
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.normal(size=(out, into)) * np.sqrt(2.0 / (into + out))).astype(np.float32),
            (rng.normal(size=out) * 0.1).astype(np.float32),
        )
        for into, out in itertools.pairwise(shapes)
    ]


def _relu_flags(relu: bool | Sequence[bool], layers: int) -> list[bool]:
    """`True` means ReLU after every hidden layer (not the last); a sequence gives one flag per layer."""
    if isinstance(relu, bool):
        return [relu and index < layers - 1 for index in range(layers)]
    return list(relu)


def gemm_chain_onnx(
    shapes: Sequence[int],
    *,
    relu: bool | Sequence[bool] = True,
    head: str | Sequence[str] = "softmax",
    labels: Sequence[int | str] = (),
    matmul: bool = False,
    seed: int = 0,
) -> bytes:
    """x [N, shapes[0]] → dense layers (Gemm with transB=1, or MatMul + Add) → the head's outputs.

    `head` names the outputs (see HEAD_NAMES): "identity", "softmax", "sigmoid", "argmax" (argmax keepdims=0;
    mapped to `labels` through ArrayFeatureExtractor when given).
    """
    heads = [head] if isinstance(head, str) else list(head)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    current = "x"
    for index, ((weights, bias), with_relu) in enumerate(
        zip(dense_weights(shapes, seed), _relu_flags(relu, len(shapes) - 1), strict=True)
    ):
        w, b, out = f"w{index}", f"b{index}", f"dense{index}"
        if matmul:
            initializers += [numpy_helper.from_array(weights.T.copy(), w), numpy_helper.from_array(bias[None, :], b)]
            nodes += [helper.make_node("MatMul", [current, w], [f"mm{index}"], name=f"matmul{index}"),
                      helper.make_node("Add", [f"mm{index}", b], [out], name=f"add{index}")]  # fmt: skip
        else:
            initializers += [numpy_helper.from_array(weights, w), numpy_helper.from_array(bias, b)]
            nodes.append(helper.make_node("Gemm", [current, w, b], [out], name=f"gemm{index}", transB=1))
        current = out
        if with_relu:
            nodes.append(helper.make_node("Relu", [current], [f"relu{index}"], name=f"relu{index}"))
            current = f"relu{index}"
    outputs = [_head_node(op, current, shapes[-1], labels, nodes, initializers) for op in heads]
    graph = helper.make_graph(
        nodes, "gemm_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, shapes[0]])], outputs,
        initializer=initializers,
    )  # fmt: skip
    return model_bytes(graph, ml=bool(labels))


def _head_node(
    op: str,
    source: str,
    width: int,
    labels: Sequence[int | str],
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
) -> onnx.ValueInfoProto:
    name = HEAD_NAMES[op]
    if op == "identity":
        nodes.append(helper.make_node("Identity", [source], [name], name="identity"))
    elif op == "softmax":
        nodes.append(helper.make_node("Softmax", [source], [name], name=op, axis=1))
    elif op == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [source], [name], name=op))
    elif not labels:
        nodes.append(helper.make_node("ArgMax", [source], [name], name="argmax", axis=1, keepdims=0))
        return helper.make_tensor_value_info(name, TensorProto.INT64, [None])
    else:
        strings = isinstance(labels[0], str)
        classes = np.array(labels, dtype=object if strings else np.int64)
        initializers += [numpy_helper.from_array(classes, "classes"),
                         numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat")]  # fmt: skip
        nodes += [
            helper.make_node("ArgMax", [source], ["index"], name="argmax", axis=1, keepdims=0),
            helper.make_node("ArrayFeatureExtractor", ["classes", "index"], ["picked"], name="lookup",
                             domain="ai.onnx.ml"),
            helper.make_node("Reshape", ["picked", "flat"], [name], name="flatten_label"),
        ]  # fmt: skip
        return helper.make_tensor_value_info(name, TensorProto.STRING if strings else TensorProto.INT64, [None])
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width])

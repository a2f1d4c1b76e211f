"""Small ONNX models and sample tensors for the scoring tests, built in code (nothing is downloaded)."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support import wait_until

OPSET = 17

# Protocol datatype -> ONNX element type and numpy dtype. Kept here on purpose rather than imported from
# the server, so that a wrong entry in the server's table fails a test instead of agreeing with itself.
ONNX_ELEM = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
NP_DTYPE = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
DATATYPES = tuple(ONNX_ELEM)


def save(graph: onnx.GraphProto, path: Path, *, ml: bool = False) -> Path:
    opsets = [helper.make_opsetid("", OPSET)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def identity_model(path: Path, datatype: str, dims: tuple[int | str, ...] = ("batch", 3)) -> Path:
    """y = x for one datatype: a round trip through the server must give back exactly what was sent."""
    elem = ONNX_ELEM[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("x", elem, list(dims))],
        [helper.make_tensor_value_info("y", elem, list(dims))],
    )
    return save(graph, path)


def two_output_model(path: Path, *, features: int = 4) -> Path:
    """x (FP32 [batch, features]) -> doubled = 2x and flag = x > 0 (BOOL): for requested-output subsets."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["doubled"]),
            helper.make_node("Greater", ["x", "zero"], ["flag"]),
        ],
        "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", features]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["batch", features]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
    )
    return save(graph, path)


def upper_model(path: Path) -> Path:
    """A string model: upper-cases ASCII text (StringNormalizer in the "C" locale, which every libc has)."""
    graph = helper.make_graph(
        [helper.make_node("StringNormalizer", ["text"], ["upper"], case_change_action="UPPER", locale="C")],
        "upper",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("upper", TensorProto.STRING, ["n"])],
    )
    return save(graph, path)


def label_model(path: Path, labels: tuple[str, ...] = ("cat", "dog", "bird")) -> Path:
    """A string-to-id encoder (ai.onnx.ml LabelEncoder): unknown strings map to -1."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["label"],
                ["id"],
                domain="ai.onnx.ml",
                keys_strings=list(labels),
                values_int64s=list(range(len(labels))),
                default_int64=-1,
            )
        ],
        "labels",
        [helper.make_tensor_value_info("label", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("id", TensorProto.INT64, ["batch"])],
    )
    return save(graph, path, ml=True)


def add_model(path: Path, *, offset: float, features: int = 4) -> Path:
    """y = x + offset: versions of one model that answer differently, so a test can tell them apart."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "offset"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])],
        initializer=[numpy_helper.from_array(np.array(offset, dtype=np.float32), "offset")],
    )
    return save(graph, path)


def sklearn_classifier(path: Path, *, features: int = 6, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A LogisticRegression trained on generated data, converted by skl2onnx; returns the path and test rows.

    The graph has input `features` (FP32 [N, features]) and outputs `label` (INT64 [N]) and
    `probabilities` (FP32 [N, 2]); ZipMap is off so every output is a plain tensor.
    """
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(
        n_samples=200, n_features=features, n_informative=4, n_redundant=0, random_state=seed
    )
    x = x.astype(np.float32)
    classifier = LogisticRegression(max_iter=500).fit(x[:150], y[:150])
    onx = to_onnx(
        classifier,
        initial_types=[("features", FloatTensorType([None, features]))],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path, x[150:]


def corrupt_model(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an ONNX model \x00\x01\x02")
    return path


def fifo_model(path: Path) -> Path:
    """A named pipe in place of model.onnx: loading it blocks until the test writes the model into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def feed_fifo(path: Path, data: bytes) -> None:
    """Write the model into the named pipe once the server has opened it for reading (bounded wait)."""

    def open_writer() -> int | None:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return None
            raise

    fd = wait_until(open_writer, timeout=60, what="the server to open the model file")
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_atomically(target_dir: Path, build: Callable[[Path], object]) -> None:
    """Write a version folder the way the README asks: build it under a temporary name, then rename it."""
    staging = target_dir.parent / f".staging-{target_dir.name}"
    build(staging / "model.onnx")
    os.rename(staging, target_dir)


def sample(datatype: str, rows: int = 2, cols: int = 3, seed: int = 0) -> np.ndarray:
    """A [rows, cols] tensor that includes the datatype's extremes, to catch truncation and sign errors."""
    rng = np.random.default_rng(seed)
    dtype = NP_DTYPE[datatype]
    count = rows * cols
    if datatype == "BYTES":
        pool = [
            b"",
            b"edge",
            "wei\u00df".encode(),
            b"a b c",
            b"0123456789" * 3,
            b"tab\tnew\nline",
            b"nul\x00byte",
        ]
        values = [pool[i % len(pool)] for i in range(count)]
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(rows, cols)
    if datatype == "BOOL":
        return (np.arange(count) % 2 == 0).reshape(rows, cols)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=count, dtype=dtype, endpoint=True)
        values[0], values[-1] = info.min, info.max
        return values.reshape(rows, cols)
    info_f = np.finfo(dtype)
    values = (rng.standard_normal(count) * 100).astype(dtype)
    values[0], values[-1] = info_f.max, info_f.tiny
    return values.reshape(rows, cols)

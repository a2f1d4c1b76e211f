"""What a registered file is: the ONNX producer read from the file's first bytes, checked against onnx itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.model_files import describe, onnx_producer
from edgewise.cloud.store.records import FileEntry
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression


def _identity(producer: str, doc: str = "") -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, producer_name=producer, doc_string=doc)
    return bytes(model.SerializeToString())


@pytest.mark.parametrize(("producer", "doc"), [("pytorch", ""), ("my tool", "x" * 5000), ("", "")])
def test_the_producer_matches_what_onnx_reads(producer: str, doc: str) -> None:
    data = _identity(producer, doc)
    assert onnx_producer(data) == onnx.load_from_string(data).producer_name == producer


def test_scikit_learn_models_are_recognised(tmp_path: Path) -> None:
    model = LogisticRegression().fit(np.random.default_rng(0).random((20, 3)), [0, 1] * 10)
    path = tmp_path / "model.onnx"
    path.write_bytes(to_onnx(model, np.zeros((1, 3), dtype=np.float32)).SerializeToString())
    entry = FileEntry(path="model.onnx", digest="sha256:" + "0" * 64, size=path.stat().st_size)
    assert describe([entry], lambda digest: path) == ("onnx", "scikit-learn")


@pytest.mark.parametrize("data", [b"", b"hello, not a model", b"\x80\x04\x95pickle", b"\x08"])
def test_other_files_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidInputError, match="not an ONNX model"):
        onnx_producer(data)

"""What a registered model's files are (format, framework) and the scikit-learn → ONNX conversion.

The framework of an ONNX file comes from its `producer_name`, read once per digest.
"""

from __future__ import annotations

import functools
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from edgewise.cloud.errors import InvalidInputError
from edgewise.cloud.store.records import FileEntry
from edgewise.runtime.protowire import read_varint

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_PRODUCERS = {
    "skl2onnx": "scikit-learn",
    "pytorch": "pytorch",
    "tf2onnx": "tensorflow",
    "keras2onnx": "tensorflow",
    "onnxmltools": "onnxmltools",
}


def describe(files: list[FileEntry], path_of: Callable[[str], Path] | None = None) -> tuple[str, str | None]:
    """(format, framework) of a model's files; `path_of(digest)` opens ONNX files to read their producer."""
    if len(files) == 1:
        suffix = PurePosixPath(files[0].path).suffix.lower()
        if suffix == ".onnx":
            framework = _onnx_framework(str(path_of(files[0].digest))) if path_of is not None else None
            return "onnx", framework
        if suffix in _PICKLE_SUFFIXES:
            return "pickle", None
        return "file", None
    return "directory", None


@functools.lru_cache(maxsize=1024)
def _onnx_framework(path: str) -> str | None:
    with open(path, "rb") as source:
        head = source.read(_HEAD_BYTES)
    producer = onnx_producer(head)
    return _PRODUCERS.get(producer.lower(), producer.lower() or None)


_HEAD_BYTES = 1 << 16
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def onnx_producer(head: bytes) -> str:
    """`producer_name` of a serialized ONNX ModelProto, read from the start of the file.

    The fields before the graph (ir_version, producer_name, producer_version, domain, model_version, doc_string)
    are written first, so a few bytes answer without loading the model, which for large models takes seconds
    and memory the size of the file. A file that does not start like a ModelProto is refused.
    """
    position, fields = 0, 0
    while position < len(head):
        key, position = _varint(head, position)
        number, wire = key >> 3, key & 7
        if number == 0 or wire not in (_VARINT, _FIXED64, _BYTES, _FIXED32) or (fields == 0 and number != 1):
            break
        fields += 1
        if wire == _VARINT:
            _, position = _varint(head, position)
        elif wire == _FIXED64:
            position += 8
        elif wire == _FIXED32:
            position += 4
        else:
            length, position = _varint(head, position)
            if number == 2:
                try:
                    return head[position : position + length].decode()
                except UnicodeDecodeError:
                    break
            if number >= 7:  # the graph and what follows: no producer was written
                return ""
            position += length
    if fields == 0:
        raise InvalidInputError("the file is not an ONNX model (it does not start with an ONNX ModelProto)")
    return ""


def _varint(data: bytes, position: int) -> tuple[int, int]:
    try:
        return read_varint(data, position)
    except ValueError:
        raise InvalidInputError("the file is not an ONNX model (a truncated or malformed header)") from None


def convert_sklearn_to_onnx(pickle_path: Path, *, out_dir: Path) -> Path:
    """Convert a pickled scikit-learn estimator to ONNX; the input is `input` (float32, [batch, n_features]).

    The pickle is the user's own run output, loaded in the service: register only models you trust.
    """
    try:
        with pickle_path.open("rb") as source:
            estimator = pickle.load(source)
    except Exception as exc:
        raise InvalidInputError(f"cannot unpickle the model file: {exc}") from exc
    module = type(estimator).__module__
    if not module.startswith("sklearn"):
        raise InvalidInputError(
            f"--convert onnx needs a scikit-learn estimator; the pickle holds {module}.{type(estimator).__name__}"
        )
    features = getattr(estimator, "n_features_in_", None)
    if not isinstance(features, int):
        raise InvalidInputError("the estimator is not fitted (it has no n_features_in_); fit it before saving")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    try:
        onnx_model = to_onnx(
            estimator,
            initial_types=[("input", FloatTensorType([None, features]))],
            target_opset=17,
            options={id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None,
        )
    except Exception as exc:
        raise InvalidInputError(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=".onnx", dir=out_dir)
    with open(fd, "wb") as out:
        out.write(onnx_model.SerializeToString())
    return Path(name)

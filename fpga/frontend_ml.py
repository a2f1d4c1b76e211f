"""Handlers of the ai.onnx.ml domain, as scikit-learn models export through skl2onnx.

A LinearClassifier is a dense layer with its head; a Scaler (StandardScaler, MaxAbsScaler, RobustScaler) is a
per-feature scale and offset: the model's input transform when it scales the input, else folded into the next
dense layer; ArrayFeatureExtractor maps the head's argmax to class labels; Normalizer is mapped where it changes
nothing (L1 over probabilities). ZipMap (a sequence of maps) is refused rather than replaced by a tensor, so that
an FPGA image never serves a different API than the ONNX one.

Binary classifiers, whose probabilities ONNX writes as [1 - sigmoid(z), sigmoid(z)], get a second output row of
zero weights when the graph is finished: softmax([0, z]) is those probabilities and argmax([0, z]) their label.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from edgewise.fpga.frontend_graph import GraphReader, Handler, Inputs
from edgewise.fpga.frontend_symbols import Head, Label, Symbol
from onnx import TensorProto, helper


def linear_classifier(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    coefficients = np.asarray(reader.attribute("coefficients", []), dtype=np.float64)
    ints, strings = reader.attribute("classlabels_ints"), reader.attribute("classlabels_strings")
    labels: tuple[int | str, ...]
    if ints:
        labels, elem = tuple(int(v) for v in ints), TensorProto.INT64  # type: ignore[attr-defined]
    elif strings:
        labels = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in strings)  # type: ignore[attr-defined]
        elem = TensorProto.STRING
    else:
        raise reader.refuse("has no class labels (classlabels_ints or classlabels_strings)")
    intercepts = reader.attribute("intercepts")
    rows = len(intercepts) if intercepts else len(labels)  # type: ignore[arg-type]
    if rows == 0 or coefficients.size % rows:
        raise reader.refuse(f"has {coefficients.size} coefficients, not a multiple of its {rows} rows")
    weights = coefficients.reshape(rows, -1)
    bias = np.asarray(intercepts if intercepts else np.zeros(rows), dtype=np.float64)
    transform = str(reader.attribute("post_transform", "NONE"))
    binary = rows == 1 and len(labels) == 2
    if not binary and rows != len(labels):
        raise reader.refuse(f"has {rows} coefficient rows for {len(labels)} classes")
    if transform not in ("NONE", "LOGISTIC", "SOFTMAX") or (binary and transform != "LOGISTIC"):
        single = " with one coefficient row" if binary else ""
        raise reader.refuse(
            f"has post_transform {transform}{single}; the FPGA head computes NONE, LOGISTIC and SOFTMAX "
            "(LOGISTIC only for a single-row binary classifier)"
        )
    dense = reader.new_layer(inputs[0], weights, bias)
    label = Label(dense.layer, dense.version, binary, elem, True, labels)
    scores: Symbol = dense
    if transform != "NONE":
        scores = Head("sigmoid" if transform == "LOGISTIC" else "softmax", dense.layer, dense.version, binary)
    return [label, scores]


def scaler(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    """y = (x - offset) * scale, i.e. x * scale - offset * scale."""
    offset = np.asarray(reader.attribute("offset", []), dtype=np.float64)
    scale = np.asarray(reader.attribute("scale", []), dtype=np.float64)
    if not scale.size or scale.size != offset.size:
        raise reader.refuse(
            f"has {scale.size} scale and {offset.size} offset values; both must be given, of one length "
            "(1 or the feature count), as ONNX Runtime requires"
        )
    return [reader.affine(inputs[0], scale, -offset * scale, doing="scales and offsets")]


def feature_extractor(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    classes, indices = reader.constant(inputs[0], "class list"), inputs[1]
    if not isinstance(indices, Label) or indices.labels or classes.ndim != 1:
        raise reader.refuse("is mapped only as the lookup of class labels by the output's ArgMax")
    labels: tuple[int | str, ...]
    if classes.dtype.kind in "iu":
        labels, elem = tuple(int(v) for v in classes), helper.np_dtype_to_tensor_dtype(classes.dtype)
    elif classes.dtype.kind in "OUS":
        labels, elem = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in classes), TensorProto.STRING
    else:
        raise reader.refuse(f"maps to class labels of type {classes.dtype}; labels must be integers or strings")
    return [replace(indices, elem=elem, flat=False, labels=labels)]


def normalizer(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    source = inputs[0]
    probabilities = isinstance(source, Head) and (source.op == "softmax" or source.pair)
    if reader.attribute("norm", "MAX") != "L1" or not probabilities or source is None:
        raise reader.refuse("is mapped only as an L1 normalization of probabilities (a no-op after Softmax)")
    return [source]


def zipmap(reader: GraphReader, inputs: Inputs) -> list[Symbol]:
    raise reader.refuse(
        "outputs a sequence of maps, which the FPGA image does not serve; export the classifier without "
        'ZipMap: to_onnx(..., options={id(model): {"zipmap": False}}) or options={MLPClassifier: {"zipmap": '
        "False}}"
    )


HANDLERS: dict[str, Handler] = {
    "LinearClassifier": linear_classifier,
    "Scaler": scaler,
    "ArrayFeatureExtractor": feature_extractor,
    "Normalizer": normalizer,
    "ZipMap": zipmap,
}

"""What quantization costs on held-out data, and the product target: at most 1 point of accuracy lost. Reports
score the outputs through the scoring backend's own head, so they measure what is served."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from edgewise.fpga.accuracy import evaluate, head_outputs
from edgewise.fpga.calibration import Samples, split
from edgewise.fpga.errors import CalibrationError
from edgewise.fpga.frontend import read_onnx
from edgewise.fpga.ir import HeadOutput
from edgewise.fpga.quantize import quantize

from tests.fpga import models

TARGET_POINTS_LOST = 1.0


def test_digits_mlp_loses_at_most_one_point_after_quantization() -> None:
    model, data = models.digits_mlp_onnx(hidden=(32,))
    float_model = read_onnx(model)
    report = evaluate(float_model, quantize(float_model, data.train.x), data.test)
    assert report.kind == "classifier" and report.n == len(data.test) == 540
    assert report.float_accuracy is not None and report.float_accuracy > 0.9  # a model worth measuring
    assert report.points_lost is not None and report.points_lost <= TARGET_POINTS_LOST
    assert report.points_lost == pytest.approx(100 * (report.float_accuracy - report.integer_accuracy))  # type: ignore[operator]


def test_benchmark_mlp_loses_at_most_one_point_after_quantization() -> None:
    model, x, y = models.mlp_16_32_32_5_onnx()
    float_model = read_onnx(model)
    calibration, test = split(Samples(x, y), 0.5, seed=0)
    report = evaluate(float_model, quantize(float_model, calibration.x), test)
    assert report.float_accuracy is not None and report.float_accuracy > 0.85
    assert report.points_lost is not None and report.points_lost <= TARGET_POINTS_LOST
    assert report.agreement is not None and report.agreement > 0.98


def test_float_accuracy_is_what_onnxruntime_scores_with_class_labels() -> None:
    """Labels map through the head (strings here), so the float accuracy equals the ONNX model's."""
    model, data = models.mlp_binary_onnx(labels=("no", "yes"))
    float_model = read_onnx(model)
    report = evaluate(float_model, quantize(float_model, data.train.x), data.test)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {"input": data.test.x})[0]
    assert report.float_accuracy == pytest.approx(float(np.mean(labels == data.test.y)))
    assert report.points_lost is not None and report.points_lost <= TARGET_POINTS_LOST


def test_without_labels_the_report_is_top1_agreement() -> None:
    model, data = models.digits_mlp_onnx()
    float_model = read_onnx(model)
    report = evaluate(float_model, quantize(float_model, data.train.x), Samples(data.test.x))
    assert report.kind == "classifier" and report.float_accuracy is None and report.points_lost is None
    assert report.agreement is not None and 0.98 <= report.agreement <= 1.0
    assert json.loads(json.dumps(report.to_json()))["agreement"] == report.agreement


def test_regressors_report_the_error_of_the_dequantized_outputs() -> None:
    model, data = models.mlp_regressor_onnx()
    float_model = read_onnx(model)
    int_model = quantize(float_model, data.train.x)
    report = evaluate(float_model, int_model, data.test)
    reference = float_model.forward(data.test.x)
    served = int_model.dequantize_output(int_model.forward(int_model.quantize_input(data.test.x)))
    errors = np.abs(served - reference)
    assert report.kind == "regressor" and report.float_accuracy is None and report.agreement is None
    assert report.mean_abs_error == pytest.approx(errors.mean(), rel=1e-5)
    assert report.max_abs_error == pytest.approx(errors.max(), rel=1e-5)
    assert report.mean_abs_error < 0.02 * np.abs(reference).mean()
    assert set(report.to_json()) >= {"kind", "n", "mean_abs_error", "max_abs_error"}


def test_labels_of_the_wrong_kind_are_refused() -> None:
    model, data = models.digits_mlp_onnx()
    float_model = read_onnx(model)
    int_model = quantize(float_model, data.train.x)
    assert data.test.y is not None
    with pytest.raises(CalibrationError, match="test labels"):
        evaluate(float_model, int_model, Samples(data.test.x, data.test.y.astype(str)))
    with pytest.raises(CalibrationError, match="the model takes"):
        evaluate(float_model, int_model, Samples(data.test.x[:, :8]))


def test_head_outputs_are_what_the_scoring_backend_serves() -> None:
    """One head for reports and for serving: string labels as UTF-8 bytes, and a sigmoid that neither overflows
    nor loses the tiny probabilities of very negative values."""
    head = (
        HeadOutput("label", "argmax", "BYTES", ("no", "yes", "maybe")),
        HeadOutput("class_id", "argmax", "INT64", (10, 20, 30)),
        HeadOutput("index", "argmax", "INT64"),
        HeadOutput("probabilities", "softmax"),
        HeadOutput("scores", "sigmoid"),
        HeadOutput("logits", "identity", "FP64"),
    )
    values = np.array([[-800.0, 30.0, -30.0], [2.0, 2.0, -1.0], [0.0, -1e-3, 900.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. an overflow in exp
        outputs = head_outputs(head, values)
    assert outputs["label"].dtype == object and outputs["label"].tolist() == [b"yes", b"no", b"maybe"]
    assert outputs["class_id"].tolist() == [20, 10, 30] and outputs["index"].dtype == np.int64
    assert outputs["index"].tolist() == [1, 0, 2]  # the first of equal values
    probabilities = outputs["probabilities"]
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[1], [np.exp(3) / (2 * np.exp(3) + 1)] * 2 + [1 / (2 * np.exp(3) + 1)])
    expected = [[0.0, 1 / (1 + math.exp(-30)), math.exp(-30) / (1 + math.exp(-30))],
                [1 / (1 + math.exp(-2))] * 2 + [1 / (1 + math.e)],
                [0.5, 1 / (1 + math.exp(1e-3)), 1.0]]  # fmt: skip
    np.testing.assert_allclose(outputs["scores"], expected, rtol=1e-6)
    assert outputs["logits"].dtype == np.float64 and (outputs["logits"] == values).all()

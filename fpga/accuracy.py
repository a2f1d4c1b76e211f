"""What quantization costs: the float model against its integer twin on a test set, recorded with the image.

The integer side goes through exactly what the device does (quantize the input, `IntegerModel.forward`,
dequantize, then the scoring backend's own head), so the report is the accuracy a user of the FPGA image will
see, not an estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from edgewise.fpga.calibration import Samples
from edgewise.fpga.errors import CalibrationError
from edgewise.fpga.ir import FloatModel, HeadOutput, IntegerModel
from edgewise.runtime.scoring.backends.fpga.head import head_output


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    """Classifiers: accuracies against the labels (when the test set has them) and float/integer agreement.
    Regressors: only the errors. The errors are those of the dequantized last layer against the float one.
    """

    kind: Literal["classifier", "regressor"]
    n: int
    mean_abs_error: float
    max_abs_error: float
    float_accuracy: float | None = None
    integer_accuracy: float | None = None
    points_lost: float | None = None  # 100 x (float - integer accuracy)
    agreement: float | None = None  # share of samples where both predict the same class

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(float_model: FloatModel, int_model: IntegerModel, samples: Samples) -> AccuracyReport:
    """Runs both models on `samples` and compares them as the head would serve them."""
    if samples.x.ndim != 2 or samples.x.shape[1] != float_model.in_features or len(samples) == 0:
        raise CalibrationError(
            f"the test set has inputs of shape {list(samples.x.shape)}; the model takes (N, {float_model.in_features})"
        )
    reference = float_model.forward(samples.x)
    raw = int_model.forward(int_model.quantize_input(samples.x))
    integer = raw.astype(np.float64) * int_model.output_scale  # in float64, as the scoring backend dequantizes
    errors = np.abs(integer - reference)
    common = {"n": len(samples), "mean_abs_error": float(errors.mean()), "max_abs_error": float(errors.max())}
    if all(output.op == "identity" for output in float_model.head):
        return AccuracyReport(kind="regressor", **common)  # type: ignore[arg-type]
    float_predicted = predictions(float_model.head, reference)
    int_predicted = predictions(float_model.head, integer)
    agreement = float(np.mean(float_predicted == int_predicted))
    if samples.y is None:
        return AccuracyReport(kind="classifier", agreement=agreement, **common)  # type: ignore[arg-type]
    float_accuracy = _accuracy(float_predicted, samples.y)
    integer_accuracy = _accuracy(int_predicted, samples.y)
    return AccuracyReport(
        kind="classifier",
        float_accuracy=float_accuracy,
        integer_accuracy=integer_accuracy,
        points_lost=100.0 * (float_accuracy - integer_accuracy),
        agreement=agreement,
        **common,  # type: ignore[arg-type]
    )


def predicted_classes(values: np.ndarray) -> np.ndarray:
    """The class index from the last layer's values: argmax, or `value > 0` (sigmoid > 0.5) for one output."""
    classes = (values[:, 0] > 0) if values.shape[1] == 1 else np.argmax(values, axis=1)
    return np.asarray(classes, dtype=np.int64)


def predictions(head: tuple[HeadOutput, ...], values: np.ndarray) -> np.ndarray:
    """What the served model predicts per sample: its argmax output as served (string labels decoded from the
    served UTF-8), or without one the class index from the last layer's values."""
    for output in head:
        if output.op == "argmax":
            served = head_output("argmax", values, labels=output.labels, datatype=output.datatype)
            if output.datatype == "BYTES":
                return np.array([label.decode("utf-8") for label in served], dtype=str)
            return served
    return predicted_classes(values)


def head_outputs(head: tuple[HeadOutput, ...], values: np.ndarray) -> dict[str, np.ndarray]:
    """Every served output from the last layer's float values (N, out_features), computed by the scoring
    backend's head itself: string labels come as UTF-8 bytes, as the server sends them."""
    return {
        output.name: head_output(output.op, values, labels=output.labels, datatype=output.datatype) for output in head
    }


def _accuracy(predicted: np.ndarray, y: np.ndarray) -> float:
    if (predicted.dtype.kind in "OUS") != (np.asarray(y).dtype.kind in "OUS"):
        raise CalibrationError(
            f"the test labels are {y.dtype} but the model predicts {predicted.dtype} labels; give the labels the "
            "model was trained with"
        )
    return float(np.mean(predicted == y))

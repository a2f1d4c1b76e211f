"""Calibration data and post-training quantization: the invariants the hardware relies on, the input transform
computed on the host, and files that fail."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from edgewise.fpga.calibration import Samples, load_samples, split
from edgewise.fpga.errors import CalibrationError, QuantizationError, UnsupportedModelError
from edgewise.fpga.frontend import read_onnx
from edgewise.fpga.ir import MULTIPLIER_BITS, DenseLayer, FloatModel, HeadOutput, IntegerModel
from edgewise.fpga.quantize import fixed_point, quantize

from tests.fpga import models


@pytest.fixture(scope="module")
def digits() -> tuple[FloatModel, IntegerModel, models.Split]:
    model, split = models.digits_mlp_onnx()
    float_model = read_onnx(model)
    return float_model, quantize(float_model, split.train.x), split


@pytest.fixture(scope="module")
def benchmark() -> tuple[FloatModel, IntegerModel, np.ndarray]:
    model, x, _ = models.mlp_16_32_32_5_onnx()
    float_model = read_onnx(model)
    return float_model, quantize(float_model, x[:400]), x[400:]


def test_integer_layers_hold_what_the_hardware_expects(benchmark: tuple[FloatModel, IntegerModel, np.ndarray]) -> None:
    float_model, int_model, _ = benchmark
    assert int_model.architecture == tuple((*layer.shape, layer.relu) for layer in float_model.layers)
    assert int_model.head == float_model.head and int_model.input_name == float_model.input_name
    *hidden, last = int_model.layers
    for layer in hidden:
        assert layer.requantize
        assert 2 ** (MULTIPLIER_BITS - 1) <= layer.multiplier < 2**MULTIPLIER_BITS  # as many bits as fit
        assert 1 <= layer.shift <= 63
    assert not last.requantize
    for layer in int_model.layers:
        assert layer.weights.dtype == np.int8 and layer.bias.dtype == np.int32
        assert np.abs(layer.weights.astype(np.int64)).max() == 127  # symmetric: the largest weight maps to 127
        assert 128 * np.abs(layer.weights.astype(np.int64)).sum(axis=1).max() + np.abs(layer.bias).max() < 2**31


def test_scales_are_recorded_and_consistent(benchmark: tuple[FloatModel, IntegerModel, np.ndarray]) -> None:
    float_model, int_model, _ = benchmark
    meta = json.loads(json.dumps(int_model.metadata))  # it is saved as JSON with the model
    assert meta["calibration"]["samples"] == 400
    assert meta["input_scale"] == int_model.input_scale and meta["output_scale"] == int_model.output_scale
    scale = int_model.input_scale
    for index, (details, float_layer, int_layer) in enumerate(
        zip(meta["layers"], float_model.layers, int_model.layers, strict=True)
    ):
        assert details["input_scale"] == pytest.approx(scale)
        w_scale = details["weight_scale"]
        assert w_scale == pytest.approx(np.abs(float_layer.weights).max() / 127)
        np.testing.assert_allclose(int_layer.weights * w_scale, float_layer.weights, atol=w_scale / 2 + 1e-9)
        acc_scale = scale * w_scale
        assert details["accumulator_scale"] == pytest.approx(acc_scale)
        np.testing.assert_allclose(int_layer.bias * acc_scale, float_layer.bias, atol=acc_scale / 2 + 1e-9)
        if int_layer.requantize:
            real = acc_scale / details["output_scale"]
            assert int_layer.multiplier / 2**int_layer.shift == pytest.approx(real, rel=2.0**-14)
            scale = details["output_scale"]
        else:
            assert index == len(int_model.layers) - 1 and int_model.output_scale == pytest.approx(acc_scale)


def test_the_integer_model_tracks_the_float_model(benchmark: tuple[FloatModel, IntegerModel, np.ndarray]) -> None:
    float_model, int_model, held_out = benchmark
    result = int_model.forward(int_model.quantize_input(held_out))
    assert result.dtype == np.int32 and result.shape == (len(held_out), 5)
    reference = float_model.forward(held_out)
    error = np.abs(int_model.dequantize_output(result) - reference)
    assert error.mean() < 0.02 * np.abs(reference).mean()
    assert (np.argmax(result, axis=1) == np.argmax(reference, axis=1)).mean() > 0.98


def test_relu_flags_fold_into_the_integer_layers(digits: tuple[FloatModel, IntegerModel, models.Split]) -> None:
    float_model, int_model, _ = digits
    assert [layer.relu for layer in int_model.layers] == [layer.relu for layer in float_model.layers] == [True, False]


def test_saved_and_loaded_models_compute_the_same(
    digits: tuple[FloatModel, IntegerModel, models.Split], tmp_path: Path
) -> None:
    float_model, int_model, split = digits
    int_model.save(tmp_path)
    loaded = IntegerModel.load(tmp_path)
    assert loaded.metadata == json.loads(json.dumps(int_model.metadata))
    x = int_model.quantize_input(split.test.x)
    np.testing.assert_array_equal(loaded.forward(x), int_model.forward(x))
    again = quantize(float_model, split.train.x)
    np.testing.assert_array_equal(again.forward(x), int_model.forward(x))  # deterministic


def test_maximum_calibration_never_saturates_the_input(digits: tuple[FloatModel, IntegerModel, models.Split]) -> None:
    float_model, _, split = digits
    int_model = quantize(float_model, split.train.x, percentile=100)
    assert int_model.input_scale == pytest.approx(np.abs(split.train.x).max() / 127)
    assert int_model.metadata["calibration"]["activation_range"] == "max"
    with pytest.raises(QuantizationError, match="percentile"):
        quantize(float_model, split.train.x, percentile=20)


@pytest.mark.parametrize("real", [1e-9, 3.3e-5, 0.0123, 0.5, 1.0, 7.77, 1000.0, 16383.0])
def test_fixed_point_multipliers_use_every_bit(real: float) -> None:
    multiplier, shift = fixed_point(real)
    assert 1 <= shift <= 63 and 2**14 <= multiplier < 2**15
    assert multiplier / 2**shift == pytest.approx(real, rel=2.0**-14)


@pytest.mark.parametrize("real", [0.0, -1.0, 2.0**14, 1e-30])
def test_fixed_point_refuses_what_does_not_fit(real: float) -> None:
    with pytest.raises(QuantizationError, match="requantization factor"):
        fixed_point(real)


def _single_layer(weights: np.ndarray, bias: np.ndarray) -> FloatModel:
    hidden = DenseLayer(weights, bias, relu=True)
    last = DenseLayer(np.ones((1, weights.shape[0]), np.float32), np.zeros(1, np.float32), relu=False)
    return FloatModel("x", (hidden, last), (HeadOutput("y", "identity"),))


def test_an_accumulator_that_could_overflow_int32_is_refused() -> None:
    features = 140_000  # 128 * 127 * 140000 > 2**31
    model = _single_layer(np.ones((1, features), np.float32), np.zeros(1, np.float32))
    with pytest.raises(QuantizationError, match="layer 0: the accumulator can reach"):
        quantize(model, np.ones((2, features), np.float32))


def test_a_bias_too_large_for_int32_is_refused() -> None:
    model = _single_layer(np.full((2, 3), 1e-6, np.float32), np.array([1e6, 0.0], np.float32))
    with pytest.raises(QuantizationError, match="does not fit int32"):
        quantize(model, np.full((4, 3), 1e-3, np.float32))


def test_bad_calibration_arrays_are_refused(digits: tuple[FloatModel, IntegerModel, models.Split]) -> None:
    float_model, _, split = digits
    with pytest.raises(CalibrationError, match="64 features"):
        quantize(float_model, split.train.x[:, :10])
    with pytest.raises(CalibrationError, match="NaN"):
        quantize(float_model, np.where(np.arange(64) == 5, np.nan, split.train.x[:3]))
    with pytest.raises(CalibrationError, match="no samples"):
        quantize(float_model, np.zeros((0, 64), np.float32))


# -- calibration files --------------------------------------------------------------------------------------------

X = np.arange(24, dtype=np.float32).reshape(6, 4) / 10
Y = np.array([0, 1, 2, 0, 1, 2])


def test_npy_npz_and_csv_files(tmp_path: Path) -> None:
    np.save(tmp_path / "inputs.npy", X.reshape(6, 2, 2))  # flattened to the model's features
    np.savez(tmp_path / "labelled.npz", x=X, y=Y)
    np.savez(tmp_path / "unlabelled.npz", x=X)
    (tmp_path / "labelled.csv").write_text(
        "a,b,c,d,label\n" + "".join(",".join(map(str, [*row, label])) + "\n" for row, label in zip(X, Y, strict=True))
    )
    (tmp_path / "plain.csv").write_text("".join(",".join(map(str, row)) + "\n" for row in X) + "\n")
    for name, labelled in [("inputs.npy", False), ("labelled.npz", True), ("unlabelled.npz", False),
                           ("labelled.csv", True), ("plain.csv", False)]:  # fmt: skip
        samples = load_samples(tmp_path / name, features=4)
        assert samples.x.dtype == np.float32 and samples.x.shape == (6, 4), name
        np.testing.assert_allclose(samples.x, X, err_msg=name)
        if labelled:
            assert samples.y is not None and samples.y.dtype == np.int64
            np.testing.assert_array_equal(samples.y, Y)
        else:
            assert samples.y is None, name


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        ("data.txt", lambda p: p.write_text("1,2"), "unknown data format '.txt'"),
        ("absent.npy", None, "no such file"),
        ("wide.npy", lambda p: np.save(p, np.zeros((3, 5))), "takes 4 features per sample, the data has [5]"),
        ("flat.npy", lambda p: np.save(p, np.zeros(4)), "expected inputs of shape (samples, 4)"),
        ("empty.npy", lambda p: np.save(p, np.zeros((0, 4))), "holds no samples"),
        ("nan.npy", lambda p: np.save(p, np.array([[0, 1, 2, 3], [0, np.nan, 0, 0]])), "first in sample 1"),
        ("text.npy", lambda p: np.save(p, np.array([["a"] * 4])), "inputs must be numbers"),
        ("other.npz", lambda p: np.savez(p, inputs=X), "needs an array named 'x'"),
        ("short.npz", lambda p: np.savez(p, x=X, y=Y[:3]), "one label per sample (6)"),
        ("ragged.csv", lambda p: p.write_text("1,2,3,4\n1,2,3\n"), "found rows of [3, 4] columns"),
        ("words.csv", lambda p: p.write_text("1,2,3,4\n1,x,3,4\n"), "every cell must be a number"),
        ("header.csv", lambda p: p.write_text("a,b,c,d\n"), "holds no samples"),
        ("broken.npz", lambda p: p.write_bytes(b"not a zip"), "cannot read it as .npz"),
    ],
)
def test_bad_files_say_what_to_fix(tmp_path: Path, name: str, write: object, message: str) -> None:
    path = tmp_path / name
    if callable(write):
        write(path)
    with pytest.raises(CalibrationError) as caught:
        load_samples(path, features=4)
    assert message in str(caught.value)


def test_split_is_reproducible_and_disjoint() -> None:
    samples = Samples(np.arange(100, dtype=np.float32).reshape(50, 2), np.arange(50))
    calibration, test = split(samples, 0.2, seed=7)
    assert (len(calibration), len(test)) == (40, 10)
    assert set(calibration.x[:, 0]) | set(test.x[:, 0]) == set(samples.x[:, 0])
    np.testing.assert_array_equal(test.x[:, 0] / 2, test.y)  # rows keep their labels
    again, _ = split(samples, 0.2, seed=7)
    np.testing.assert_array_equal(again.x, calibration.x)
    with pytest.raises(CalibrationError, match="too few"):
        split(Samples(samples.x[:1]), 0.5)
    with pytest.raises(CalibrationError, match="between 0 and 1"):
        split(samples, 1.0)


# -- the input transform ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scaled() -> tuple[FloatModel, IntegerModel, models.Split]:
    """StandardScaler + LogisticRegression on digits: the scaler is the input transform."""
    model, split = models.scaled_logistic_onnx()
    float_model = read_onnx(model)
    return float_model, quantize(float_model, split.train.x), split


def test_the_input_scale_is_calibrated_on_the_transformed_input(
    scaled: tuple[FloatModel, IntegerModel, models.Split],
) -> None:
    float_model, _, split = scaled
    int_model = quantize(float_model, split.train.x, percentile=100)
    assert int_model.input_scale == pytest.approx(np.abs(float_model.transform_input(split.train.x)).max() / 127)
    assert int_model.input_scale > 10 * np.abs(split.train.x).max() / 127  # standardized pixels reach tens
    for ours, theirs in [
        (int_model.input_offset, float_model.input_offset),
        (int_model.input_gain, float_model.input_gain),
    ]:
        assert ours is not None and theirs is not None
        np.testing.assert_array_equal(ours, theirs)


def test_quantize_input_applies_the_transform_then_the_scale(
    scaled: tuple[FloatModel, IntegerModel, models.Split],
) -> None:
    _, int_model, split = scaled
    assert int_model.input_offset is not None and int_model.input_gain is not None
    x = split.test.x.astype(np.float64)
    by_hand = np.rint((x - int_model.input_offset) * int_model.input_gain / int_model.input_scale)
    q = int_model.quantize_input(split.test.x)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, np.clip(by_hand, -128, 127))


def test_the_input_transform_is_saved_and_loaded_exactly(
    scaled: tuple[FloatModel, IntegerModel, models.Split], tmp_path: Path
) -> None:
    _, int_model, split = scaled
    int_model.save(tmp_path)
    loaded = IntegerModel.load(tmp_path)
    for ours, saved in [(loaded.input_offset, int_model.input_offset), (loaded.input_gain, int_model.input_gain)]:
        assert ours is not None and saved is not None
        assert ours.tobytes() == saved.tobytes()  # bit for bit
    np.testing.assert_array_equal(loaded.quantize_input(split.test.x), int_model.quantize_input(split.test.x))


def test_a_file_without_the_input_transform_loads_as_the_identity(
    digits: tuple[FloatModel, IntegerModel, models.Split], tmp_path: Path
) -> None:
    """integer_model.json written before the input transform existed has no such keys."""
    _, int_model, split = digits
    assert int_model.input_offset is None and int_model.input_gain is None
    int_model.save(tmp_path)
    description = json.loads((tmp_path / "integer_model.json").read_text())
    assert description["input_offset"] is None and description["input_gain"] is None
    del description["input_offset"], description["input_gain"]
    (tmp_path / "integer_model.json").write_text(json.dumps(description))
    loaded = IntegerModel.load(tmp_path)
    assert loaded.input_offset is None and loaded.input_gain is None
    x = split.test.x
    np.testing.assert_array_equal(loaded.quantize_input(x), np.clip(np.rint(x / int_model.input_scale), -128, 127))


@pytest.mark.parametrize(
    ("offset", "gain", "message"),
    [
        (np.zeros(3), None, "the input offset has shape [3]; it must hold one value per input (64)"),
        (None, np.ones((1, 64)), "the input gain has shape [1, 64]"),
        (None, np.where(np.arange(64) == 9, np.inf, 1.0), "the input gain holds a value that is not finite"),
        (np.full(64, np.nan), None, "the input offset holds a value that is not finite"),
    ],
)
def test_an_input_transform_of_the_wrong_shape_or_not_finite_is_refused(
    digits: tuple[FloatModel, IntegerModel, models.Split],
    offset: np.ndarray | None,
    gain: np.ndarray | None,
    message: str,
) -> None:
    float_model, int_model, _ = digits
    with pytest.raises(QuantizationError) as caught:
        dataclasses.replace(int_model, input_offset=offset, input_gain=gain)
    assert message in str(caught.value)
    with pytest.raises(UnsupportedModelError) as refused:
        dataclasses.replace(float_model, input_offset=offset, input_gain=gain)
    assert message in str(refused.value)

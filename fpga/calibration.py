"""Calibration and test data for quantization: `.npy` (inputs), `.npz` (`x` and optional `y`) or `.csv`.

The quantizer sets every activation scale from these samples, so a file that is subtly wrong (a transposed array,
a NaN, a header read as data) would give a quietly bad integer model; every such case is refused here instead.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edgewise.fpga.errors import CalibrationError

FORMATS = (".npy", ".npz", ".csv")


@dataclass(frozen=True, slots=True)
class Samples:
    """Model inputs `x` (float32, (N, features)) and, for a test set, their labels `y` (N,)."""

    x: np.ndarray
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_samples(path: Path, *, features: int) -> Samples:
    """Reads samples for a model of `features` inputs; `CalibrationError` says what to fix in the file."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise CalibrationError(f"{path}: unknown data format '{path.suffix}'; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise CalibrationError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".csv":
            x, y = _read_csv(path, features)
        elif path.suffix.lower() == ".npz":
            x, y = _read_npz(path)
        else:
            x, y = np.load(path, allow_pickle=False), None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise CalibrationError(f"{path}: cannot read it as {path.suffix}: {error}") from error
    return make_samples(x, y, features=features, source=str(path))


def make_samples(x: np.ndarray, y: np.ndarray | None = None, *, features: int, source: str = "data") -> Samples:
    """Checks and normalises arrays: inputs flattened to (N, features) float32, integral labels as int64."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise CalibrationError(f"{source}: inputs must be numbers, not {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise CalibrationError(
            f"{source}: expected inputs of shape (samples, {features}), got {list(x.shape)}"
            + ("; it holds no samples" if x.size == 0 else "")
        )
    if int(np.prod(x.shape[1:])) != features:
        raise CalibrationError(
            f"{source}: the model takes {features} features per sample, the data has {list(x.shape[1:])}"
        )
    x = x.reshape(x.shape[0], features).astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise CalibrationError(f"{source}: {int(bad.sum())} values are NaN or infinite (first in sample {row})")
    return Samples(x, None if y is None else _labels(np.asarray(y), len(x), source))


def _labels(y: np.ndarray, count: int, source: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (count,):
        raise CalibrationError(f"{source}: expected one label per sample ({count}), got labels of shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise CalibrationError(f"{source}: some labels are NaN or infinite")
        if np.array_equal(y, np.round(y)):
            return y.astype(np.int64)
    return y


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as arrays:
        if "x" not in arrays.files:
            found = ", ".join(arrays.files) or "none"
            raise CalibrationError(f"{path}: an .npz file needs an array named 'x' (and optionally 'y'); found {found}")
        return arrays["x"], (arrays["y"] if "y" in arrays.files else None)


def _read_csv(path: Path, features: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Numbers only, one sample a row, with an optional header; a column beyond `features` holds the label."""
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise CalibrationError(f"{path}: the file holds no samples")
    widths = {len(row) for row in rows}
    if len(widths) != 1 or widths.pop() not in (features, features + 1):
        raise CalibrationError(
            f"{path}: every row must have {features} feature columns, optionally followed by a label column; "
            f"found rows of {sorted({len(row) for row in rows})} columns"
        )
    try:
        table = np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError as error:
        raise CalibrationError(f"{path}: every cell must be a number ({error})") from error
    if table.shape[1] == features + 1:
        return table[:, :features], table[:, features]
    return table, None


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def split(samples: Samples, test_fraction: float, seed: int = 0) -> tuple[Samples, Samples]:
    """(calibration, test) from one file, shuffled with `seed` so that the split is reproducible."""
    if not 0.0 < test_fraction < 1.0:
        raise CalibrationError(f"the test fraction must be between 0 and 1, not {test_fraction}")
    count = len(samples)
    tests = round(count * test_fraction)
    if tests == 0 or tests == count:
        raise CalibrationError(f"{count} samples are too few to split with a test fraction of {test_fraction}")
    order = np.random.default_rng(seed).permutation(count)

    def take(part: np.ndarray) -> Samples:
        return Samples(samples.x[part], None if samples.y is None else samples.y[part])

    return take(order[tests:]), take(order[:tests])

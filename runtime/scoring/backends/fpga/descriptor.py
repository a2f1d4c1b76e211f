"""`fpga.json`, the descriptor of an FPGA model version (docs/fpga.md), read and checked field by field.

Every error names the file and the field, because a descriptor is written by the compiler and read on a
device far away: the message is all an operator gets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgewise.runtime.scoring.backends.fpga.head import HEAD_OPS
from edgewise.runtime.scoring.errors import ModelLoadError

FORMAT = "edgewise.fpga/1"
INPUT_DATATYPES = ("FP16", "FP32", "FP64")
FLOAT_OUTPUT_DATATYPES = ("FP32", "FP64")
LABEL_DATATYPES = ("INT64", "BYTES")


@dataclass(frozen=True, slots=True)
class HeadSpec:
    """One served output: `op` applied on the host to the dequantized last layer."""

    name: str
    op: str
    datatype: str
    labels: tuple[int, ...] | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FpgaDescriptor:
    path: Path
    input_name: str
    input_datatype: str
    input_shape: tuple[int, ...]  # -1 is any size; the last dimension is in_features
    input_scale: float
    output_scale: float
    in_features: int
    out_features: int
    outputs: tuple[HeadSpec, ...]
    design_source: Path  # absolute
    design_include: Path  # absolute
    top: str
    bitstream: Path  # absolute; what a board driver programs (the virtual FPGA does not read it)
    device: str
    parallelism: int
    clock_hz: int
    # The input transform (x - offset) * gain applied before `input_scale`, float64 (in_features,); None is the
    # identity. It is a model's leading scaler, computed on the host so that the int8 input carries its output.
    input_offset: np.ndarray | None = None
    input_gain: np.ndarray | None = None


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, problem: str) -> ModelLoadError:
        return ModelLoadError(f"{self.path}: field {field!r} {problem}")

    def get(self, raw: dict[str, Any], key: str, field: str) -> Any:
        if key not in raw:
            raise self.fail(field, "is missing")
        return raw[key]

    def object(self, raw: dict[str, Any], key: str, field: str) -> dict[str, Any]:
        value = self.get(raw, key, field)
        if not isinstance(value, dict):
            raise self.fail(field, "must be a JSON object")
        return value

    def text(self, raw: dict[str, Any], key: str, field: str) -> str:
        value = self.get(raw, key, field)
        if not isinstance(value, str) or not value:
            raise self.fail(field, "must be a non-empty string")
        return value

    def positive_int(self, raw: dict[str, Any], key: str, field: str) -> int:
        value = self.get(raw, key, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(field, f"must be a positive integer, not {value!r}")
        return value

    def scale(self, raw: dict[str, Any], key: str, field: str) -> float:
        value = self.get(raw, key, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise self.fail(field, f"must be a positive finite number, not {value!r}")
        return float(value)

    def choice(self, raw: dict[str, Any], key: str, field: str, allowed: tuple[str, ...]) -> str:
        value = self.get(raw, key, field)
        if value not in allowed:
            raise self.fail(field, f"is {value!r}; use one of {', '.join(allowed)}")
        return str(value)

    def inside(self, folder: Path, raw: dict[str, Any], key: str, field: str) -> Path:
        """A path relative to the version folder that stays inside it."""
        relative = self.text(raw, key, field)
        target = (folder / relative).resolve()
        if Path(relative).is_absolute() or not target.is_relative_to(folder.resolve()):
            raise self.fail(field, f"must be a path inside the version folder, not {relative!r}")
        return target


def _shape(reader: _Reader, raw: dict[str, Any], in_features: int) -> tuple[int, ...]:
    value = reader.get(raw, "shape", "input.shape")
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(d, bool) or not isinstance(d, int) or (d < 1 and d != -1) for d in value)
    ):
        raise reader.fail("input.shape", f"must be a list of positive sizes or -1, not {value!r}")
    if value[-1] != in_features:
        raise reader.fail("input.shape", f"ends in {value[-1]}, but in_features is {in_features}")
    return tuple(value)


def _per_feature(reader: _Reader, raw: dict[str, Any], key: str, field: str, in_features: int) -> np.ndarray | None:
    """An optional list of `in_features` finite numbers, as a read-only float64 array."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != in_features:
        found = f"{len(value)} values" if isinstance(value, list) else repr(value)
        raise reader.fail(field, f"must be a list of {in_features} numbers (one per input feature), not {found}")
    for index, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise reader.fail(field, f"must hold finite numbers; entry {index} is {number!r}")
    vector = np.array(value, dtype=np.float64)
    vector.flags.writeable = False
    return vector


def _head(reader: _Reader, raw: Any, index: int, out_features: int) -> HeadSpec:
    where = f"outputs[{index}]"
    if not isinstance(raw, dict):
        raise reader.fail(where, "must be a JSON object")
    name = reader.text(raw, "name", f"{where}.name")
    op = reader.choice(raw, "op", f"{where}.op", HEAD_OPS)
    labels = raw.get("labels", [])
    if not isinstance(labels, list):
        raise reader.fail(f"{where}.labels", "must be a list")
    if op != "argmax":
        datatype = reader.choice(raw, "datatype", f"{where}.datatype", FLOAT_OUTPUT_DATATYPES)
        if labels:
            raise reader.fail(f"{where}.labels", f"applies to argmax only, not to {op}")
        return HeadSpec(name, op, datatype, ())
    datatype = reader.choice(raw, "datatype", f"{where}.datatype", LABEL_DATATYPES)
    if labels and len(labels) != out_features:
        raise reader.fail(f"{where}.labels", f"has {len(labels)} labels for {out_features} outputs")
    if datatype == "BYTES":
        if not labels or not all(isinstance(label, str) for label in labels):
            raise reader.fail(f"{where}.labels", "must be one string per output for a BYTES argmax")
        return HeadSpec(name, op, datatype, tuple(str(label) for label in labels))
    if not all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
        raise reader.fail(f"{where}.labels", "must be integers for an INT64 argmax (strings need BYTES)")
    return HeadSpec(name, op, datatype, tuple(int(label) for label in labels))


def read_descriptor(path: Path) -> FpgaDescriptor:
    """Parse and check `fpga.json`; paths in it are relative to its folder and must exist where needed."""
    reader = _Reader(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    found = raw.get("format")
    if found != FORMAT:
        raise reader.fail("format", f"is {found!r}; this server reads {FORMAT!r}")
    in_features = reader.positive_int(raw, "in_features", "in_features")
    out_features = reader.positive_int(raw, "out_features", "out_features")
    tensor = reader.object(raw, "input", "input")
    heads = reader.get(raw, "outputs", "outputs")
    if not isinstance(heads, list) or not heads:
        raise reader.fail("outputs", "must be a non-empty list")
    outputs = tuple(_head(reader, head, index, out_features) for index, head in enumerate(heads))
    names = [head.name for head in outputs]
    if len(set(names)) != len(names):
        raise reader.fail("outputs", f"names each output once, not {names}")
    folder = path.parent
    design = reader.object(raw, "design", "design")
    source = reader.inside(folder, design, "cxxrtl", "design.cxxrtl")
    if not source.is_file():
        raise reader.fail("design.cxxrtl", f"names {source}, which does not exist")
    include = reader.inside(folder, design, "include", "design.include")
    if not (include / "cxxrtl" / "cxxrtl.h").is_file():
        raise reader.fail("design.include", f"names {include}, which lacks the CXXRTL headers (cxxrtl/cxxrtl.h)")
    return FpgaDescriptor(
        path=path,
        input_name=reader.text(tensor, "name", "input.name"),
        input_datatype=reader.choice(tensor, "datatype", "input.datatype", INPUT_DATATYPES),
        input_shape=_shape(reader, tensor, in_features),
        input_scale=reader.scale(tensor, "scale", "input.scale"),
        output_scale=reader.scale(raw, "output_scale", "output_scale"),
        in_features=in_features,
        out_features=out_features,
        outputs=outputs,
        design_source=source,
        design_include=include,
        top=reader.text(design, "top", "design.top"),
        bitstream=reader.inside(folder, raw, "bitstream", "bitstream"),
        device=reader.text(raw, "device", "device"),
        parallelism=reader.positive_int(raw, "parallelism", "parallelism"),
        clock_hz=reader.positive_int(raw, "clock_hz", "clock_hz"),
        input_offset=_per_feature(reader, tensor, "offset", "input.offset", in_features),
        input_gain=_per_feature(reader, tensor, "gain", "input.gain", in_features),
    )

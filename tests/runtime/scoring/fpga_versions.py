"""FPGA model version folders for the scoring tests, laid out as docs/fpga.md describes them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from edgewise.fpga.cxxrtl import CxxrtlSource
from edgewise.fpga.toolchain import CACHE_ENV, Toolchain

CONFIG = {"backend": "fpga", "default_model_filename": "fpga.json", "max_batch_size": 0}


def toolchain() -> Toolchain:
    """The YoWASP tools with the same cache as tests/fpga's `toolchain` fixture."""
    return Toolchain(Path(os.environ.get(CACHE_ENV) or f"/tmp/edgewise-fpga-cache-{os.getuid()}"))


def descriptor(
    *,
    in_features: int,
    out_features: int,
    input_scale: float,
    output_scale: float,
    outputs: list[dict[str, Any]],
    input_name: str = "input",
    parallelism: int = 8,
    input_offset: list[float] | None = None,
    input_gain: list[float] | None = None,
) -> dict[str, Any]:
    """The `fpga.json` of docs/fpga.md; the input transform only when given."""
    tensor: dict[str, Any] = {"name": input_name, "datatype": "FP32", "shape": [-1, in_features], "scale": input_scale}
    if input_offset is not None:
        tensor["offset"] = input_offset
    if input_gain is not None:
        tensor["gain"] = input_gain
    return {
        "format": "edgewise.fpga/1",
        "input": tensor,
        "output_scale": output_scale,
        "in_features": in_features,
        "out_features": out_features,
        "outputs": outputs,
        "design": {"cxxrtl": "design/design.cc", "include": "design/include", "top": "top"},
        "bitstream": "bitstream.bin",
        "device": "up5k",
        "parallelism": parallelism,
        "clock_hz": 48_000_000,
    }


def write_version(version_dir: Path, design: CxxrtlSource, fields: dict[str, Any]) -> Path:
    """`version_dir/fpga.json` and `version_dir/design/` (design.cc and the CXXRTL runtime headers)."""
    target = version_dir / "design"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(design.source, target / "design.cc")
    shutil.copytree(design.include_dir, target / "include", dirs_exist_ok=True)
    path = version_dir / "fpga.json"
    path.write_text(json.dumps(fields, indent=2))
    return path


def write_config(model_dir: Path, **overrides: Any) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps({**CONFIG, **overrides}))

"""The whole FPGA flow for one model: ONNX → integer model → verified design → bitstream → image files.

Each step checks what the next relies on: quantization is measured against the float model on held-out data,
the design is simulated against the integer reference before anything is built, and the bitstream comes from a
template of the same architecture with the model's weights patched into its block RAM. A template is built
once per architecture (layer shapes, ReLU flags, parallelism, device, clock) and kept in `templates`, so the
second model of an architecture costs an icebram patch instead of a place-and-route run.

The output folder is a model version folder as docs/fpga.md describes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.fpga.accuracy import evaluate
from edgewise.fpga.calibration import Samples, load_samples, split
from edgewise.fpga.frontend import read_onnx
from edgewise.fpga.ir import IntegerModel
from edgewise.fpga.quantize import quantize
from edgewise.fpga.toolchain import Toolchain

Progress = Callable[[float, str], None]
DESCRIPTOR = "fpga.json"
FORMAT = "edgewise.fpga/1"
VERIFY_ROWS = 16  # inferences simulated in Amaranth's simulator before building (about 100 per second)
TEST_FRACTION = 0.5  # of a labelled calibration file, held out for the accuracy report


@dataclass(frozen=True, kw_only=True)
class CompileOptions:
    model_name: str
    device: str = "up5k"
    parallelism: int = 8
    clock_hz: float = 48e6


@dataclass(frozen=True, kw_only=True)
class CompiledModel:
    integer_model: IntegerModel
    details: dict[str, Any]  # the report: resources, Fmax, cycles, accuracy, how the bitstream was made, timings


def _quiet(fraction: float, message: str) -> None:
    del fraction, message


def architecture_key(model: IntegerModel, options: CompileOptions) -> str:
    """What a bitstream's logic depends on; models with equal keys differ only in block RAM contents."""
    described = {
        "layers": [list(layer) for layer in model.architecture],
        "parallelism": options.parallelism,
        "device": options.device,
        "clock_hz": options.clock_hz,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def compile_model(
    onnx_model: bytes,
    options: CompileOptions,
    *,
    calibration: Path,
    toolchain: Toolchain,
    out_dir: Path,
    workdir: Path,
    templates: Path,
    progress: Progress = _quiet,
) -> CompiledModel:
    """Compile `onnx_model` into `out_dir`; raises the FpgaError subclass of the step that failed."""
    from edgewise.fpga.build import load_or_build_template, patch_bitstream, write_rtl
    from edgewise.fpga.cxxrtl import write_cxxrtl
    from edgewise.fpga.hdl import Accelerator
    from edgewise.fpga.sim import verify

    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        timings[name] = round(now - started, 3)
        started = now

    progress(0.0, "reading the ONNX graph")
    float_model = read_onnx(onnx_model)
    samples = load_samples(calibration, features=float_model.in_features)
    calibration_set, test_set = _calibration_and_test(samples)
    progress(0.05, f"quantizing with {len(calibration_set.x)} calibration samples")
    integer_model = quantize(float_model, calibration_set.x)
    accuracy = evaluate(float_model, integer_model, test_set)
    lap("quantize")

    progress(0.1, f"simulating the design on {min(VERIFY_ROWS, len(test_set.x))} inputs")
    rows = integer_model.quantize_input(test_set.x[:VERIFY_ROWS])
    simulated = verify(integer_model, parallelism=options.parallelism, inputs=rows)
    lap("simulate")

    key = architecture_key(integer_model, options)
    progress(0.2, f"building the bitstream template {key[:12]} (Yosys, nextpnr, icepack) unless it is cached")
    workdir.mkdir(parents=True, exist_ok=True)
    template, reused = load_or_build_template(
        integer_model,
        parallelism=options.parallelism,
        device=options.device,
        clock_hz=options.clock_hz,
        toolchain=toolchain,
        folder=templates / key,
        workdir=workdir / "template",
    )
    lap("template")
    progress(0.8, "patching the weights into the bitstream's block RAM (icebram)")
    out_dir.mkdir(parents=True, exist_ok=True)
    bitstream = patch_bitstream(template, integer_model, toolchain=toolchain, workdir=workdir / "patch")
    shutil.copyfile(bitstream, out_dir / "bitstream.bin")
    lap("patch")

    progress(0.85, "writing the RTL and the virtual FPGA's C++ (CXXRTL)")
    design = Accelerator(integer_model, parallelism=options.parallelism)
    write_cxxrtl(design, toolchain=toolchain, out_dir=out_dir / "design")
    (out_dir / "rtl").mkdir(exist_ok=True)
    rtl = write_rtl(
        integer_model,
        parallelism=options.parallelism,
        toolchain=toolchain,
        workdir=workdir / "rtl",
        clock_hz=options.clock_hz,
    )  # the board design with this model's memory contents (the template's holds random ones)
    shutil.copyfile(rtl, out_dir / "rtl" / "top.v")
    lap("cxxrtl")

    integer_model.save(out_dir)
    report = template.report
    cycles = int(max(simulated.cycles))
    details: dict[str, Any] = {
        "device": options.device,
        "parallelism": options.parallelism,
        "architecture": key,
        "build": "patched template" if reused else "full build, then patched",
        "resources": {name: list(pair) for name, pair in report.resources.items()},
        "fmax_mhz": report.fmax_mhz,
        "target_mhz": options.clock_hz / 1e6,
        "cycles": cycles,
        "latency_us": round(cycles / options.clock_hz * 1e6, 3),
        "accuracy": accuracy.to_json(),
        "timings_s": timings,
    }
    _write_descriptor(out_dir, integer_model, options, float_model.input_name)
    (out_dir / "report.json").write_text(json.dumps(details, indent=2, sort_keys=True) + "\n")
    progress(1.0, "done")
    return CompiledModel(integer_model=integer_model, details=details)


def _calibration_and_test(samples: Samples) -> tuple[Samples, Samples]:
    """With labels, hold out part of the file for the accuracy report; without, both use every sample."""
    if samples.y is None or len(samples.x) < 4:
        return samples, samples
    return split(samples, TEST_FRACTION, seed=0)


def _write_descriptor(out_dir: Path, model: IntegerModel, options: CompileOptions, input_name: str) -> None:
    """`fpga.json`; the input transform's float64 values as JSON numbers, which the device reads back exactly."""
    tensor: dict[str, Any] = {
        "name": input_name,
        "datatype": "FP32",
        "shape": [-1, model.in_features],
        "scale": model.input_scale,
    }
    if model.input_offset is not None:
        tensor["offset"] = model.input_offset.tolist()
    if model.input_gain is not None:
        tensor["gain"] = model.input_gain.tolist()
    descriptor = {
        "format": FORMAT,
        "input": tensor,
        "output_scale": model.output_scale,
        "in_features": model.in_features,
        "out_features": model.out_features,
        "outputs": [output.to_json() for output in model.head],
        "design": {"cxxrtl": "design/design.cc", "include": "design/include", "top": "top"},
        "bitstream": "bitstream.bin",
        "device": options.device,
        "parallelism": options.parallelism,
        "clock_hz": int(options.clock_hz),
    }
    (out_dir / DESCRIPTOR).write_text(json.dumps(descriptor, indent=2) + "\n")


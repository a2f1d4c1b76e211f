"""FPGA benchmark: a 16-32-32-5 int8 MLP on the iCE40 UP5K with P = 8.

Prints one JSON document:
- cycles per inference (simulated, and on the virtual FPGA) and the achieved Fmax from nextpnr (targets: ≤ 300
  cycles at ≥ 48 MHz, ≤ 50% of the logic cells);
- build time with warm tool caches: a full Yosys → nextpnr → icepack build, and the whole `compile_model` of a
  second model of the same architecture, which patches the template;
- weight-patch time with icebram (target ≤ 1 s), beside the full build it replaces;
- simulation speed of the CXXRTL design against Amaranth's simulator on the same design in this run
  (target ≥ 500 times).

Run with `make bench-fpga`. Nothing leaves 127.0.0.1 (nothing here uses the network at all).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgewise.fpga.build import build_template, timed_patch  # noqa: E402
from edgewise.fpga.calibration import Samples  # noqa: E402
from edgewise.fpga.compiler import CompileOptions, compile_model  # noqa: E402
from edgewise.fpga.cxxrtl import write_cxxrtl  # noqa: E402
from edgewise.fpga.frontend import read_onnx  # noqa: E402
from edgewise.fpga.hdl import Accelerator  # noqa: E402
from edgewise.fpga.quantize import quantize  # noqa: E402
from edgewise.fpga.sim import simulate  # noqa: E402
from edgewise.fpga.toolchain import Toolchain  # noqa: E402
from edgewise.runtime.scoring.backends.fpga.virtual import VirtualFpga  # noqa: E402
from tests.fpga.models import mlp_16_32_32_5_onnx  # noqa: E402

PARALLELISM = 8
CLOCK_HZ = 48e6
TARGETS = {"cycles": 300, "fmax_mhz": 48.0, "lc_fraction": 0.5, "patch_s": 1.0, "sim_ratio": 500.0}


def _model(seed: int) -> tuple[bytes, Samples]:
    onnx_bytes, x, y = mlp_16_32_32_5_onnx(seed)
    return onnx_bytes, Samples(x=np.asarray(x, dtype=np.float32), y=np.asarray(y))


def _simulation_speeds(model: Any, work: Path, toolchain: Toolchain, inferences: int) -> dict[str, Any]:
    """Amaranth's simulator and the CXXRTL build of the same Accelerator, on the same random inputs."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(-128, 128, size=(inferences, model.in_features)).astype(np.int8)
    started = time.perf_counter()
    amaranth = simulate(model, parallelism=PARALLELISM, inputs=inputs[: max(1, inferences // 50)])
    amaranth_s = time.perf_counter() - started
    amaranth_cycles = int(sum(amaranth.cycles))

    design = Accelerator(model, parallelism=PARALLELISM)
    source = write_cxxrtl(design, toolchain=toolchain, out_dir=work / "cxxrtl")
    started = time.perf_counter()
    fpga = VirtualFpga.build(
        source.source, source.include_dir, in_features=model.in_features, out_features=model.out_features,
        cache=work / "virtual-fpga",
    )  # fmt: skip
    compile_s = time.perf_counter() - started
    try:
        cycles = 0
        started = time.perf_counter()
        for row in inputs:
            out, taken = fpga.run(row)
            cycles += taken
        cxxrtl_s = time.perf_counter() - started
        expected = model.forward(inputs[-1:])[0]
        if out.tolist() != expected.tolist():
            raise SystemExit("the virtual FPGA disagrees with the integer reference")
    finally:
        fpga.close()
    amaranth_rate = amaranth_cycles / amaranth_s
    cxxrtl_rate = cycles / cxxrtl_s
    return {
        "cycles_per_inference": {
            "amaranth_sim": amaranth.cycles_per_inference,
            "cxxrtl": cycles // len(inputs),
        },
        "amaranth_cycles_per_s": round(amaranth_rate),
        "cxxrtl_cycles_per_s": round(cxxrtl_rate),
        "cxxrtl_compile_s": round(compile_s, 2),
        "ratio_cxxrtl_vs_amaranth": round(cxxrtl_rate / amaranth_rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inferences", type=int, default=2000, help="virtual FPGA inferences to time")
    parser.add_argument("--patches", type=int, default=5, help="weight patches to time")
    args = parser.parse_args()
    toolchain = Toolchain.default()
    toolchain.run("yosys", ["-V"], cwd=Path.cwd())  # warm the WebAssembly caches before timing anything
    toolchain.run("nextpnr-ice40", ["--version"], cwd=Path.cwd())

    first_bytes, first_samples = _model(0)
    second_bytes, second_samples = _model(1)
    first = quantize(read_onnx(first_bytes), first_samples.x)
    second = quantize(read_onnx(second_bytes), second_samples.x)
    with tempfile.TemporaryDirectory(prefix="edgewise-bench-fpga-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        template = build_template(
            first, parallelism=PARALLELISM, toolchain=toolchain, workdir=work / "full", clock_hz=CLOCK_HZ
        )
        full_build_s = time.perf_counter() - started
        patch_times = []
        for index in range(args.patches):
            model = second if index % 2 == 0 else first
            _bitstream, seconds = timed_patch(template, model, toolchain, work / f"patch-{index}")
            patch_times.append(seconds)
        patch_s = float(np.median(patch_times))

        calibration = work / "calibration.npz"
        np.savez(calibration, x=second_samples.x, y=second_samples.y)
        templates = work / "templates"
        started = time.perf_counter()
        compiled = compile_model(
            second_bytes,
            CompileOptions(model_name="bench", parallelism=PARALLELISM, clock_hz=CLOCK_HZ),
            calibration=calibration, toolchain=toolchain, out_dir=work / "image", workdir=work / "compile",
            templates=templates,
        )  # fmt: skip
        first_compile_s = time.perf_counter() - started
        started = time.perf_counter()
        compile_model(
            second_bytes,
            CompileOptions(model_name="bench", parallelism=PARALLELISM, clock_hz=CLOCK_HZ),
            calibration=calibration, toolchain=toolchain, out_dir=work / "image-2",
            workdir=work / "compile-2", templates=templates,
        )  # fmt: skip
        warm_compile_s = time.perf_counter() - started
        speeds = _simulation_speeds(second, work, toolchain, args.inferences)

    report = template.report
    lc_used, lc_available = report.resources["ICESTORM_LC"]
    cycles = int(compiled.details["cycles"])
    figures: dict[str, Any] = {
        "model": "16-32-32-5 int8 MLP",
        "device": "up5k",
        "parallelism": PARALLELISM,
        "cycles_per_inference": cycles,
        "fmax_mhz": round(report.fmax_mhz, 2),
        "target_mhz": CLOCK_HZ / 1e6,
        "resources": {name: list(pair) for name, pair in report.resources.items()},
        "lc_fraction": round(lc_used / lc_available, 3),
        "latency_us_at_fmax": round(cycles / report.fmax_mhz, 3),
        "accuracy": compiled.details["accuracy"],
        "build_s": {
            "full_build_yosys_nextpnr_icepack": round(full_build_s, 2),
            "full_build_tools": template.timings,
            "compile_model_with_new_template": round(first_compile_s, 2),
            "compile_model_warm_template": round(warm_compile_s, 2),
        },
        "weight_patch_s": {"median": round(patch_s, 3), "all": [round(t, 3) for t in patch_times]},
        "ratio_patch_vs_full_build": round(patch_s / full_build_s, 4),
        "simulation": speeds,
    }
    figures["targets"] = {
        "cycles<=300": cycles <= TARGETS["cycles"],
        "fmax>=48MHz": report.fmax_mhz >= TARGETS["fmax_mhz"],
        "lc<=50%": lc_used / lc_available <= TARGETS["lc_fraction"],
        "patch<=1s": patch_s <= TARGETS["patch_s"],
        "cxxrtl>=500x_amaranth": speeds["ratio_cxxrtl_vs_amaranth"] >= TARGETS["sim_ratio"],
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

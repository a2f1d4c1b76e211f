"""A full bitstream build: Amaranth's ICEBreaker platform writes the files, the YoWASP tools turn them into one.

`platform.build(top, do_build=False)` gives Amaranth's IceStorm build plan (RTLIL, the Yosys script with
`synth_ice40 -dsp`, the PCF); its three commands are then run here through `Toolchain.run` rather than the plan's
shell script, so that every tool gets the toolchain's environment and cache, its own timing, and its output on
failure (nextpnr's "device has only ..." message is what a model that does not fit fails with). nextpnr also
writes its JSON report (`--report`), which becomes the `ResourceReport`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgewise.fpga.build.board import ICEBreakerTop, PllSettings
from edgewise.fpga.build.report import ResourceReport, parse_report, raise_if_too_large
from edgewise.fpga.errors import ToolchainError
from edgewise.fpga.hdl import Accelerator, MemoryImage, MemoryInit
from edgewise.fpga.hdl.uart import UartBridge, divisor_for
from edgewise.fpga.ir import IntegerModel
from edgewise.fpga.toolchain import Toolchain

NAME = "top"
DEFAULT_BAUD = 1_000_000
DEVICES = {"up5k": ("--up5k", "sg48")}


@dataclass(frozen=True, slots=True)
class BuildResult:
    """A built bitstream and what the image and a later weight patch need from the build."""

    bitstream: Path  # the .bin a board is programmed with
    asc: Path  # the placed and routed design as text; icebram patches this
    rtl: Path  # Verilog of the whole board design, as Yosys read it
    report: ResourceReport
    timings: dict[str, float]  # seconds: elaborate, yosys, nextpnr-ice40, icepack
    images: dict[str, MemoryImage]  # the memory contents built in
    architecture: tuple[tuple[int, int, bool], ...]
    parallelism: int
    device: str
    clock_hz: float  # the PLL's actual frequency
    baud: int


def build_bitstream(
    model: IntegerModel,
    *,
    parallelism: int,
    toolchain: Toolchain,
    workdir: Path,
    device: str = "up5k",
    clock_hz: float = 48e6,
    memory_init: MemoryInit = "model",
    baud: int = DEFAULT_BAUD,
    seed: int = 1,
) -> BuildResult:
    """Synthesize, place, route and pack the accelerator for `model` behind the ICEBreaker's UART."""
    if device not in DEVICES:
        raise ToolchainError(f"device {device!r} is not supported; supported: {', '.join(DEVICES)}", tool="nextpnr")
    device_flag, package = DEVICES[device]
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    pll, accelerator = _prepare(model, parallelism, memory_init, clock_hz, baud, workdir)
    timings["elaborate"] = time.perf_counter() - started

    report_path = workdir / "report.json"
    report_path.unlink(missing_ok=True)
    _timed(timings, "yosys", toolchain, ["-q", "-l", f"{NAME}.rpt", f"{NAME}.ys"], workdir)
    nextpnr_args = [
        "--quiet", "--log", f"{NAME}.tim", device_flag, "--package", package,
        "--json", f"{NAME}.json", "--pcf", f"{NAME}.pcf", "--asc", f"{NAME}.asc",
        "--report", report_path.name, "--freq", f"{pll.frequency / 1e6:g}", "--seed", str(seed),
        "--timing-allow-fail",
    ]  # fmt: skip
    try:
        _timed(timings, "nextpnr-ice40", toolchain, nextpnr_args, workdir)
    except ToolchainError as error:
        log = workdir / f"{NAME}.tim"
        raise_if_too_large((log.read_text(errors="replace") if log.exists() else "") + "\n" + error.output)
        raise
    _timed(timings, "icepack", toolchain, [f"{NAME}.asc", f"{NAME}.bin"], workdir)
    report = parse_report(report_path, target_hz=pll.frequency)
    return BuildResult(
        bitstream=workdir / f"{NAME}.bin",
        asc=workdir / f"{NAME}.asc",
        rtl=workdir / f"{NAME}.v",
        report=report,
        timings=timings,
        images=dict(accelerator.images),
        architecture=model.architecture,
        parallelism=parallelism,
        device=device,
        clock_hz=pll.frequency,
        baud=baud,
    )


def _timed(timings: dict[str, float], tool: str, toolchain: Toolchain, args: list[str], cwd: Path) -> None:
    started = time.perf_counter()
    toolchain.run(tool, args, cwd=cwd)
    timings[tool] = time.perf_counter() - started


def write_rtl(
    model: IntegerModel,
    *,
    parallelism: int,
    toolchain: Toolchain,
    workdir: Path,
    clock_hz: float = 48e6,
    baud: int = DEFAULT_BAUD,
) -> Path:
    """Verilog of the board design with `model`'s memory contents (a template's RTL holds random ones)."""
    workdir.mkdir(parents=True, exist_ok=True)
    _prepare(model, parallelism, "model", clock_hz, baud, workdir)
    toolchain.run("yosys", ["-q", "-p", f"read_rtlil {NAME}.il; proc; write_verilog -noattr {NAME}.v"], cwd=workdir)
    return workdir / f"{NAME}.v"


def _prepare(
    model: IntegerModel, parallelism: int, memory_init: MemoryInit, clock_hz: float, baud: int, workdir: Path
) -> tuple[PllSettings, Accelerator]:
    """Amaranth's build files for the board design in `workdir`: RTLIL, the Yosys script, the PCF."""
    from amaranth_boards.icebreaker import ICEBreakerPlatform  # type: ignore[import-untyped]

    pll = PllSettings.closest(clock_hz)
    accelerator = Accelerator(model, parallelism=parallelism, memory_init=memory_init)
    top = ICEBreakerTop(UartBridge(accelerator, divisor=divisor_for(pll.frequency, baud)), pll=pll)
    plan = ICEBreakerPlatform().build(
        top,
        name=NAME,
        build_dir=str(workdir),
        do_build=False,
        synth_opts="-dsp",
        script_after_read=f"proc\nwrite_verilog -noattr {NAME}.v",
    )
    plan.extract(str(workdir))
    return pll, accelerator

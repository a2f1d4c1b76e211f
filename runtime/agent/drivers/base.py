"""What a sandbox driver is given (`LaunchSpec`) and gives back (`Command`), and the scoring command line.

A module's command is its image's entrypoint, `edgewise-score --model-repository /var/lib/edgewise/models ...`,
run with the scoring server the agent ships with (so an image needs no Python of its own). The agent owns the
listening options (`--host`, ports, admin sockets, metrics, sampling): those in the image are replaced.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from edgewise.runtime.agent.drivers.forking import ForkSpec, LauncherCommand, LauncherSpec, RootDir
from edgewise.runtime.agent.errors import ModuleError
from edgewise.runtime.agent.model import ModuleSettings

SCORE_COMMAND = "edgewise-score"
MODELS_DIR = PurePosixPath("/var/lib/edgewise/models")
DATA_DIR = PurePosixPath("/var/lib/edgewise/data")
MODULE_CONFIG = PurePosixPath("/etc/edgewise/module.json")
# Processes of a sandbox's own plumbing: they follow the module out, so stop signals go to the module first.
WRAPPER_COMMANDS = frozenset({"bwrap"})
# What an image holds, from its config's labels: "oci" (the default) or "fpga" (a design for the FPGA backend).
IMAGE_KIND_LABEL = "io.edgewise.image.kind"

# Options the agent sets itself; the image's values (if any) are dropped.
_OWNED_WITH_VALUE = frozenset(
    {
        "--host", "--http-port", "--grpc-port", "--admin-socket-dir", "--sample-file", "--sample-rate",
        "--repository-poll-secs",
    }
)  # fmt: skip
_OWNED_FLAGS = frozenset({"--defer-listen", "--metrics"})


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """Everything needed to start one generation of one module."""

    module: str
    generation: int  # increases with every start of this module
    rootfs: Path
    image_config: Mapping[str, Any]
    settings: ModuleSettings
    env: Mapping[str, str]
    data_dir: Path  # writable, kept across versions
    admin_dir: Path  # private sockets of this generation (created empty by the caller)
    log_path: Path
    sample_file: Path | None = None
    sample_rate: float = 0.0
    defer_listen: bool = False  # open the public ports only on POST /v2/admin/listen (a verified start)
    module_type: str = "oci"  # the manifest's `type`: it must match the kind of image


@dataclass(frozen=True, kw_only=True)
class Command:
    """A process to start: arguments, a complete environment, and the working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Sandbox(Protocol):
    name: str  # "bubblewrap" or "none": reported as agent.sandbox

    def argv(self, launch: LaunchSpec) -> list[str]: ...

    def command(self, launch: LaunchSpec) -> Command: ...

    def fork_plan(self, launch: LaunchSpec, *, roots: tuple[RootDir, ...]) -> tuple[LauncherSpec, ForkSpec] | None:
        """How to fork the module from a launcher whose sandbox shows `roots`; None when it cannot be."""
        ...

    def launcher_command(self, spec: LauncherSpec, *, control_fd: int) -> LauncherCommand:
        """The launcher process for `spec`, talking to the agent over `control_fd`."""
        ...


def scoring_executable() -> list[str]:
    """The agent's own `edgewise-score`: the script beside this interpreter, or `python -m` as a fallback."""
    return list(_scoring_executable())


@functools.cache
def _scoring_executable() -> tuple[str, ...]:  # looked up once: it lies beside the interpreter, which stays put
    script = shutil.which(SCORE_COMMAND, path=str(Path(sys.executable).parent))
    if script is not None:
        return (script,)
    return (sys.executable, "-m", "edgewise.runtime.scoring.cli")


def image_command(image_config: Mapping[str, Any]) -> list[str]:
    """Entrypoint + Cmd of the image config, checked to be the scoring server."""
    entrypoint = image_config.get("Entrypoint") or []
    cmd = image_config.get("Cmd") or []
    if not isinstance(entrypoint, list) or not isinstance(cmd, list):
        raise ModuleError("the image config's Entrypoint and Cmd must be lists of strings")
    args = [str(a) for a in [*entrypoint, *cmd]]
    if not args:
        raise ModuleError(f"the image has no entrypoint; build it with `{SCORE_COMMAND} --model-repository ...`")
    if PurePosixPath(args[0]).name != SCORE_COMMAND:
        raise ModuleError(f"the image's entrypoint is {args[0]!r}; only {SCORE_COMMAND} images can run as modules")
    return args


def strip_owned_options(args: list[str]) -> list[str]:
    """Drop the options the agent sets itself, in both `--opt value` and `--opt=value` forms."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if arg in _OWNED_WITH_VALUE:
            skip = True
        elif name in _OWNED_WITH_VALUE or arg in _OWNED_FLAGS:
            continue
        else:
            kept.append(arg)
    return kept


def check_image_kind(launch: LaunchSpec) -> None:
    """A module of `type: fpga` runs an FPGA image and nothing else, and the other way round."""
    labels = launch.image_config.get("Labels") or {}
    kind = str(labels.get(IMAGE_KIND_LABEL, "oci")) if isinstance(labels, dict) else "oci"
    if kind != launch.module_type:
        raise ModuleError(
            f"module {launch.module!r} has type {launch.module_type!r} but its image is an {kind} image; "
            f"deploy it as a module of type {kind!r}"
        )


def score_argv(launch: LaunchSpec, *, path_in_image: Callable[[str], str], sample_file: str | None) -> list[str]:
    """The module's command line; `path_in_image` maps an absolute path of the image to where the process sees it."""
    return [*scoring_executable(), *score_args(launch, path_in_image=path_in_image, sample_file=sample_file)]


def score_args(launch: LaunchSpec, *, path_in_image: Callable[[str], str], sample_file: str | None) -> list[str]:
    """The scoring server's arguments (after its program name), as `score_argv` gives them."""
    check_image_kind(launch)
    args = strip_owned_options(image_command(launch.image_config)[1:])
    translated = [_translate_arg(arg, path_in_image) for arg in args]
    s = launch.settings
    argv = [*translated, "--host", s.host, "--http-port", str(s.http_port)]
    argv += ["--grpc-port", str(s.grpc_port), "--admin-socket-dir", str(launch.admin_dir)]
    # The repository is the image's, which never changes under a running module (a new model comes as a new
    # image, and so as a new module generation): the server scans it once instead of every two seconds.
    argv += ["--repository-poll-secs", "0"]
    if s.metrics:
        argv.append("--metrics")
    if launch.defer_listen:
        argv.append("--defer-listen")
    if sample_file is not None and launch.sample_rate > 0:
        argv += ["--sample-file", sample_file, "--sample-rate", repr(float(launch.sample_rate))]
    return argv


def score_settings(args: list[str]) -> dict[str, Any] | None:
    """`args` as the scoring server reads them, for a forked module to start from; None when they are not
    valid (the module then parses them itself and says in its log what is wrong)."""
    from edgewise.runtime.scoring.cli import ArgumentsError, read_arguments  # once a module is forked, not idle

    try:
        return read_arguments(args)
    except ArgumentsError:
        return None


def _translate_arg(arg: str, path_in_image: Callable[[str], str]) -> str:
    if arg.startswith("/"):
        return path_in_image(arg)
    name, sep, value = arg.partition("=")
    if sep and name.startswith("--") and value.startswith("/"):
        return f"{name}={path_in_image(value)}"
    return arg


def under(path: str | PurePosixPath, root: PurePosixPath) -> PurePosixPath | None:
    """`path` relative to `root` when it lies inside it (after normalising `..`), else None."""
    normal = PurePosixPath(os.path.normpath(str(path)))
    if normal == root:
        return PurePosixPath()
    if root in normal.parents:
        return normal.relative_to(root)
    return None


# onnxruntime's builds send usage telemetry to Microsoft unless this is set: a device talks to its workspace only
# (an image or a manifest may still set it to 0).
MODULE_ENV_DEFAULTS = {"ORT_DISABLE_TELEMETRY": "1"}


TRANSPORT_LIBRARY_ENV = "EDGEWISE_H2GRPC_LIBRARY"  # the scoring server's native.LIBRARY_ENV


def transport_library() -> Path | None:
    """The scoring server's compiled gRPC transport, built once by the agent so that modules never compile it."""
    from edgewise.runtime.scoring.h2grpc import native  # cffi is loaded by the first module start, not at idle

    return native.prebuilt_library()


def module_env(launch: LaunchSpec, *, home: str, path: str) -> dict[str, str]:
    """A clean environment: the image's Env, then the manifest's env, with PATH and HOME set by the agent."""
    env = {"PATH": path, "HOME": home, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", **MODULE_ENV_DEFAULTS}
    library = transport_library()
    if library is not None:
        env[TRANSPORT_LIBRARY_ENV] = str(library)
    for item in launch.image_config.get("Env") or []:
        key, sep, value = str(item).partition("=")
        if sep and key not in ("PATH", "HOME"):
            env[key] = value
    env.update(launch.env)
    return env


def agent_bin_path() -> str:
    """PATH for a module: the agent's interpreter directory first, then the system's."""
    return ":".join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])

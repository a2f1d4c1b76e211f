"""The bubblewrap sandbox: a module sees the host's system directories and the agent's Python read-only, its
image read-only, its data folder writable, private /tmp, /proc and /dev, and the host network.

Layout inside (see docs/agent.md, "How a module runs"):

    /usr /bin /sbin /lib* /etc      host, read-only (/etc/edgewise/module.json from the image; no shadow files,
                                    ssh host keys or sudoers)
    <agent's Python prefixes>       host, read-only at the same paths (and the source tree of an editable install)
    /image                          the image's root, read-only
    /var/lib/edgewise/models        the image's model repository, read-only
    /var/lib/edgewise/data          the module's data folder, writable, kept across versions
    <admin dir>                     the private sockets, writable at the same path as on the host
    /tmp, /proc, /dev               private

Not `--die-with-parent`: modules outlive the agent, which adopts them when it starts again.

Forked from a launcher (see `launcher.py`), a module gets the same view: the launcher runs in bubblewrap with
the shared part of this layout plus the agent's state folder (its "roots"), and each forked module, before it
runs any module code, makes its own mount, pid, IPC and UTS namespaces, hides the roots under empty read-only
folders, binds its own image, data and admin folders where the table above puts them, gets a private /tmp,
/dev/shm and /proc, makes the rest read-only and drops every capability.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from edgewise.runtime.agent.drivers.base import (
    DATA_DIR,
    MODELS_DIR,
    MODULE_CONFIG,
    Command,
    LaunchSpec,
    agent_bin_path,
    module_env,
    score_args,
    score_settings,
    scoring_executable,
    transport_library,
    under,
)
from edgewise.runtime.agent.drivers.forking import (
    ARGS_FD,
    Bind,
    ForkSpec,
    Isolation,
    LauncherCommand,
    LauncherSpec,
    RootDir,
    inside,
    launcher_argv,
    launcher_env,
)
from edgewise.runtime.agent.errors import ModuleError

IMAGE_MOUNT = PurePosixPath("/image")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Packages the scoring server imports: with an editable install they live outside the Python prefix.
_PACKAGES = ("edgewise", "edgewise.runtime", "edgewise.proto")
# Host /etc entries a module has no business reading: password hashes, host keys, the agent's own config.
_ETC_HIDDEN = frozenset(
    {"edgewise", "edgewise-agent", "shadow", "shadow-", "gshadow", "gshadow-", "ssh", "sudoers", "sudoers.d"}
)


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def bwrap_works(executable: str) -> tuple[bool, str]:
    """Try `bwrap --ro-bind / / true` once: kernels or containers may forbid the namespaces it needs."""
    try:
        done = subprocess.run([executable, "--ro-bind", "/", "/", "true"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if done.returncode != 0:
        return False, done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
    return True, ""


def python_paths() -> list[Path]:
    """Host directories the agent's interpreter and the scoring server's packages are loaded from."""
    return list(_python_paths())


@functools.cache
def _python_paths() -> tuple[Path, ...]:
    # they do not move while the agent runs, and finding them costs milliseconds: once per process
    paths = [Path(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}]
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            paths += [Path(p) for p in spec.submodule_search_locations]
    return tuple(_outermost(p.resolve() for p in paths))


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Drop paths inside another one of the list, and those the system binds already cover."""
    system = [Path(d).resolve() for d in _SYSTEM_DIRS if os.path.isdir(d)]
    result: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if any(path == base or base in path.parents for base in [*system, *result]):
            continue
        result.append(path)
    return result


class BubblewrapSandbox:
    name = "bubblewrap"

    def __init__(self, *, executable: str = "bwrap") -> None:
        self.executable = executable

    def argv(self, launch: LaunchSpec) -> list[str]:
        return self.command(launch).argv

    def command(self, launch: LaunchSpec) -> Command:
        rootfs, models = launch.rootfs, self._models(launch)
        sample_arg, sample_binds = self._sample(launch)
        inner = [*scoring_executable(), *self._score_args(launch, sample_arg)]
        args = [self.executable, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session"]
        args += ["--cap-drop", "ALL", "--hostname", launch.module[:63]]
        args += self._system_binds()
        args += self._etc_binds(rootfs / MODULE_CONFIG.relative_to("/"))
        args += ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
        for path in python_paths():
            args += ["--ro-bind", str(path), str(path)]
        args += ["--ro-bind", str(rootfs), str(IMAGE_MOUNT), "--ro-bind", str(models), str(MODELS_DIR)]
        args += ["--bind", str(launch.data_dir), str(DATA_DIR)]
        args += ["--bind", str(launch.admin_dir), str(launch.admin_dir)]
        args += sample_binds
        args += _transport_binds()
        args += ["--chdir", str(DATA_DIR), "--", *inner]
        env = module_env(launch, home=str(DATA_DIR), path=agent_bin_path())
        return Command(argv=args, env=env, cwd=Path(launch.data_dir))

    def fork_plan(self, launch: LaunchSpec, *, roots: tuple[RootDir, ...]) -> tuple[LauncherSpec, ForkSpec] | None:
        """None unless the agent runs as root (the launcher then keeps the capabilities its modules need to
        build their own namespaces) and everything the module binds lies in `roots`."""
        if os.geteuid() != 0 or not roots or not _roots_usable(roots):
            return None
        rootfs, models = launch.rootfs, self._models(launch)
        sample_arg, sample_binds = self._sample(launch)
        binds = [
            Bind(source=str(rootfs), target=str(IMAGE_MOUNT), writable=False),
            Bind(source=str(models), target=str(MODELS_DIR), writable=False),
            Bind(source=str(launch.data_dir), target=str(DATA_DIR), writable=True),
            Bind(source=str(launch.admin_dir), target=str(launch.admin_dir), writable=True),
        ]
        if sample_binds:
            binds.append(Bind(source=sample_binds[1], target=sample_binds[2], writable=True))
        config = rootfs / MODULE_CONFIG.relative_to("/")
        config_file = str(config) if config.is_file() else None
        if any(inside(b.source, roots) is None for b in binds):
            return None
        # A module gets a fresh /tmp: the agent's interpreter or an editable source tree living there must come
        # back, or what the launcher did not import already (e.g. a backend loaded on demand) would be missing.
        binds += _python_binds_in_tmp()
        args = self._score_args(launch, sample_arg)
        env = module_env(launch, home=str(DATA_DIR), path=agent_bin_path())
        fork = ForkSpec(
            module=launch.module,
            generation=launch.generation,
            args=tuple(args),
            title=(*scoring_executable(), *args),
            env=env,
            cwd=str(DATA_DIR),
            settings=score_settings(args),
            isolation=Isolation(
                hostname=launch.module[:63],
                cover=tuple(str(r.path) for r in roots),
                binds=tuple(binds),
                config_file=config_file,
            ),
        )
        return LauncherSpec.of(sandbox=self.name, env=env, roots=roots), fork

    def launcher_command(self, spec: LauncherSpec, *, control_fd: int) -> LauncherCommand:
        """The shared part of the layout, the roots at their own paths, and the mount points modules bind to;
        capabilities are kept (each module drops them for good after building its namespaces)."""
        layout = ["--new-session"]  # not --die-with-parent: it would follow the thread that started it
        layout += self._system_binds()
        layout += self._etc_binds(None)
        layout += ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
        for path in python_paths():
            layout += ["--ro-bind", str(path), str(path)]
        layout += _transport_binds()
        for target in (IMAGE_MOUNT, MODELS_DIR, DATA_DIR):
            layout += ["--dir", str(target)]
        for root in spec.roots:
            layout += ["--bind" if root.writable else "--ro-bind", str(root.path), str(root.path)]
        layout += ["--chdir", "/"]
        inner = launcher_argv(sys.executable, control_fd=control_fd, sandbox=self.name)
        argv = [self.executable, "--args", ARGS_FD, "--", *inner]
        return LauncherCommand(argv=argv, env=launcher_env(spec), cwd=Path("/"), fd_args=layout)

    @staticmethod
    def _models(launch: LaunchSpec) -> Path:
        models = launch.rootfs / MODELS_DIR.relative_to("/")
        if not models.is_dir():
            raise ModuleError(f"the image has no model repository at {MODELS_DIR} (looked in {models})")
        return models

    @staticmethod
    def _score_args(launch: LaunchSpec, sample_arg: str | None) -> list[str]:
        rootfs = launch.rootfs

        def path_in_image(path: str) -> str:
            for inside_ in (MODELS_DIR, DATA_DIR, MODULE_CONFIG):
                if under(path, inside_) is not None:
                    return path
            rel = under(path, PurePosixPath("/"))
            if rel is not None and os.path.lexists(rootfs / rel):
                return str(IMAGE_MOUNT / rel)
            return path

        return score_args(launch, path_in_image=path_in_image, sample_file=sample_arg)

    @staticmethod
    def _system_binds() -> list[str]:
        args: list[str] = []
        for directory in _SYSTEM_DIRS:
            if os.path.islink(directory):  # merged /usr: /lib -> usr/lib
                args += ["--symlink", os.readlink(directory), directory]
            elif os.path.isdir(directory):
                args += ["--ro-bind", directory, directory]
        return args

    @staticmethod
    def _etc_binds(config: Path | None) -> list[str]:
        """The host's /etc entry by entry (less its secrets), so that the image's /etc/edgewise can sit among them.

        With `config` None (a launcher), /etc/edgewise is an empty folder each forked module mounts its own on.
        """
        args = ["--tmpfs", "/etc"]
        for entry in sorted(os.listdir("/etc")):
            if entry in _ETC_HIDDEN:
                continue
            path = f"/etc/{entry}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            else:
                args += ["--ro-bind", path, path]
        if config is None:
            args += ["--dir", str(MODULE_CONFIG.parent)]
        elif config.is_file():
            args += ["--ro-bind", str(config), str(MODULE_CONFIG)]
        return [*args, "--remount-ro", "/etc"]

    @staticmethod
    def _sample(launch: LaunchSpec) -> tuple[str | None, list[str]]:
        """Where the module writes sampled requests, and the bind that makes that place writable."""
        if launch.sample_file is None:
            return None, []
        sample = launch.sample_file
        rel = under(str(sample), PurePosixPath(str(launch.data_dir)))
        if rel is not None:
            return str(DATA_DIR / rel), []
        if under(str(sample), PurePosixPath(str(launch.admin_dir))) is not None:
            return str(sample), []
        return str(sample), ["--bind", str(sample.parent), str(sample.parent)]


@functools.cache
def _python_binds_in_tmp() -> tuple[Bind, ...]:
    return tuple(
        Bind(source=str(path), target=str(path), writable=False)
        for path in python_paths()
        if under(str(path), PurePosixPath("/tmp")) is not None
    )


def _transport_binds() -> list[str]:
    """The compiled gRPC transport at its own path, read-only: the module loads it instead of compiling."""
    library = transport_library()
    return [] if library is None else ["--ro-bind", str(library), str(library)]


def _roots_usable(roots: tuple[RootDir, ...]) -> bool:
    """Roots are hidden in every module: they must exist and hold neither the system nor the agent's Python."""
    return all(root.path.is_dir() for root in roots) and _roots_apart(roots)


@functools.cache
def _roots_apart(roots: tuple[RootDir, ...]) -> bool:
    shared = [Path(d) for d in _SYSTEM_DIRS] + python_paths() + [Path("/etc"), Path("/proc"), Path("/dev")]
    if not all(root.path.is_absolute() for root in roots):
        return False
    return not any(path == root.path or root.path in path.parents for root in roots for path in shared)

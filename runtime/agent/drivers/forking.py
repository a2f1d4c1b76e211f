"""What the module launcher is told: how to start the launcher itself (`LauncherSpec`, `LauncherCommand`) and
how to set up one forked module (`ForkSpec`).

A launcher serves every module whose launch needs the same launcher: the same sandbox, the same environment
(native libraries read theirs while the launcher imports the scoring server, so a module may only be forked
from a launcher whose environment equals its own, HOME aside) and the same host folders made visible to it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where the launcher command names the descriptor that carries `LauncherCommand.fd_args`.
ARGS_FD = "{args-fd}"
# The variables a module's environment may differ in from its launcher's: set in the forked module itself.
PER_MODULE_ENV = frozenset({"HOME"})


@dataclass(frozen=True, kw_only=True)
class RootDir:
    """A host folder the launcher sees (at the same path); every forked module hides it again."""

    path: Path
    writable: bool


@dataclass(frozen=True, kw_only=True)
class LauncherSpec:
    """Which launcher a module is forked from (hashable: launchers are shared by equal specs)."""

    sandbox: str
    env: tuple[tuple[str, str], ...]
    roots: tuple[RootDir, ...] = ()

    @classmethod
    def of(cls, *, sandbox: str, env: Mapping[str, str], roots: tuple[RootDir, ...] = ()) -> LauncherSpec:
        shared = tuple(sorted((k, v) for k, v in env.items() if k not in PER_MODULE_ENV))
        return cls(sandbox=sandbox, env=shared, roots=roots)


@dataclass(frozen=True, kw_only=True)
class LauncherCommand:
    """The launcher's process: `argv` (where ARGS_FD stands for a descriptor carrying `fd_args`, NUL-separated,
    so that a sandbox's long layout stays off the command line), its environment and working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    fd_args: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Bind:
    source: str  # a path the launcher sees
    target: str  # where the module sees it
    writable: bool


@dataclass(frozen=True, kw_only=True)
class Isolation:
    """What a module forked inside a sandboxed launcher sets up for itself before it runs any module code: its
    own mount, pid, IPC and UTS namespaces, the launcher's roots hidden, its own folders bound, no capabilities."""

    hostname: str
    cover: tuple[str, ...]
    binds: tuple[Bind, ...]
    config_file: str | None  # the image's module config, shown read-only at /etc/edgewise/module.json


@dataclass(frozen=True, kw_only=True)
class ForkSpec:
    """One generation of one module, as the launcher forks it."""

    module: str
    generation: int
    args: tuple[str, ...]  # the scoring server's arguments, after the program name
    title: tuple[str, ...]  # the command line the process shows: the one it would have had as its own program
    env: Mapping[str, str]
    cwd: str
    isolation: Isolation | None = None
    # `args` as the scoring server's parser reads them (`cli.read_arguments`), when they are valid: the module
    # starts from these instead of parsing its command line again (None: it parses, and reports what is wrong).
    settings: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        iso = self.isolation
        return {
            "module": self.module,
            "generation": self.generation,
            "args": list(self.args),
            "settings": None if self.settings is None else dict(self.settings),
            "title": list(self.title),
            "env": dict(self.env),
            "cwd": self.cwd,
            "isolation": None
            if iso is None
            else {
                "hostname": iso.hostname,
                "cover": list(iso.cover),
                "binds": [{"source": b.source, "target": b.target, "writable": b.writable} for b in iso.binds],
                "configFile": iso.config_file,
            },
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ForkSpec:
        raw = doc.get("isolation")
        isolation = None
        if raw is not None:
            isolation = Isolation(
                hostname=str(raw["hostname"]),
                cover=tuple(str(p) for p in raw["cover"]),
                binds=tuple(
                    Bind(source=str(b["source"]), target=str(b["target"]), writable=bool(b["writable"]))
                    for b in raw["binds"]
                ),
                config_file=None if raw.get("configFile") is None else str(raw["configFile"]),
            )
        return cls(
            module=str(doc["module"]),
            generation=int(doc["generation"]),
            args=tuple(str(a) for a in doc["args"]),
            title=tuple(str(a) for a in doc["title"]),
            env={str(k): str(v) for k, v in dict(doc["env"]).items()},
            cwd=str(doc["cwd"]),
            isolation=isolation,
            settings=None if doc.get("settings") is None else dict(doc["settings"]),
        )


def inside(path: Path | str, roots: tuple[RootDir, ...]) -> RootDir | None:
    """The root that holds `path`, if any."""
    target = os.path.normpath(os.path.abspath(path))
    for root in roots:
        base = str(root.path)
        if target == base or target.startswith(base.rstrip("/") + "/"):
            return root
    return None


LAUNCHER_MODULE = "edgewise.runtime.agent.launcher_process"
TITLE_ROOM = 4096  # bytes of command line each forked module may show (its arguments, like an exec'd server)
# A variable in the launcher's environment that only reserves room: a forked module writes its own environment
# over the launcher's initial one, which /proc/<pid>/environ shows from that fixed block of memory.
ENV_ROOM_VARIABLE = "EDGEWISE_LAUNCHER_ENV_ROOM"
ENV_ROOM = 2048


def launcher_env(spec: LauncherSpec) -> dict[str, str]:
    return {**dict(spec.env), ENV_ROOM_VARIABLE: " " * ENV_ROOM}


def launcher_argv(python: str, *, control_fd: int, sandbox: str) -> list[str]:
    """The launcher's own command line. Its last argument only reserves room: a forked module writes its
    own command line over the launcher's, which the kernel shows from that fixed block of memory."""
    return [python, "-m", LAUNCHER_MODULE, "--control-fd", str(control_fd), "--sandbox", sandbox, " " * TITLE_ROOM]

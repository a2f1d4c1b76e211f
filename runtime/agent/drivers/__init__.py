"""Sandbox drivers: how a module's process is wrapped (bubblewrap) or not (plain)."""

from __future__ import annotations

import logging

from edgewise.runtime.agent.drivers.base import Command, LaunchSpec, Sandbox
from edgewise.runtime.agent.drivers.bubblewrap import BubblewrapSandbox, bwrap_works, find_bwrap
from edgewise.runtime.agent.drivers.plain import PlainSandbox
from edgewise.runtime.agent.errors import ConfigError

__all__ = ["BubblewrapSandbox", "Command", "LaunchSpec", "PlainSandbox", "Sandbox", "choose_sandbox"]

log = logging.getLogger("edgewise.agent.sandbox")


def choose_sandbox(setting: str) -> Sandbox:
    """`bubblewrap`, `none`, or `auto`: bubblewrap when it works here, else a plain process (with a warning)."""
    if setting == "none":
        return PlainSandbox()
    if setting not in ("auto", "bubblewrap"):
        raise ConfigError(f"sandbox {setting!r} must be auto, bubblewrap or none")
    executable = find_bwrap()
    if executable is None:
        problem = "bwrap is not installed (apt install bubblewrap)"
    else:
        works, problem = bwrap_works(executable)
        if works:
            return BubblewrapSandbox(executable=executable)
        problem = f"bwrap does not work here: {problem}"
    if setting == "bubblewrap":
        raise ConfigError(f"sandbox bubblewrap was asked for but {problem}; use --sandbox auto or none")
    log.warning("running modules without a sandbox: %s", problem)
    return PlainSandbox()

"""Zero-downtime update: start the new version beside the old one, prove it healthy, then stop the old one.

The new version starts with its public ports closed (`--defer-listen`) and is probed over its private admin
sockets; only after its warm-up passed does it open the public ports, which it shares with the old version
(SO_REUSEPORT). Stopping the old version then closes its listeners; with `net.ipv4.tcp_migrate_req` on,
connections already queued on them move to the new version's listener instead of being reset. A new version
that fails is stopped, and the old one never noticed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from edgewise.runtime.agent.drivers.base import LaunchSpec
from edgewise.runtime.agent.errors import HealthCheckError, ModuleError
from edgewise.runtime.agent.health import admin_call, wait_healthy
from edgewise.runtime.agent.supervisor import ModuleProcess, Supervisor, log_tail

MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")
log = logging.getLogger("edgewise.agent.handover")


def enable_request_migration() -> bool:
    """Turn on net.ipv4.tcp_migrate_req (Linux 5.14+) when permitted; whether it is on now."""
    try:
        if MIGRATE_REQ.read_text().strip() == "1":
            return True
        MIGRATE_REQ.write_text("1\n")
        return MIGRATE_REQ.read_text().strip() == "1"
    except OSError as exc:
        log.warning("cannot enable net.ipv4.tcp_migrate_req (%s); a handover may reset queued connections", exc)
        return False


async def start_verified(*, supervisor: Supervisor, launch: LaunchSpec) -> ModuleProcess:
    """Start the module with its public ports closed, wait until it is healthy, then open them.

    On any failure the new process is stopped and HealthCheckError says why (with the end of its log).
    """
    launch = dataclasses.replace(launch, defer_listen=True)
    async with supervisor.start_slot():
        try:
            proc = await supervisor.spawn(launch)
        except ModuleError as exc:
            raise HealthCheckError(str(exc)) from None
        try:
            await wait_healthy(
                launch.admin_dir,
                timeout=launch.settings.startup_timeout,
                warmup=launch.settings.warmup,
                alive=lambda: supervisor.alive(proc),
            )
            await _open_public_ports(launch.admin_dir)
        except BaseException as exc:
            await supervisor.stop(proc)
            if isinstance(exc, HealthCheckError):
                raise HealthCheckError(_with_log(str(exc), launch)) from None
            raise
    return proc


async def replace(*, supervisor: Supervisor, old: ModuleProcess | None, launch: LaunchSpec) -> ModuleProcess:
    """Start a verified new version while `old` keeps serving, then stop `old`.

    If the new version fails, `old` is left running untouched and HealthCheckError says why.
    """
    new = await start_verified(supervisor=supervisor, launch=launch)
    if old is not None:
        try:
            await supervisor.stop(old)
        except ModuleError as exc:  # the new version serves either way; the old one is reported, not fatal
            log.error("module %s: the previous version did not stop: %s", launch.module, exc)
    return new


async def _open_public_ports(admin_dir: Path) -> None:
    try:
        status, body = await admin_call(admin_dir, "POST", "/v2/admin/listen", timeout=10.0)
    except OSError as exc:
        raise HealthCheckError(f"the module did not answer the request to open its ports: {exc}") from None
    if status != 200:
        try:
            reason = str(json.loads(body).get("error", body))
        except (ValueError, AttributeError):
            reason = body[:300].decode(errors="replace")
        raise HealthCheckError(f"the module could not open its public ports: {reason}")


def _with_log(message: str, launch: LaunchSpec, lines: int = 5) -> str:
    tail = [line for line in log_tail(launch.log_path, lines) if line.strip()]
    if not tail:
        return message
    return message + "\n" + "\n".join(f"  | {line}" for line in tail)

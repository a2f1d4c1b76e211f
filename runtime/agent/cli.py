"""`edgewise-agent`: the device daemon (see docs/agent.md).

Settings come from `--config` (TOML), the connection string (`--connection-string` or the environment
variable EDGEWISE_CONNECTION_STRING) and the flags below, flags winning. A configuration error prints
one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from edgewise.runtime.agent.config import AgentConfig, load_config
from edgewise.runtime.agent.errors import AgentError, ConfigError

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgewise-agent", description="Run deployed modules on this device.")
    parser.add_argument(
        "--connection-string",
        help="Broker=...;DeviceId=...;Secret=...;WorkspaceKey=...[;Registry=...]"
        " (default: $EDGEWISE_CONNECTION_STRING)",
    )
    parser.add_argument("--config", type=Path, help="agent.toml with the connection and local settings")
    parser.add_argument("--state-dir", type=Path, help="where manifests, module records, images and telemetry live")
    parser.add_argument(
        "--runtime-dir",
        type=Path,
        help="where the modules' private sockets go (default: $XDG_RUNTIME_DIR, else /run for root, else /tmp)",
    )
    parser.add_argument("--metrics-port", type=int, help="serve the agent's Prometheus metrics on this port")
    parser.add_argument("--metrics-host", help="address of the metrics endpoint (default 127.0.0.1)")
    parser.add_argument("--sandbox", choices=["auto", "bubblewrap", "none"], help="how modules are isolated")
    parser.add_argument("--disk-budget-bytes", type=int, help="bytes images may use on disk")
    parser.add_argument("--restart-cooloff", type=float, help="restart back-off unit in seconds (doubles each time)")
    parser.add_argument("--reconcile-interval", type=float, help="seconds between periodic reconcile passes")
    parser.add_argument("--health-interval", type=float, help="seconds between module liveness probes")
    parser.add_argument(
        "--no-launcher",
        action="store_true",
        help="start every module as a program of its own instead of forking it from the module launcher",
    )
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    return parser


def config_from_args(opts: argparse.Namespace) -> AgentConfig:
    overrides: dict[str, Any] = {
        "state_dir": opts.state_dir,
        "runtime_dir": opts.runtime_dir,
        "metrics_port": opts.metrics_port,
        "metrics_host": opts.metrics_host,
        "sandbox": opts.sandbox,
        "disk_budget_bytes": opts.disk_budget_bytes,
        "restart_cooloff": opts.restart_cooloff,
        "reconcile_interval": opts.reconcile_interval,
        "health_interval": opts.health_interval,
        "launcher": False if opts.no_launcher else None,
    }
    for name in ("metrics_port", "disk_budget_bytes"):
        value = overrides[name]
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("restart_cooloff", "reconcile_interval", "health_interval"):
        value = overrides[name]
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    return load_config(connection_string=opts.connection_string, config_file=opts.config, overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    logging.basicConfig(
        level=opts.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = config_from_args(opts)
    except ConfigError as exc:
        print(f"edgewise-agent: {exc}", file=sys.stderr)
        return 2
    from edgewise.runtime.agent.daemon import serve  # after the config is known good: keeps `--help` light

    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"edgewise-agent: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"edgewise-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m edgewise.simulators fleet`: run a fleet of real agents from a file of connection strings.

    python -m edgewise.simulators fleet --broker mqtt://127.0.0.1:1883 --devices 10 \\
        --connection-strings devices.txt [--in-process] [--proxied] [--work-dir DIR] [--keepalive 5]

The file holds one connection string a line (what `edgewise device add` prints); `--broker` overrides the
broker they name, which must be on 127.0.0.1. The fleet runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from edgewise.runtime.agent.config import parse_connection_string
from edgewise.runtime.agent.errors import ConfigError
from edgewise.simulators.fleet import DeviceCredentials, DeviceSettings, Fleet
from edgewise.simulators.inprocess import InProcessFleet
from edgewise.simulators.processes import ProcessFleet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgewise.simulators")
    commands = parser.add_subparsers(dest="command", required=True)
    fleet = commands.add_parser("fleet", help="run N real agents against a broker on 127.0.0.1")
    fleet.add_argument("--connection-strings", type=Path, required=True, help="one connection string a line")
    fleet.add_argument("--broker", help="mqtt://127.0.0.1:PORT (default: the one in the connection strings)")
    fleet.add_argument("--devices", type=int, help="use the first N lines (default: all)")
    fleet.add_argument("--in-process", action="store_true", help="all agents in this process, on one event loop")
    fleet.add_argument("--proxied", action="store_true", help="each device behind its own link proxy")
    fleet.add_argument("--work-dir", type=Path, help="state folders and logs (default: a temporary folder)")
    fleet.add_argument("--keepalive", type=float, default=5.0, help="MQTT keep-alive seconds of every agent")
    fleet.add_argument("--sandbox", choices=["auto", "bubblewrap", "none"], default="auto")
    return parser


def make_fleet(opts: argparse.Namespace, work_dir: Path) -> Fleet:
    lines = [line.strip() for line in opts.connection_strings.read_text().splitlines() if line.strip()]
    if opts.devices is not None:
        if opts.devices > len(lines):
            raise ConfigError(f"{opts.devices} devices asked for but {opts.connection_strings} has {len(lines)}")
        lines = lines[: opts.devices]
    if not lines:
        raise ConfigError(f"{opts.connection_strings} holds no connection strings")
    connections = [parse_connection_string(line) for line in lines]
    first = connections[0]
    if len({(c.workspace_key_text, c.registry) for c in connections}) > 1:
        raise ConfigError("the connection strings name different workspace keys or registries; use one workspace")
    host, port = first.broker_host, first.broker_port
    if opts.broker:
        url = urlsplit(opts.broker)
        if url.scheme != "mqtt" or not url.hostname:
            raise ConfigError(f"--broker {opts.broker!r} must be mqtt://127.0.0.1:PORT")
        host, port = url.hostname, url.port or 1883
    kind: type[Fleet] = InProcessFleet if opts.in_process else ProcessFleet
    return kind(
        broker_host=host,
        broker_port=port,
        devices=[DeviceCredentials(device_id=c.device_id, secret=c.secret) for c in connections],
        workspace_key=first.workspace_key_text,
        registry=first.registry,
        work_dir=work_dir,
        settings=DeviceSettings(keepalive=opts.keepalive, sandbox=opts.sandbox),
        proxied=opts.proxied,
    )


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    work_dir = opts.work_dir or Path(tempfile.mkdtemp(prefix="edgewise-fleet-"))
    try:
        fleet = make_fleet(opts, work_dir)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"python -m edgewise.simulators: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with fleet:
        mode = "in one process" if opts.in_process else "as processes"
        print(f"{len(fleet.devices)} agents running {mode}; state in {work_dir}; Ctrl-C stops them", flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

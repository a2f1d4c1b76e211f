"""The `edgewise` command line: a client of the workspace's HTTP API (and `edgewise up`, which starts it)."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Console-script entry point of `edgewise`."""
    from edgewise.cloud.cli.app import run

    run()

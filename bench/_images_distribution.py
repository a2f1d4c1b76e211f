"""CNCF Distribution (`docker-registry`) on 127.0.0.1, the reference registry the pull throughput is held to.

Filesystem storage in the benchmark's work folder, no auth, no TLS, no proxy or cache in front: the
configuration a user gets from the Debian package's sample config, bound to a free local port.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from _harness import ServerProcess, free_ports, http_get_status


def start_distribution(work: Path, timeout: float) -> tuple[ServerProcess, str]:
    """`docker-registry serve` on a fresh storage folder; answers the process and its `host:port`."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    shutil.rmtree(work, ignore_errors=True)
    (work / "storage").mkdir(parents=True)
    port = free_ports(1)[0]
    config = work / "config.yml"
    config.write_text(
        "\n".join(
            [
                "version: 0.1",
                "log:",
                "  level: warn",
                "storage:",
                "  filesystem:",
                f"    rootdirectory: {work / 'storage'}",
                "http:",
                f"  addr: 127.0.0.1:{port}",
                "  secret: images-benchmark-local-only",
            ]
        )
        + "\n"
    )
    server = ServerProcess("docker-registry", [binary, "serve", str(config)], work / "registry.log")
    try:
        server.wait_ready(lambda: http_get_status(port, "/v2/") == 200, timeout)
    except BaseException:
        server.stop()
        raise
    return server, f"127.0.0.1:{port}"

"""The composition root: wires registry, dataplane and both protocol adapters, and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn
from edgewise.runtime.scoring.backends import load_backend
from edgewise.runtime.scoring.dataplane import DataPlane
from edgewise.runtime.scoring.metrics import ServerMetrics
from edgewise.runtime.scoring.protocol.grpc_api import build_grpc_server, set_serving
from edgewise.runtime.scoring.protocol.rest_api import build_rest_app
from edgewise.runtime.scoring.registry import ModelRegistry
from edgewise.runtime.scoring.settings import ServerSettings
from grpc_health.v1.health import HealthServicer

log = logging.getLogger("edgewise.scoring")


def _reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that a newer server may share during a zero-downtime handover."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off only on sockets that say they are TCP, and a
    # response written in two parts would otherwise wait for the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _has_listener(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=0.2):
            return True
    except OSError:
        return False


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the scoring server stops both protocols together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ScoringServer:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = ServerMetrics() if settings.metrics else None
        loader = functools.partial(load_backend, intra_op_threads=settings.intra_op_threads)
        self.registry = ModelRegistry(settings.model_repository, loader=loader, metrics=self.metrics)
        self.dataplane = DataPlane(self.registry, strict_readiness=settings.strict_readiness)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        s = self.settings
        for protocol, port in (("gRPC", s.grpc_port), ("HTTP", s.http_port)):
            if port and _has_listener(s.host, port):
                log.warning(
                    "%s port %d already has a listener; sharing it (SO_REUSEPORT) as a module handover does. "
                    "If that is not a handover, stop the other server or choose another port.", protocol, port
                )
        grpc_server, health, grpc_port = build_grpc_server(
            self.dataplane, host=s.host, port=s.grpc_port, max_message_bytes=s.max_message_bytes
        )
        await grpc_server.start()
        await set_serving(health, False)
        sock = _reuseport_socket(s.host, s.http_port)
        http_port = sock.getsockname()[1]
        app = build_rest_app(self.dataplane, metrics=self.metrics, max_message_bytes=s.max_message_bytes)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        http = _HttpServer(config)
        http_task = asyncio.create_task(http.serve(sockets=[sock]))
        log.info("edgewise-score live: gRPC on %s:%d, HTTP on %s:%d", s.host, grpc_port, s.host, http_port)
        try:
            await self._watch_repository(health)
        finally:
            await set_serving(health, False)
            http.should_exit = True
            await grpc_server.stop(s.grace_period)
            with contextlib.suppress(asyncio.CancelledError):
                await http_task
            sock.close()
            log.info("edgewise-score stopped")

    async def _watch_repository(self, health: HealthServicer) -> None:
        """Load the repository, then rescan it until stopped, keeping the health service in step."""
        serving: bool | None = None
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                scan = asyncio.ensure_future(self.registry.poll())
                await asyncio.wait({scan, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not scan.done():
                    scan.cancel()  # a stop request does not wait for a slow model load
                    return
                if scan.exception() is not None:  # a scan error must not take the server down
                    log.error("repository scan failed", exc_info=scan.exception())
                ready = self.dataplane.ready()
                if ready != serving:
                    serving = ready
                    await set_serving(health, ready)
                    log.info("edgewise-score %s", "ready" if ready else "not ready")
                if self.settings.poll_interval <= 0:
                    await stop
                    return
                await asyncio.wait({stop}, timeout=self.settings.poll_interval)
        finally:
            stop.cancel()


async def run_server(settings: ServerSettings) -> None:
    server = ScoringServer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()

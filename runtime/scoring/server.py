"""The composition root: wires registry, dataplane and both protocol adapters, and runs them.

With an admin socket directory the server also listens privately on DIR/http.sock (the REST app plus
`/v2/admin/*`) and DIR/grpc.sock, so the agent reaches exactly this process while another version shares
the public ports. With `defer_listen` the public ports open only on `POST /v2/admin/listen`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from edgewise.runtime.scoring import metrics as server_metrics
from edgewise.runtime.scoring.backends import load_backend
from edgewise.runtime.scoring.dataplane import DataPlane
from edgewise.runtime.scoring.h2grpc import native
from edgewise.runtime.scoring.h2grpc.connection import Connection
from edgewise.runtime.scoring.protocol.grpc_api import (
    GrpcServer,
    build_grpc_server,
    describe_all_services,
    set_serving,
    transport_name,
)
from edgewise.runtime.scoring.protocol.rest_api import rest_routes
from edgewise.runtime.scoring.registry import ModelRegistry
from edgewise.runtime.scoring.settings import ServerSettings
from grpc_health.v1 import health as grpc_health
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger("edgewise.scoring")
Endpoint = Callable[[Request], Awaitable[Response]]
_ACCEPTED_REQUEST_WAIT = 0.2  # seconds between closing the listeners and closing idle connections
_MAX_READY_WAIT = 30.0  # seconds an admin `state?wait_ready=` request may be held
_KEEPALIVE_DRAIN = 1.0  # seconds kept-alive clients get to pick up a `Connection: close` before the rest close


class _CloseWhenDraining:
    """While the server stops, every response says `Connection: close`.

    A client on a kept-alive connection then reconnects (to the newer version sharing the port) after its next
    answer, instead of finding its idle connection closed under a request it just sent.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.draining = False  # set once, when the server starts to stop

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.draining or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


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


def _unix_socket(path: Path) -> socket.socket:
    """A listening unix socket at `path`, private to the owner (a stale socket file is replaced)."""
    _check_socket_path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def _check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > 107:  # sun_path holds 108 bytes with the terminating NUL
        raise OSError(f"admin socket path {path} is longer than 107 bytes; choose a shorter --admin-socket-dir")


def _has_listener(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=0.2):
            return True
    except OSError:
        return False


@functools.cache
def _quiet_uvicorn() -> None:
    """uvicorn's own messages from warnings up, once per process."""
    for name in ("uvicorn.error", "uvicorn.asgi"):
        logging.getLogger(name).setLevel(logging.WARNING)


HOUSEKEEPING_INTERVAL = 1.0  # seconds between uvicorn's ticks (its Date header, request limits)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling (the scoring server stops both protocols together), and with its
    housekeeping tick once a second instead of ten times: an idle module should cost next to nothing, and a
    device runs several. A stop still takes effect at once, through an event rather than the next tick."""

    _exit_requested: asyncio.Event | None = None
    _started: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.started_event().set()

    def started_event(self) -> asyncio.Event:
        """Set once the server accepts connections (uvicorn itself only sets a flag)."""
        if self._started is None:
            self._started = asyncio.Event()
        return self._started

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value and self._exit_requested is not None:
            self._exit_requested.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        self._exit_requested = asyncio.Event()
        if self._should_exit:
            self._exit_requested.set()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # uvicorn refreshes its Date header when the counter is a multiple of 10
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HOUSEKEEPING_INTERVAL):  # no task per tick, as wait_for makes
                    await self._exit_requested.wait()
            should_exit = await self.on_tick(counter)


@dataclass
class _Listeners:
    """One HTTP (uvicorn) and one gRPC server serving the same dataplane on one kind of address."""

    http: _HttpServer
    task: asyncio.Task[None]
    sock: socket.socket
    grpc: GrpcServer


class ScoringServer:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = server_metrics.server_metrics() if settings.metrics else None
        loader = functools.partial(
            load_backend,
            intra_op_threads=settings.intra_op_threads,
            intra_op_spinning=settings.intra_op_spinning,
        )
        self.registry = ModelRegistry(settings.model_repository, loader=loader, metrics=self.metrics)
        self.dataplane = DataPlane(self.registry, strict_readiness=settings.strict_readiness, sampling=settings)
        self._stop = asyncio.Event()
        self._ready_event = asyncio.Event()  # set while ready (health serving); admin long-polls wait on it
        self._health = grpc_health.aio.HealthServicer()
        self._listen_lock = asyncio.Lock()
        self._stopping = False
        self._admin: _Listeners | None = None
        self._public: _Listeners | None = None
        self._public_app: _CloseWhenDraining | None = None
        self._ports: tuple[int, int] = (0, 0)  # (http, grpc) of the public listeners once open
        self._routes: list[BaseRoute] | None = None

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        s = self.settings
        await set_serving(self._health, False)
        try:
            if s.admin_socket_dir is not None:
                self._admin = await self._start_admin(s.admin_socket_dir)
            if s.defer_listen:
                log.info("edgewise-score admin sockets in %s; public ports open on request", s.admin_socket_dir)
            else:
                await self.open_public()
            await self._watch_repository(self._health)
        finally:
            await set_serving(self._health, False)
            await self._close()
            log.info("edgewise-score stopped")

    async def open_public(self) -> tuple[int, int]:
        """Open the public HTTP and gRPC listeners (once); returns their (http, grpc) ports."""
        async with self._listen_lock:
            if self._public is None:
                if self._stopping:
                    raise OSError("the server is stopping")
                self._public = await self._start_public()
            return self._ports

    async def _start_public(self) -> _Listeners:
        s = self.settings
        # With deferred listening an agent opens the ports, sharing them on purpose during a handover: the look
        # for another listener (two connects) is only for a server started by hand.
        for protocol, port in () if s.defer_listen else (("gRPC", s.grpc_port), ("HTTP", s.http_port)):
            if port and _has_listener(s.host, port):
                log.warning(
                    "%s port %d already has a listener; sharing it (SO_REUSEPORT) as a module handover does. "
                    "If that is not a handover, stop the other server or choose another port.",
                    protocol,
                    port,
                )
        grpc_server, _, grpc_port = build_grpc_server(
            self.dataplane,
            host=s.host,
            port=s.grpc_port,
            max_message_bytes=s.max_message_bytes,
            health_servicer=self._health,
            engine=s.grpc_engine,
        )
        await grpc_server.start()
        try:
            sock = _reuseport_socket(s.host, s.http_port)
        except OSError:
            await grpc_server.stop(None)
            raise
        http_port = sock.getsockname()[1]
        app = _CloseWhenDraining(Starlette(routes=self._rest_routes()))
        self._public_app = app
        listeners = await self._serve_http(app, sock, grpc_server)
        self._ports = (http_port, grpc_port)
        log.info(
            "edgewise-score live: gRPC on %s:%d, HTTP on %s:%d (gRPC transport: %s)",
            s.host, grpc_port, s.host, http_port, transport_name(grpc_server),
        )  # fmt: skip
        return listeners

    async def _start_admin(self, directory: Path) -> _Listeners:
        s = self.settings
        directory.mkdir(parents=True, exist_ok=True)
        grpc_path = directory / "grpc.sock"
        _check_socket_path(grpc_path)
        with contextlib.suppress(FileNotFoundError):
            grpc_path.unlink()
        grpc_server, _, _ = build_grpc_server(
            self.dataplane,
            host=s.host,
            port=0,
            max_message_bytes=s.max_message_bytes,
            listen_tcp=False,
            unix_socket=grpc_path,
            health_servicer=self._health,
            engine=s.grpc_engine,
        )
        await grpc_server.start()
        try:
            sock = _unix_socket(directory / "http.sock")
        except OSError:
            await grpc_server.stop(None)
            raise
        app = Starlette(routes=[*self._admin_routes(), *self._rest_routes()])
        return await self._serve_http(app, sock, grpc_server)

    def _rest_routes(self) -> list[BaseRoute]:
        """The KServe v2 routes, made once: the admin and the public app share them."""
        if self._routes is None:
            s = self.settings
            self._routes = rest_routes(self.dataplane, metrics=self.metrics, max_message_bytes=s.max_message_bytes)
        return self._routes

    async def _serve_http(
        self, app: Starlette | _CloseWhenDraining, sock: socket.socket, grpc_server: GrpcServer
    ) -> _Listeners:
        # Each costs every start and serves nothing here: ws (the API has no websocket routes), log_config
        # (uvicorn's own handlers; its loggers reach this server's instead), proxy headers (no client address
        # is used) and log_level (set once per process instead: each setLevel clears every logger's cache).
        _quiet_uvicorn()
        config = uvicorn.Config(
            app, log_level=None, access_log=False, lifespan="off", ws="none", log_config=None, proxy_headers=False
        )
        http = _HttpServer(config)
        task = asyncio.create_task(http.serve(sockets=[sock]))
        started = asyncio.ensure_future(http.started_event().wait())
        try:
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if not http.started:
            sock.close()
            await grpc_server.stop(None)
            task.result()  # raises what stopped it
            raise OSError("the HTTP server stopped while starting")
        return _Listeners(http=http, task=task, sock=sock, grpc=grpc_server)

    def _admin_routes(self) -> list[BaseRoute]:
        """Routes of the private admin socket only: the agent's handover steps."""

        async def listen(request: Request) -> Response:
            try:
                http_port, grpc_port = await self.open_public()
            except OSError as exc:
                return JSONResponse({"error": f"cannot open the public ports: {exc}"}, status_code=500)
            return JSONResponse({"http_port": http_port, "grpc_port": grpc_port})

        async def state(request: Request) -> Response:
            """With `?wait_ready=SECONDS` (at most 30), answers once the server is ready or that time is up:
            the agent's wait for a starting module is one request instead of a probe every few milliseconds, and
            the answer carries the repository index the agent checks next."""
            wait = _wait_seconds(request.query_params.get("wait_ready"))
            if wait and not self.dataplane.ready() and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready_event.wait(), wait)
            open_ = self._public is not None
            return JSONResponse(
                {
                    "pid": os.getpid(),
                    "listening": open_,
                    "http_port": self._ports[0] if open_ else None,
                    "grpc_port": self._ports[1] if open_ else None,
                    "ready": self.dataplane.ready(),
                    "stopping": self._stopping,
                    "models": [
                        {
                            "name": e.name,
                            "version": e.version,
                            "state": e.state,
                            "reason": e.reason,
                            "warmedUp": e.warmed_up,
                        }
                        for e in self.dataplane.repository_index(False)
                    ],
                }
            )

        return _admin_route_list(listen, state)

    async def _close(self) -> None:
        """Drain: stop accepting everywhere, let in-flight requests finish within the grace period."""
        async with self._listen_lock:
            self._stopping = True
            self._ready_event.set()  # admin requests waiting for readiness answer now (not ready, stopping)
            if self._public_app is not None:
                self._public_app.draining = True
        groups = [g for g in (self._public, self._admin) if g is not None]
        # Stop accepting first (connections still queued move to a newer server sharing the port when
        # net.ipv4.tcp_migrate_req is on), and give connections accepted a moment ago time to deliver their
        # request: uvicorn's shutdown closes every connection that has no request in progress yet.
        for group in groups:
            for listener in getattr(group.http, "servers", []):
                listener.close()
        if groups:
            await asyncio.sleep(_ACCEPTED_REQUEST_WAIT)
        if self._public is not None:  # busy kept-alive clients take their `Connection: close` and go
            deadline = time.monotonic() + _KEEPALIVE_DRAIN
            while self._public.http.server_state.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        for group in groups:
            group.http.should_exit = True
        await asyncio.gather(*(group.grpc.stop(self.settings.grace_period) for group in groups))
        for group in groups:
            with contextlib.suppress(asyncio.CancelledError):
                await group.task
            group.sock.close()
        if self._admin is not None and self.settings.admin_socket_dir is not None:
            for name in ("http.sock", "grpc.sock"):
                with contextlib.suppress(OSError):
                    (self.settings.admin_socket_dir / name).unlink()

    async def _watch_repository(self, health: grpc_health.aio.HealthServicer) -> None:
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
                    if ready:
                        self._ready_event.set()
                    else:
                        self._ready_event.clear()
                    log.info("edgewise-score %s", "ready" if ready else "not ready")
                if self.settings.poll_interval <= 0:
                    await stop
                    return
                await asyncio.wait({stop}, timeout=self.settings.poll_interval)
        finally:
            stop.cancel()


def _admin_route_list(listen: Endpoint, state: Endpoint) -> list[BaseRoute]:
    return [Route("/v2/admin/listen", listen, methods=["POST"]), Route("/v2/admin/state", state)]


async def _no_answer(request: Request) -> Response:
    return Response(status_code=404)


def _wait_seconds(value: str | None) -> float:
    """The `wait_ready` query value as seconds within 0..30; 0 when absent or not a number."""
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), _MAX_READY_WAIT) if seconds == seconds else 0.0


def preload() -> None:
    """Import what a start imports lazily (the ONNX backend, uvicorn's protocol and lifespan classes) and do the
    first-time set-up of onnxruntime and the native transport, leaving no thread, socket, server or session
    behind: for a process that forks servers, so that each one starts warm."""
    import importlib

    from edgewise.runtime.scoring import cli
    from edgewise.runtime.scoring.backends.onnx import warm_up_runtime

    if native.available() is None:  # load the compiled gRPC transport now: every forked server shares it
        # and one connection made and dropped binds the library's symbols and cffi's types before the fork
        Connection(max_message_bytes=1).close()
    warm_up_runtime()
    _quiet_uvicorn()
    describe_all_services()
    with contextlib.suppress(ImportError):
        importlib.import_module("uvloop")  # its event loop costs a forked server 13 ms to import
    cli.argument_parser()  # built once: a forked server only parses its arguments
    # Making the routes compiles a regular expression per route; compiled here, they stay in `re`'s cache for
    # every forked server, which makes its own routes again.
    rest_routes(DataPlane(ModelRegistry(Path(os.devnull), loader=load_backend)), metrics=None, max_message_bytes=1)
    _admin_route_list(_no_answer, _no_answer)
    server_metrics.make_spare()
    for name in (
        "encodings.idna",  # the first getaddrinfo of a host name imports it (the public listeners' port check)
        *(target.split(":")[0] for target in (uvicorn.config.HTTP_PROTOCOLS["auto"], uvicorn.config.LIFESPAN["off"])),
        "uvicorn.protocols.http.h11_impl",
        "uvicorn.protocols.http.httptools_impl",
    ):
        importlib.import_module(name)
    _answer_abc_checks()  # last: an import that registers a class with an ABC forgets every negative answer


def _answer_abc_checks() -> None:
    """Ask the abstract-base-class checks a start makes once, so that a forked server inherits the answers.

    An ABC answers `isinstance` for a type it has not seen by walking its registry and every subclass (hundreds
    once the server's libraries are imported), then remembers the answer; in a forked server the walk cost 0.1 to
    0.5 ms and dozens of copied pages per check. These are the start's: a log record with one argument (is it a
    Mapping?), asyncio's `iscoroutine` on callbacks and tasks, grpc's reflection on the gRPC server.
    """
    from collections.abc import Coroutine, Mapping, Sequence
    from types import MethodType

    import grpc.aio
    from edgewise.runtime.scoring.h2grpc.server import NativeServer

    checks: tuple[tuple[type, tuple[type, ...]], ...] = (
        (Mapping, (str, type(Path()), int, float, bytes, tuple, list)),
        (Coroutine, (MethodType, set, asyncio.Task, asyncio.Future, functools.partial, type(lambda: None))),
        (Sequence, (list, tuple, str)),
        (grpc.aio.Server, (NativeServer,)),
    )
    for abc, types in checks:
        for kind in types:
            issubclass(kind, abc)


async def run_server(settings: ServerSettings) -> None:
    server = ScoringServer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()

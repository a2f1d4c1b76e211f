"""Faults to inject into a simulated fleet: a broker restart, and a device's network link cut, stalled or slowed.

`LinkProxy` sits on 127.0.0.1 between one agent and the broker, so a fault touches one device and nothing in
the agent is changed or bypassed: the agent sees exactly what a real network would do to its TCP connection.

- `cut()`: every connection is reset at once and new ones are reset as soon as they are accepted (the broker
  sees the connection drop and publishes the device's will at once);
- `stall()`: nothing moves in either direction, but no connection is closed, as when a cable is pulled; the
  broker notices only when the device's keep-alive runs out (1.5 times the keepalive) and then publishes the will;
- `delay(seconds)` adds one-way latency in each direction (a round trip gains twice that);
- `throttle(bytes_per_s)` limits each direction of each connection to that rate;
- `restore()` ends a cut or a stall (stalled bytes then flow on, as TCP would deliver them late).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgewise.cloud.broker import BrokerManager

log = logging.getLogger("edgewise.simulators.faults")

_CHUNK = 64 * 1024
_CONTROL_TIMEOUT = 10.0


def check_loopback(host: str) -> str:
    """Simulators talk to 127.0.0.1 only; anything else is refused before a socket is opened."""
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"{host!r} is not a loopback address; simulated fleets and faults stay on 127.0.0.1")


@dataclass(frozen=True, kw_only=True)
class ProxyStats:
    accepted: int  # connections accepted since start
    active: int  # connections currently forwarded (or held by a stall)
    reset: int  # connections reset by cut() or refused while cut
    bytes_up: int  # agent → broker
    bytes_down: int  # broker → agent


class _Pipe:
    """One proxied connection: the agent's side, the broker's side, and a pump per direction."""

    def __init__(self, proxy: LinkProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client_reader = reader
        self.client_writer = writer
        self.server_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        proxy = self.proxy
        try:
            await proxy._open.wait()  # a stalled link holds new connections too
            if proxy._cut:
                self.reset()
                return
            try:
                server_reader, self.server_writer = await asyncio.open_connection(proxy.target_host, proxy.target_port)
            except OSError:
                self.reset()
                return
            self.tasks = [
                asyncio.create_task(self._pump(self.client_reader, self.server_writer, up=True)),
                asyncio.create_task(self._pump(server_reader, self.client_writer, up=False)),
            ]
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Copy one direction, in order: latency is applied per chunk and the rate by pacing the writes."""
        proxy = self.proxy
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while True:
                await proxy._open.wait()
                data = await reader.read(_CHUNK)
                queue.put_nowait((time.monotonic() + proxy._delay, data))
                if not data:
                    return

        reading = asyncio.create_task(read())
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    return
                await self._write(writer, data, up=up)
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, *, up: bool) -> None:
        proxy = self.proxy
        view = memoryview(data)
        while view:
            await proxy._open.wait()
            rate = proxy._rate
            size = len(view) if rate is None else max(256, min(len(view), int(rate / 20)))
            writer.write(view[:size])
            await writer.drain()
            if up:
                proxy._bytes_up += size
            else:
                proxy._bytes_down += size
            view = view[size:]
            if rate is not None:
                await asyncio.sleep(size / rate)

    def reset(self) -> None:
        """Close both sides with a TCP reset, as a dropped link or a refused connection looks to the peers."""
        self.proxy._reset += 1
        for writer in (self.client_writer, self.server_writer):
            if writer is not None:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()

    def close(self) -> None:
        for writer in (self.client_writer, self.server_writer):
            if writer is not None and not writer.transport.is_closing():
                writer.transport.close()


class LinkProxy:
    """A TCP proxy on 127.0.0.1 from `listen_port` (0: any free port) to `target_port`, with faults to switch on.

    Start and close it on an event loop; the fault switches may be called from any thread and take effect
    before they return.
    """

    def __init__(
        self, *, target_port: int, listen_port: int = 0, host: str = "127.0.0.1", target_host: str = "127.0.0.1"
    ) -> None:
        self.host = check_loopback(host)
        self.target_host = check_loopback(target_host)
        self.target_port = target_port
        self.listen_port = listen_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = asyncio.Event()
        self._open.set()
        self._cut = False
        self._delay = 0.0
        self._rate: float | None = None
        self._accepted = 0
        self._reset = 0
        self._bytes_up = 0
        self._bytes_down = 0

    @property
    def port(self) -> int:
        """The port agents connect to (the bound one once started)."""
        return self.listen_port

    async def start(self) -> LinkProxy:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, self.host, self.listen_port)
        self.listen_port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def stats(self) -> ProxyStats:
        return ProxyStats(
            accepted=self._accepted,
            active=len(self._pipes),
            reset=self._reset,
            bytes_up=self._bytes_up,
            bytes_down=self._bytes_down,
        )

    # -- faults -----------------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every connection now and every new one until `restore()`."""
        self._control(self._do_cut)

    def stall(self) -> None:
        """Stop moving bytes (and hold new connections) without closing anything, until `restore()`."""
        self._control(self._open.clear)

    def restore(self) -> None:
        """End a cut or a stall; delay and throttle stay as they are."""
        self._control(self._do_restore)

    def delay(self, seconds: float) -> None:
        """Add `seconds` of one-way latency to each direction (0 removes it); applies to bytes read from now on."""
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        self._control(lambda: setattr(self, "_delay", float(seconds)))

    def throttle(self, bytes_per_s: float | None) -> None:
        """Limit each direction of each connection to `bytes_per_s` (None removes the limit)."""
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError("a rate limit must be positive (None removes it)")
        self._control(lambda: setattr(self, "_rate", None if bytes_per_s is None else float(bytes_per_s)))

    def _do_cut(self) -> None:
        self._cut = True
        self._open.set()  # held connections are let go, to be reset
        for pipe in list(self._pipes):
            pipe.reset()

    def _do_restore(self) -> None:
        self._cut = False
        self._open.set()

    def _control(self, action: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            action()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            action()
            return

        async def apply() -> None:
            action()

        asyncio.run_coroutine_threadsafe(apply(), loop).result(_CONTROL_TIMEOUT)

    # -- connections ------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        pipe = _Pipe(self, reader, writer)
        if self._cut:
            pipe.reset()
            return
        self._pipes.add(pipe)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await pipe.run()
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("proxied connection ended: %s", exc)
        finally:
            self._pipes.discard(pipe)
            if task is not None:
                self._tasks.discard(task)


# -- the broker ---------------------------------------------------------------------------------------


async def restart_broker(manager: BrokerManager, *, downtime: float = 0.0) -> None:
    """Stop the broker, keep it down for `downtime` seconds, start it again on the same port.

    Mosquitto saves its persistent sessions and retained messages when stopped, so devices find their
    subscriptions and queued messages again, as after a real broker restart. An embedded broker must be
    restarted on the event loop it was started on.
    """
    await manager.stop()
    if downtime > 0:
        await asyncio.sleep(downtime)
    await manager.start()

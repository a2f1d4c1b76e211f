"""LinkProxy on its own: bytes pass through intact under latency and a rate limit; cut and stall act at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from edgewise.simulators import LinkProxy


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 20)
    finally:
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except ConnectionResetError:
        return True


def test_bytes_pass_intact_with_latency_and_a_rate_limit() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = await LinkProxy(target_port=port).start()
            try:
                payload = bytes(range(256)) * 200  # 51200 bytes
                assert await round_trip(proxy.port, payload) == payload
                proxy.delay(0.05)
                proxy.throttle(200_000)
                assert await round_trip(proxy.port, payload) == payload
                stats = proxy.stats()
                assert stats.accepted == 2
                assert stats.bytes_up == stats.bytes_down == 2 * len(payload)
            finally:
                await proxy.close()

    asyncio.run(scenario())


def test_cut_resets_connections_and_refuses_new_ones_until_restored() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = await LinkProxy(target_port=port).start()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
                proxy.cut()
                assert await closed_by_peer(reader)
                writer.close()

                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                assert await closed_by_peer(reader), "a new connection went through a cut link"
                writer.close()
                assert proxy.stats().reset >= 2

                proxy.restore()
                assert await round_trip(proxy.port, b"back") == b"back"
            finally:
                await proxy.close()

    asyncio.run(scenario())


def test_stall_holds_bytes_and_restore_delivers_them() -> None:
    async def scenario() -> None:
        async with echo_server() as port:
            proxy = await LinkProxy(target_port=port).start()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                proxy.stall()
                writer.write(b"held")
                await writer.drain()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(reader.readexactly(4), 0.5)
                assert proxy.stats().active == 1, "a stall must not close the connection"
                proxy.restore()
                assert await asyncio.wait_for(reader.readexactly(4), 10) == b"held"
                writer.close()
            finally:
                await proxy.close()

    asyncio.run(scenario())


def test_only_loopback_addresses_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LinkProxy(target_port=1883, target_host="10.0.0.1")
    with pytest.raises(ValueError, match="negative"):
        LinkProxy(target_port=1883).delay(-1)

"""The agent's gRPC health check, against real gRPC servers on unix sockets: grpcio's (the scoring server's other
engine; its native engine is covered by every module start in the module tests) and sockets that misbehave."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from edgewise.runtime.agent import grpc_health
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


@asynccontextmanager
async def _grpcio_server(servicer: health.aio.HealthServicer | None) -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ew-grpc-", dir="/tmp") as folder:
        path = Path(folder) / "grpc.sock"
        server = grpc.aio.server()
        if servicer is not None:
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        try:
            yield path
        finally:
            await server.stop(None)


async def _with_servicer(status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> tuple[bool, str]:
    servicer = health.aio.HealthServicer()
    await servicer.set("", status)
    async with _grpcio_server(servicer) as path:
        return await grpc_health.check(path, timeout=5)


def test_a_serving_grpcio_server_is_serving() -> None:
    assert asyncio.run(_with_servicer(health_pb2.HealthCheckResponse.SERVING)) == (True, "gRPC serving")


def test_a_server_that_is_not_serving_says_so() -> None:
    serving, detail = asyncio.run(_with_servicer(health_pb2.HealthCheckResponse.NOT_SERVING))
    assert not serving
    assert detail == "gRPC health: NOT_SERVING"


def test_a_server_without_the_health_service_fails_the_check() -> None:
    async def run() -> tuple[bool, str]:
        async with _grpcio_server(None) as path:
            return await grpc_health.check(path, timeout=5)

    assert asyncio.run(run()) == (False, "gRPC health: the call ended without an answer")


def test_many_checks_in_a_row_each_get_their_answer() -> None:
    async def run() -> list[tuple[bool, str]]:
        servicer = health.aio.HealthServicer()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        async with _grpcio_server(servicer) as path:
            return list(await asyncio.gather(*(grpc_health.check(path, timeout=5) for _ in range(20))))

    assert asyncio.run(run()) == [(True, "gRPC serving")] * 20


async def _raw(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="ew-grpc-", dir="/tmp") as folder:
        path = Path(folder) / "grpc.sock"
        server = await asyncio.start_unix_server(answer, str(path))
        async with server:
            return await grpc_health.check(path, timeout=0.5)


def test_a_socket_that_closes_at_once_fails_the_check() -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    serving, detail = asyncio.run(_raw(close))
    assert not serving
    assert detail.startswith("gRPC health: ")


def test_a_socket_that_never_answers_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(5)

    assert asyncio.run(_raw(silent)) == (False, "gRPC health: no answer within 0.5s")


def test_a_missing_socket_fails_the_check(tmp_path: Path) -> None:
    serving, detail = asyncio.run(grpc_health.check(tmp_path / "grpc.sock", timeout=1))
    assert not serving
    assert "No such file" in detail


@pytest.mark.parametrize(
    ("value", "prefix", "encoded"),
    [(10, 5, b"\x0a"), (1337, 5, b"\x1f\x9a\x0a"), (31, 4, b"\x0f\x10"), (4, 4, b"\x04")],
)
def test_hpack_integers(value: int, prefix: int, encoded: bytes) -> None:
    assert grpc_health._integer(value, prefix, 0) == encoded  # the first two are RFC 7541's examples (C.1)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"\x00\x00\x00\x00\x02\x08\x01", 1),
        (b"\x00\x00\x00\x00\x02\x08\x02", 2),
        (b"\x00\x00\x00\x00\x00", 0),  # proto3 leaves the default (UNKNOWN) out
        (b"\x00\x00\x00\x00\x06\x12\x02hi\x08\x01", 1),  # an unknown field first is skipped
    ],
)
def test_health_answers_are_read(body: bytes, status: int) -> None:
    assert grpc_health._serving_status(body) == status


@pytest.mark.parametrize(
    "body", [b"\x00\x00", b"\x01\x00\x00\x00\x02\x08\x01", b"\x00\x00\x00\x00\x05\x08\x01", b"\x00\x00\x00\x00\x01\x08"]
)
def test_unreadable_health_answers_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        grpc_health._serving_status(body)

"""The agent's HTTP/1.1 client for its modules' admin sockets, against real unix-socket servers that answer
with each framing HTTP allows (the scoring server's own answers are covered by the module tests)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from edgewise.runtime.agent import unixhttp

Handler = Callable[[bytes], bytes]


async def _serve(handler: Handler, body: Callable[[Path], Awaitable[None]], *, piece: int = 0) -> list[bytes]:
    """Run `body` against a unix-socket server that answers every request with `handler(request)` (in pieces of
    `piece` bytes, each sent on its own, when given)."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
        )
        request = head + (await reader.readexactly(length) if length else b"")
        seen.append(request)
        answer = handler(request)
        for start in range(0, len(answer), piece or len(answer) or 1):
            writer.write(answer[start : start + (piece or len(answer))])
            await writer.drain()
            if piece:
                await asyncio.sleep(0.001)
        writer.close()

    with tempfile.TemporaryDirectory(prefix="ew-http-", dir="/tmp") as folder:
        path = Path(folder) / "http.sock"
        server = await asyncio.start_unix_server(answer, str(path))
        async with server:
            await body(path)
    return seen


def _exchange(
    handler: Handler, method: str = "GET", body: object = None, timeout: float = 5.0, piece: int = 0
) -> tuple[tuple[int, bytes], list[bytes]]:
    result: list[tuple[int, bytes]] = []

    async def ask(path: Path) -> None:
        result.append(await unixhttp.request_async(path, method, "/v2/x?y=1", body=body, timeout=timeout))

    seen = asyncio.run(_serve(handler, ask, piece=piece))
    return result[0], seen


def test_a_post_sends_its_json_body_and_reads_a_content_length_answer() -> None:
    answer, seen = _exchange(lambda _: b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello", "POST", {"a": 1})
    assert answer == (201, b"hello")
    assert seen[0].startswith(b"POST /v2/x?y=1 HTTP/1.1\r\n")
    assert b"Content-Type: application/json" in seen[0] and seen[0].endswith(b'\r\n\r\n{"a": 1}')


def test_a_chunked_answer_and_one_ended_by_closing_are_read_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n"
    assert _exchange(lambda _: chunked)[0] == (200, b"abcde")
    assert _exchange(lambda _: b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\nno such thing")[0] == (
        404,
        b"no such thing",
    )


def test_an_answer_that_arrives_a_few_bytes_at_a_time_is_read_whole() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert _exchange(lambda _: chunked, piece=3)[0] == (200, b"abcde")
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"
    assert _exchange(lambda _: sized, piece=2)[0] == (200, b"hello world")


def test_an_answer_that_is_not_http_or_is_cut_short_is_an_os_error() -> None:
    with pytest.raises(OSError, match="bad HTTP answer"):
        _exchange(lambda _: b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(OSError, match="bad HTTP answer"):
        _exchange(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(OSError, match="bad HTTP answer"):  # a header that never ends
        _exchange(lambda _: b"HTTP/1.1 200 OK\r\nX: " + b"y" * 200_000)


def test_no_server_is_an_os_error_and_a_silent_one_a_timeout(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        asyncio.run(unixhttp.request_async(tmp_path / "none.sock", "GET", "/", timeout=1.0))

    async def silent(path: Path) -> None:
        with pytest.raises(TimeoutError, match="no answer"):
            await unixhttp.request_async(path, "GET", "/", timeout=0.2)

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def run() -> None:
        with tempfile.TemporaryDirectory(prefix="ew-http-", dir="/tmp") as folder:
            path = Path(folder) / "http.sock"
            server = await asyncio.start_unix_server(never, str(path))
            async with server:
                await silent(path)
                server.close()

    asyncio.run(run())

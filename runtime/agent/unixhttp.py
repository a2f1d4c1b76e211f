"""Plain HTTP/1.1 over a module's private unix socket (or host:port), with nothing but the standard library.

The agent talks to its modules this way for health checks, the listen request and statistics, so an idle agent
never loads an HTTP client library.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from pathlib import Path
from typing import Any

from edgewise.runtime.agent.unixstream import UnixStream


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose transport is the unix socket at `path`."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(target: Path | str, method: str, path: str, *, body: Any = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """One request to a unix socket (a Path) or "host:port" (a str); (status, body). OSError when unreachable."""
    if isinstance(target, Path):
        connection: http.client.HTTPConnection = UnixHTTPConnection(target, timeout)
    else:
        host, _, port = target.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    payload = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer from {target}: {exc!r}") from None
    finally:
        connection.close()


async def request_async(
    socket_path: Path, method: str, path: str, *, body: Any = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """`request` to a unix socket on the event loop: no thread and no header parser beyond what the agent's own
    modules send (a status line, Content-Length or chunked). The agent makes several of these per module start.

    (status, body); OSError when unreachable or the answer is not HTTP, TimeoutError after `timeout`."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    elif method not in ("GET", "HEAD"):
        head += "Content-Length: 0\r\n"
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(socket_path, head.encode() + b"\r\n" + payload)
    except TimeoutError:
        raise TimeoutError(f"no answer from {socket_path} to {method} {path} within {timeout:g}s") from None


async def _exchange(socket_path: Path, message: bytes) -> tuple[int, bytes]:
    stream = await UnixStream.connect(socket_path)
    try:
        await stream.send(message)
        head = await stream.read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise OSError(f"bad HTTP answer from {socket_path}: {lines[0][:80]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        if "chunked" in headers.get("transfer-encoding", "").lower():
            content = await _read_chunked(stream)
        elif "content-length" in headers:
            content = await stream.read_exactly(int(headers["content-length"]))
        else:
            content = await stream.read_to_end()
        return int(parts[1]), content
    except (asyncio.IncompleteReadError, ValueError) as exc:
        raise OSError(f"bad HTTP answer from {socket_path}: {exc!r}") from None
    finally:
        stream.close()


async def _read_chunked(stream: UnixStream) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await stream.read_until(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await stream.read_until(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunks.append(await stream.read_exactly(size))
        await stream.read_exactly(2)

"""A unix socket read and written through the event loop's own socket calls.

The agent's exchanges with a module are a few short messages each (a health check, the admin state, the listen
request), several per module start. asyncio's streams build a transport, a protocol, a reader and a writer for
each connection; this keeps one non-blocking socket and a buffer, about half the CPU per exchange.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

_RECEIVE = 65536  # bytes asked for per receive
LIMIT = 65536  # bytes `read_until` looks through for its separator


class UnixStream:
    """One connection; reads raise asyncio.IncompleteReadError when the peer closes first (as streams do)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._eof = False

    @classmethod
    async def connect(cls, path: Path) -> UnixStream:
        """OSError (FileNotFoundError, ConnectionRefusedError, ...) when nothing listens at `path`."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, str(path))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self._loop.sock_sendall(self._sock, data)

    async def read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buffer), size)
        return self._take(size)

    async def read_until(self, separator: bytes) -> bytes:
        """Up to and including `separator`; ValueError when it is not within LIMIT bytes."""
        start = 0
        while True:
            found = self._buffer.find(separator, start)
            if found >= 0:
                return self._take(found + len(separator))
            if len(self._buffer) > LIMIT:
                raise ValueError(f"no {separator!r} within {LIMIT} bytes")
            start = max(0, len(self._buffer) - len(separator) + 1)
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buffer), None)

    async def read_to_end(self) -> bytes:
        while await self._fill():
            pass
        return self._take(len(self._buffer))

    def close(self) -> None:
        self._sock.close()

    async def _fill(self) -> bool:
        """Receive what has arrived into the buffer; False at the end of the stream."""
        if self._eof:
            return False
        data = await self._loop.sock_recv(self._sock, _RECEIVE)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

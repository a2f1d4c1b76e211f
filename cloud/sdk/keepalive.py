"""One persistent HTTP/1.1 connection for the client's small JSON calls.

httpx costs about half a millisecond per request on top of the wire; the standard library's `http.client` on a
kept-alive socket costs a fraction of that, and most workspace calls (log a batch, register a version, read a
run) are small. Streams (uploads and downloads of blobs) stay with httpx.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class KeepAliveConnection:
    """Requests on one reused socket, one at a time; a socket the server closed while idle is replaced first."""

    def __init__(self, *, base_url: str, headers: Mapping[str, str], timeout: float) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/") + "/"
        self._headers = dict(headers)
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def request(
        self, method: str, path: str, *, content: bytes | None, params: Any, headers: Mapping[str, str] | None
    ) -> httpx.Response:
        """The answer as an `httpx.Response`, so callers handle both paths alike; transport failures raise
        `httpx.TransportError` subclasses, as httpx would."""
        target = self._prefix + path.lstrip("/")
        query = _encode(params)
        if query:
            target += "?" + query
        sent_headers = {**self._headers, **(headers or {})}
        with self._lock:
            for attempt in range(2):
                conn = self._connection()
                try:
                    conn.request(method, target, body=content, headers=sent_headers)
                    answer = conn.getresponse()
                    body = answer.read()
                except (ConnectionError, http.client.HTTPException, OSError) as exc:
                    self._drop()
                    # A request that may have reached the service is retried only if repeating it is harmless.
                    if attempt == 0 and method in _IDEMPOTENT:
                        continue
                    raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
                if answer.will_close:
                    self._drop()
                # No httpx.Request: parsing its URL back would cost a sixth of a small call, and nothing reads it.
                return httpx.Response(answer.status, headers=answer.getheaders(), content=body)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is not None and _closed_by_peer(self._conn):
            self._drop()
        if self._conn is None:
            cls = _HTTPSConnection if self._https else _HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _OneSegment:
    """A request with a small body leaves in one send with TCP_NODELAY: `http.client` writes the head and the
    body separately, and the second write then waits for the peer's ACK of the first (Nagle) or wakes the
    server twice."""

    sock: socket.socket | None
    _buffer: list[bytes]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        if self.sock is not None:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked and len(message_body) <= _ONE_SEGMENT_BYTES:
            self._buffer.extend((b"", message_body))
            message = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(message)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPConnection(_OneSegment, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneSegment, http.client.HTTPSConnection):
    pass


_ONE_SEGMENT_BYTES = 1 << 20  # larger bodies go out as they are; copying them would cost more than a send


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket that is readable has been closed (or broken) by the server."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _encode(params: Any) -> str:
    if not params:
        return ""
    pairs = params.items() if isinstance(params, Mapping) else params
    return urlencode([(key, _text(value)) for key, value in pairs if value is not None])


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)

"""One server-side gRPC-over-HTTP/2 connection, run by the native layer (h2grpc.c) and driven from asyncio.

The application feeds socket bytes to `receive`, acts on the events it returns, queues responses with the
`send_*` calls and writes what `output` returns. HTTP/2 (flow control, HPACK, PING, SETTINGS) and gRPC message
framing happen in C. A call into C through cffi costs a few hundred nanoseconds, so the hot path is two calls
per response plus one `receive` and one `output` per socket read, and `receive` decodes one flat event buffer.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from edgewise.runtime.scoring.h2grpc.native import load


class H2ProtocolError(Exception):
    """The peer broke HTTP/2; the connection must be closed (after writing what `output` still returns)."""


class InvalidMetadata(ValueError):
    """Response metadata gRPC cannot carry; nothing of the call was sent, so the caller can still end it."""


# Event kinds: the first item of each event tuple `receive` returns.
REQUEST = 1  # (REQUEST, stream_id, path, metadata): a new call; metadata = every regular header, names lower-case
MESSAGE = 2  # (MESSAGE, stream_id, payload, compressed): one complete gRPC message (see `release`)
END = 3  # (END, stream_id): the client half-closed after its messages
CLOSED = 4  # (CLOSED, stream_id, h2_error_code): the stream is gone; 0 = closed normally. One per REQUEST.
TOO_LARGE = 5  # (TOO_LARGE, stream_id, size): a message over max_message_bytes, discarded as it arrives

Event = tuple[Any, ...]

CANCEL = 8  # the HTTP/2 error code RST_STREAM uses by default

_HEAD = struct.Struct("=BBxxII")  # kind, compressed flag, stream id, argument (see h2grpc.c)
_HEAD_SIZE = _HEAD.size
_OK_TRAILERS = b"grpc-status\x000\x00"
_MAX_INT32 = (1 << 31) - 1

# Results of the native calls on a stream (h2grpc.c).
_IGNORED = 1
_HEADERS_SENT = 2
_QUEUE_FULL = 3
_NOMEM = -1
# Results of h2g_receive below zero.
_RECV_PROTOCOL = -1
_RECV_NOMEM = -2
_RECV_CLOSED = -3


# A client sends the same headers call after call (path, content-type, te, user-agent, ...), so the parsed form
# of recent header blocks is kept: a hit costs a dict lookup instead of a split and a tuple per header.
_known_requests: dict[bytes, tuple[str, tuple[tuple[str, str], ...]]] = {}
_KNOWN_REQUESTS_MAX = 256
_KNOWN_REQUEST_BYTES_MAX = 2048


def _parse_request(block: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The path and the headers of a REQUEST event's payload: the path, then name and value of each header,
    all separated by NUL (which HTTP/2 forbids inside names and values)."""
    fields = iter(block.decode("latin-1").split("\0"))
    path = next(fields)
    parsed = (path, tuple(zip(fields, fields, strict=True)))
    if len(block) <= _KNOWN_REQUEST_BYTES_MAX:
        if len(_known_requests) >= _KNOWN_REQUESTS_MAX:
            _known_requests.clear()
        _known_requests[block] = parsed
    return parsed


def percent_encode(message: str) -> str:
    """grpc-message as the gRPC HTTP/2 spec wants it: UTF-8, with bytes outside 0x20-0x7E and '%' as %XX."""
    if message.isascii() and message.isprintable() and "%" not in message:
        return message
    return "".join(
        chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}"
        for byte in message.encode("utf-8", "surrogatepass")
    )


_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _printable_ascii(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and value.isprintable()


def _header_blob(pairs: Sequence[tuple[str, str]], into: list[bytes]) -> None:
    for name, value in pairs:
        name = name.lower() if isinstance(name, str) else ""
        if not name or not _NAME_CHARACTERS.issuperset(name) or not _printable_ascii(value):
            raise InvalidMetadata(
                f"metadata {name!r}: {value!r} cannot be sent: gRPC keys are made of a-z, 0-9, '-', '_' and '.', "
                "values are printable ASCII (bytes go in keys ending in -bin)"
            )
        into.append(name.encode("ascii") + b"\0" + value.encode("ascii") + b"\0")


class Connection:
    """One server-side HTTP/2 connection."""

    def __init__(
        self,
        *,
        max_message_bytes: int,
        max_concurrent_streams: int = 1024,
        stream_window: int = 1 << 20,
        connection_window: int = 1 << 24,
        send_queue_limit: int = 1 << 20,
    ) -> None:
        if not 0 <= max_message_bytes <= 0xFFFFFFFF:
            raise ValueError(f"max_message_bytes must be between 0 and 4 GiB - 1, not {max_message_bytes}")
        if not 1 <= max_concurrent_streams <= 0xFFFFFFFF:
            raise ValueError(f"max_concurrent_streams must be at least 1, not {max_concurrent_streams}")
        for name, window in (("stream_window", stream_window), ("connection_window", connection_window)):
            if not 65535 <= window <= _MAX_INT32:
                raise ValueError(f"{name} must be between 65535 and 2^31 - 1 bytes (HTTP/2's limits), not {window}")
        if send_queue_limit < 0:
            raise ValueError(f"send_queue_limit must not be negative, not {send_queue_limit}")
        self.send_queue_limit = send_queue_limit
        native = load()
        self._ffi: Any = native.ffi
        self._lib: Any = native.lib
        self._c: Any = self._lib.h2g_new(
            max_message_bytes, max_concurrent_streams, stream_window, connection_window, send_queue_limit
        )
        if self._c == self._ffi.NULL:
            raise MemoryError("cannot create an HTTP/2 session")
        self._pointer: Any = self._ffi.new("const char **")

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; returns the events they complete, in order.

        Streams that `output` closed (its END_STREAM or RST_STREAM went out) report CLOSED with the next
        `receive`; `receive(b"")` collects such events without new input.
        """
        pointer = self._pointer
        if type(data) is not bytes:
            data = bytes(data)
        n = self._lib.h2g_receive(self._c, data, len(data), pointer)
        if n <= 0:
            if n == 0 or n == _RECV_CLOSED:
                return []
            if n == _RECV_NOMEM:
                raise MemoryError("out of memory in the HTTP/2 session")
            raise H2ProtocolError(self._ffi.string(self._lib.h2g_error(self._c)).decode("utf-8", "replace"))
        buffer = self._ffi.buffer(pointer[0], n)
        events: list[Event] = []
        append = events.append
        unpack = _HEAD.unpack_from
        pos = 0
        while pos < n:
            kind, flag, stream_id, arg = unpack(buffer, pos)
            pos += _HEAD_SIZE
            if kind == MESSAGE:
                end = pos + arg
                append((MESSAGE, stream_id, buffer[pos:end], flag != 0))
                pos = end
            elif kind == REQUEST:
                end = pos + arg
                block = buffer[pos:end]
                pos = end
                known = _known_requests.get(block)
                if known is None:
                    known = _parse_request(block)
                append((REQUEST, stream_id, known[0], list(known[1])))
            elif kind == END:
                append((END, stream_id))
            else:
                append((kind, stream_id, arg))
        return events

    def output(self) -> bytes:
        """Everything nghttp2 wants to write now; b"" when there is nothing."""
        pointer = self._pointer
        n = self._lib.h2g_output(self._c, pointer)
        if n <= 0:
            if n == 0:
                return b""
            if n == _NOMEM:
                raise MemoryError("out of memory in the HTTP/2 session")
            raise H2ProtocolError("the HTTP/2 session failed while writing")
        return self._ffi.buffer(pointer[0], n)[:]  # type: ignore[no-any-return]

    def _check(self, rv: int) -> None:
        if rv == _NOMEM:
            raise MemoryError("out of memory in the HTTP/2 session")
        if rv < 0:
            raise ValueError("nghttp2 refused the frame (is the stream still open?)")

    def send_message(self, stream_id: int, payload: bytes) -> bool:
        """Queue one uncompressed response message; the first one also queues the response HEADERS.

        True when the stream now has more than `send_queue_limit` bytes waiting for the client's flow-control
        window: a streaming sender should wait until `queued` is back under the limit, or memory grows with
        every message a slow client does not take.
        """
        if type(payload) is not bytes:
            payload = self._ffi.from_buffer(payload)
        rv = self._lib.h2g_send_message(self._c, stream_id, payload, len(payload))
        if rv:
            if rv == _QUEUE_FULL:
                return True
            self._check(rv)
        return False

    def queued(self, stream_id: int) -> int:
        """Bytes of the stream's response messages not yet written into DATA frames; -1 once the stream is gone."""
        return int(self._lib.h2g_queued(self._c, stream_id))

    def release(self, stream_id: int, size: int) -> bool:
        """The application took `size` bytes of the stream's messages (5 + payload length each, as received).

        A stream's flow-control window only reopens while less than one window of its messages is left
        untaken, which keeps a client from queueing without bound for a handler that reads slowly. True when
        this queued a WINDOW_UPDATE, so `output` has something to write.
        """
        return bool(self._lib.h2g_release(self._c, stream_id, size))

    def send_initial_metadata(self, stream_id: int, metadata: Sequence[tuple[str, str]]) -> None:
        """Send the response HEADERS now, with `metadata`; only before the first message and the trailers.

        Raises InvalidMetadata (and sends nothing) for metadata gRPC cannot carry."""
        parts: list[bytes] = []
        _header_blob(metadata, parts)
        blob = b"".join(parts)
        rv = self._lib.h2g_send_headers(self._c, stream_id, blob, len(blob))
        if rv == _HEADERS_SENT:
            raise ValueError(f"the response headers of stream {stream_id} were already sent")
        if rv and rv != _IGNORED:
            self._check(rv)

    def send_trailers(
        self, stream_id: int, status: int, message: str = "", metadata: Sequence[tuple[str, str]] = ()
    ) -> None:
        """End the stream with grpc-status, grpc-message and `metadata`, after every queued message.

        Without a message or initial metadata sent first, this is a Trailers-Only response: one HEADERS frame.
        Raises InvalidMetadata (and sends nothing) for metadata gRPC cannot carry.
        """
        if status == 0 and not message and not metadata:
            blob = _OK_TRAILERS
        else:
            parts = [b"grpc-status\0%d\0" % status]
            if message:
                parts.append(b"grpc-message\0" + percent_encode(message).encode("ascii") + b"\0")
            _header_blob(metadata, parts)
            blob = b"".join(parts)
        rv = self._lib.h2g_send_trailers(self._c, stream_id, blob, len(blob))
        if rv and rv != _IGNORED:
            self._check(rv)

    def reset(self, stream_id: int, error_code: int = CANCEL) -> None:
        """RST_STREAM: abandon the stream now (8 = CANCEL)."""
        rv = self._lib.h2g_reset(self._c, stream_id, error_code)
        if rv and rv != _IGNORED:
            self._check(rv)

    def shutdown(self, *, graceful: bool = True) -> None:
        """GOAWAY. Graceful: a notice first, then (once a PING round trip shows the client has seen it) the
        final GOAWAY, so no stream the client opened in between is lost; open streams finish either way.
        Not graceful: one final GOAWAY, and the connection is done as soon as it is written."""
        self._lib.h2g_shutdown(self._c, 1 if graceful else 0)

    @property
    def open_streams(self) -> int:
        """Calls whose REQUEST was given and whose CLOSED was not yet."""
        return int(self._lib.h2g_open_streams(self._c))

    @property
    def wants_close(self) -> bool:
        """nghttp2 neither wants to read nor write: after GOAWAY with every stream done, or a protocol error."""
        return bool(self._lib.h2g_wants_close(self._c))

    def close(self) -> None:
        """Free the native session. Idempotent; calls after it are ignored and produce nothing."""
        c = self._c
        if c is not None and c != self._ffi.NULL:
            self._c = self._ffi.NULL
            self._lib.h2g_free(c)

    def __del__(self) -> None:
        if getattr(self, "_c", None) is not None:
            self.close()

"""A gRPC server on the native HTTP/2 layer, with the part of `grpc.aio.Server`'s surface edgewise uses.

grpcio's servicers plug in unchanged: `add_generic_rpc_handlers` and `add_registered_method_handlers` take the
same handler objects (so `grpc_health` and `grpc_reflection` register themselves as they do on grpcio), and
handlers get a context with grpc.aio's methods (`abort`, `set_code`, `write`, `read`, metadata, deadline). What
differs is the cost: HTTP/2 and message framing run in C, and a unary call costs one task and a few calls into C.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import socket
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import grpc
from edgewise.runtime.scoring.h2grpc.connection import (
    CLOSED,
    END,
    MESSAGE,
    REQUEST,
    TOO_LARGE,
    Connection,
    H2ProtocolError,
    InvalidMetadata,
)

log = logging.getLogger("edgewise.scoring.grpc")

Metadata = tuple[tuple[str, str | bytes], ...]
_OK = grpc.StatusCode.OK.value[0]
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]
_EOF = object()
# Headers that belong to the transport: grpcio keeps them out of `invocation_metadata()`, and so does this server.
_TRANSPORT_HEADERS = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_WRITE_HIGH_WATER = 4 << 20  # bytes queued on a transport before streaming handlers wait for it to drain
_CLOSE_WAIT_S = 1.0  # how long a stopping server waits at least for its connections to close
_LINGER_S = 10.0  # how long a connection that is done waits for the client to close its side


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: Metadata


class AbortError(Exception):
    """Ends a call with its status (raised by `ServicerContext.abort`, and by the server when a request cannot be
    read); never escapes the server."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def parse_timeout(value: str) -> float | None:
    """Seconds of a `grpc-timeout` header ("100m", "5S", ...); None when it does not parse."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def _decode_metadata(pairs: Iterable[tuple[str, str]]) -> Metadata:
    out: list[tuple[str, str | bytes]] = []
    for key, value in pairs:
        if key in _TRANSPORT_HEADERS:
            continue
        if key.endswith("-bin"):
            padded = value + "=" * (-len(value) % 4)
            with contextlib.suppress(ValueError):
                out.append((key, base64.b64decode(padded)))
            continue
        out.append((key, value))
    return tuple(out)


def _encode_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in metadata or ():
        key = key.lower()
        if isinstance(value, str) and key.endswith("-bin"):
            value = value.encode("utf-8")
        if isinstance(value, bytes):
            out.append((key, base64.b64encode(value).decode("ascii").rstrip("=")))
        else:
            out.append((key, value))
    return out


class _Call:
    """One RPC: its stream, method, context, handler task and, for request streams, the queue of messages."""

    __slots__ = (
        "context",
        "deadline_handle",
        "eof",
        "finished",
        "messages",
        "method",
        "request",
        "request_count",
        "stream_id",
        "task",
    )  # fmt: skip

    def __init__(self, stream_id: int, method: grpc.RpcMethodHandler[Any, Any], context: ServicerContext) -> None:
        self.stream_id = stream_id
        self.method = method
        self.context = context
        self.task: asyncio.Task[None] | None = None
        # request messages of request-streaming calls: (payload, bytes it took on the wire), then _EOF
        self.messages: asyncio.Queue[Any] | None = None
        self.eof = False  # _EOF was taken from `messages`: every later read is EOF too
        self.request: bytes | None = None
        self.request_count = 0
        self.finished = False  # trailers sent (or the stream is gone): nothing more goes out
        self.deadline_handle: asyncio.TimerHandle | None = None


class ServicerContext:
    """What a handler sees of its call; the methods grpc.aio's `ServicerContext` has that servicers use."""

    __slots__ = (
        "_call",
        "_callbacks",
        "_cancelled",
        "_code",
        "_deadline",
        "_details",
        "_done",
        "_initial_sent",
        "_metadata",
        "_raw_metadata",
        "_session",
        "_trailing",
    )  # fmt: skip

    def __init__(self, session: _Session, raw_metadata: list[tuple[str, str]], deadline: float | None) -> None:
        self._session = session
        self._call: _Call | None = None
        self._raw_metadata = raw_metadata
        self._metadata: Metadata | None = None
        self._deadline = deadline
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Sequence[tuple[str, str | bytes]] = ()
        self._initial_sent = False
        self._callbacks: list[Callable[[ServicerContext], None]] = []
        self._cancelled = False
        self._done = False

    def invocation_metadata(self) -> Metadata:
        if self._metadata is None:
            self._metadata = _decode_metadata(self._raw_metadata)
        return self._metadata

    def peer(self) -> str:
        return self._session.peer

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, str | bytes]] = ()
    ) -> None:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort needs a status other than OK")
        if trailing_metadata:
            self._trailing = trailing_metadata
        raise AbortError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = trailing_metadata

    def trailing_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return self._trailing

    async def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        if self._initial_sent:
            raise RuntimeError("initial metadata was already sent")
        self._initial_sent = True
        if self._call is not None:
            self._session.initial_metadata(self._call, _encode_metadata(initial_metadata))

    async def write(self, message: Any) -> None:
        call = self._call
        if call is None or call.finished:
            raise RuntimeError("the call is over; nothing more can be written")
        self._initial_sent = True
        serializer = call.method.response_serializer
        await self._session.send(call, serializer(message) if serializer else message)

    async def read(self) -> Any:
        call = self._call
        if call is None or call.messages is None:
            raise RuntimeError("read() is only for request-streaming methods")
        payload = await self._session.next_request(call)
        if payload is _EOF:
            return grpc.aio.EOF
        deserializer = call.method.request_deserializer
        return deserializer(payload) if deserializer else payload

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[ServicerContext], None]) -> None:
        self._callbacks.append(callback)

    def _finish(self, cancelled: bool) -> None:
        if self._done:
            return
        self._done = True
        self._cancelled = cancelled
        for callback in self._callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("a gRPC done callback failed")


class Router:
    """Finds the handler of a method path among the registered and generic handlers, once per path."""

    def __init__(self) -> None:
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._cache: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    def add_generic(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)
        self._cache.clear()

    def add_registered(self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        for name, handler in handlers.items():
            self._registered[f"/{service}/{name}"] = handler
        self._cache.clear()

    def find(self, path: str, metadata: Metadata) -> grpc.RpcMethodHandler[Any, Any] | None:
        try:
            return self._cache[path]
        except KeyError:
            pass
        found = self._registered.get(path)
        if found is None:
            details = _CallDetails(path, metadata)
            for generic in self._generic:
                found = generic.service(details)  # type: ignore[arg-type]
                if found is not None:
                    break
        if found is not None:  # paths without a method are not kept: clients choose them, without limit
            self._cache[path] = found
        return found


class _Session(asyncio.Protocol):
    """One client connection: feeds the native layer, dispatches calls, writes what the layer produces."""

    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.conn = Connection(max_message_bytes=server.max_receive_message_length)
        self.calls: dict[int, _Call] = {}
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self._flush_pending = False
        self._writable: asyncio.Event | None = None
        self._draining: dict[int, asyncio.Future[None]] = {}  # streams whose senders wait for the client
        self._eof_sent = False
        self._closed = False

    # -- transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        stream.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self.transport = stream
        name = transport.get_extra_info("peername")
        if isinstance(name, tuple) and len(name) >= 2:
            self.peer = f"ipv{6 if ':' in str(name[0]) else 4}:{name[0]}:{name[1]}"
        else:
            self.peer = f"unix:{name or ''}"
        self.server._sessions.add(self)
        if self.server._stopping:
            self.conn.shutdown(graceful=False)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive(data)
        except H2ProtocolError as exc:
            log.debug("closing a gRPC connection from %s: %s", self.peer, exc)
            self.flush()
            self._close_transport()
            return
        if self._eof_sent:  # the connection is done: what the client still sends is read and dropped
            return
        for event in events:
            kind = event[0]
            if kind == MESSAGE:
                self._on_message(event[1], event[2], event[3])
            elif kind == REQUEST:
                self._on_request(event[1], event[2], event[3])
            elif kind == END:
                self._on_end(event[1])
            elif kind == CLOSED:
                self._on_closed(event[1], event[2])
            elif kind == TOO_LARGE:
                self._on_too_large(event[1], event[2])
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for call in list(self.calls.values()):
            self._abandon(call)
        self.conn.close()
        self.server._sessions.discard(self)
        if self._writable is not None:
            self._writable.set()
        self.server._session_idle()

    def pause_writing(self) -> None:
        """The client takes its answers slower than they come: read no more requests until it catches up,
        or a client that sends and never reads would have the server buffer answers without end."""
        self._writable = asyncio.Event()
        if self.transport is not None and not self._closed and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()
            self._writable = None
        if self.transport is not None and not self._closed and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- events

    def _on_request(self, stream_id: int, path: str, raw: list[tuple[str, str]]) -> None:
        deadline = None
        for key, value in raw:
            if key == "grpc-timeout":
                seconds = parse_timeout(value)
                if seconds is not None:
                    deadline = time.monotonic() + seconds
                break
        context = ServicerContext(self, raw, deadline)
        method = self.server.router.find(path, ())
        if method is None:
            self._trailers_only(stream_id, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")  # grpcio's words
            return
        call = _Call(stream_id, method, context)
        context._call = call
        self.calls[stream_id] = call
        if deadline is not None:
            call.deadline_handle = self.loop.call_at(
                self.loop.time() + max(0.0, deadline - time.monotonic()), self._on_deadline, call
            )
        if method.request_streaming:
            call.messages = asyncio.Queue()
            call.task = self.loop.create_task(self._run(call))

    def _on_message(self, stream_id: int, payload: bytes, compressed: bool) -> None:
        call = self.calls.get(stream_id)
        if call is None or call.finished:
            return
        wire = payload
        if compressed:
            try:
                payload = self._decompress(call, payload)
            except AbortError as failure:
                self._fail(call, failure.code, failure.details)
                return
        if call.messages is not None:
            call.messages.put_nowait((payload, 5 + len(wire)))
            return
        call.request_count += 1
        call.request = payload

    def _on_end(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        if call is None or call.finished:
            return
        if call.messages is not None:
            call.messages.put_nowait(_EOF)
            return
        if call.request_count != 1:
            self._fail(
                call, grpc.StatusCode.UNIMPLEMENTED if call.request_count else grpc.StatusCode.INTERNAL,
                f"a unary method takes exactly one request message, got {call.request_count}",
            )  # fmt: skip
            return
        call.task = self.loop.create_task(self._run(call))

    def _on_closed(self, stream_id: int, error_code: int) -> None:
        call = self.calls.get(stream_id)
        if call is not None:
            self._abandon(call)

    def _on_too_large(self, stream_id: int, size: int) -> None:
        call = self.calls.get(stream_id)
        limit = self.server.max_receive_message_length
        details = f"SERVER: Received message larger than max ({size} vs. {limit})"  # grpcio's words
        if call is None:
            self._trailers_only(stream_id, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
            return
        self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED, details)

    def _on_deadline(self, call: _Call) -> None:
        call.deadline_handle = None
        if not call.finished:
            self._fail(call, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            self.flush()

    # -- running handlers

    async def _run(self, call: _Call) -> None:
        method = call.method
        context = call.context
        try:
            if method.request_streaming:
                request: Any = self._request_iterator(call)
            else:
                deserializer = method.request_deserializer
                request = deserializer(call.request) if deserializer and call.request is not None else call.request
                call.request = None
            if method.response_streaming:
                behaviour: Any = method.stream_stream if method.request_streaming else method.unary_stream
                result = behaviour(request, context)
                serializer = method.response_serializer
                if hasattr(result, "__aiter__"):
                    async for message in result:
                        await self.send(call, serializer(message) if serializer else message)
                elif inspect.isawaitable(result):
                    await result
                elif result is not None:
                    raise TypeError("a streaming handler must be an async generator or a coroutine")
            else:
                behaviour = method.stream_unary if method.request_streaming else method.unary_unary
                response = behaviour(request, context)
                if inspect.isawaitable(response):
                    response = await response
                if call.finished:
                    return
                code = context._code
                if response is not None and (code is None or code == grpc.StatusCode.OK):
                    serializer = method.response_serializer
                    self._message(call, serializer(response) if serializer else response)
                elif code is None or code == grpc.StatusCode.OK:
                    self._end(call, grpc.StatusCode.INTERNAL, "the handler returned no response")
                    return
            self._end(call, context._code or grpc.StatusCode.OK, context._details)
        except AbortError as abort:
            self._end(call, abort.code, abort.details)
        except asyncio.CancelledError:
            if not call.finished:
                self._end(call, grpc.StatusCode.CANCELLED, "the server cancelled the call")
            raise
        except Exception as exc:
            log.exception("gRPC method %s failed", _method_name(call))
            self._end(call, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")  # grpcio's words

    async def _request_iterator(self, call: _Call) -> AsyncIterator[Any]:
        deserializer = call.method.request_deserializer
        while True:
            payload = await self.next_request(call)
            if payload is _EOF:
                return
            yield deserializer(payload) if deserializer else payload

    async def next_request(self, call: _Call) -> Any:
        """The next request message of a request-streaming call, or _EOF (again and again) after the last."""
        assert call.messages is not None
        if call.eof:
            return _EOF
        item = await call.messages.get()
        if item is _EOF:
            call.eof = True
            return _EOF
        payload, size = item
        if self.conn.release(call.stream_id, size):  # the client may send more now
            self._schedule_flush()
        return payload

    def _decompress(self, call: _Call, payload: bytes) -> bytes:
        encoding = next((v for k, v in call.context._raw_metadata if k == "grpc-encoding"), "identity")
        limit = self.server.max_receive_message_length
        if encoding == "gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            inflater = zlib.decompressobj()
        else:
            raise AbortError(grpc.StatusCode.UNIMPLEMENTED, f"grpc-encoding {encoding!r} is not supported")
        try:
            out = inflater.decompress(payload, limit + 1)
        except zlib.error as exc:
            raise AbortError(grpc.StatusCode.INTERNAL, f"cannot decompress the message: {exc}") from None
        if len(out) > limit:
            raise AbortError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"received message larger than max (more than {limit} bytes)"
            )
        return out

    # -- output

    async def send(self, call: _Call, payload: bytes) -> None:
        """A response message of a streaming call; waits while the client has not taken what went before.

        It always gives the loop a turn: a handler that yields messages without awaiting anything else would
        otherwise keep the loop to itself (nothing written, no other call served) until it is done.
        """
        if call.finished:
            raise asyncio.CancelledError()
        if self._message(call, payload):  # more queued on the stream than the client's window takes
            await self._drained(call)
        elif self._writable is None:
            await asyncio.sleep(0)
        if self._writable is not None:
            await self._writable.wait()

    async def _drained(self, call: _Call) -> None:
        waiter = self.loop.create_future()
        self._draining[call.stream_id] = waiter
        try:
            await waiter
        finally:
            self._draining.pop(call.stream_id, None)

    def _wake_drained(self) -> None:
        limit = self.conn.send_queue_limit
        for stream_id, waiter in list(self._draining.items()):
            if self.conn.queued(stream_id) <= limit and not waiter.done():  # -1: the stream is gone
                waiter.set_result(None)

    def initial_metadata(self, call: _Call, metadata: list[tuple[str, str]]) -> None:
        if not call.finished:
            self.conn.send_initial_metadata(call.stream_id, metadata)
            self._schedule_flush()

    def _message(self, call: _Call, payload: bytes) -> bool:
        """Queue a response message; True when the stream has more queued than the client takes for now."""
        call.context._initial_sent = True
        full = self.conn.send_message(call.stream_id, payload)
        self._schedule_flush()
        return full

    def _end(self, call: _Call, code: grpc.StatusCode, details: str) -> None:
        if call.finished:
            return
        call.finished = True
        if call.deadline_handle is not None:
            call.deadline_handle.cancel()
        try:
            trailing = _encode_metadata(call.context._trailing) if call.context._trailing else ()
            self.conn.send_trailers(call.stream_id, code.value[0], details or "", trailing)
        except (InvalidMetadata, AttributeError, TypeError) as exc:  # as grpcio: the call fails, not hangs
            log.warning("gRPC method %s: %s", _method_name(call), exc)
            self.conn.send_trailers(call.stream_id, _INTERNAL, "Invalid metadata")
        call.context._finish(cancelled=False)
        self._forget(call)
        self._schedule_flush()

    def _fail(self, call: _Call, code: grpc.StatusCode, details: str) -> None:
        """End a call from outside its handler, which is cancelled if it runs."""
        self._end(call, code, details)
        if call.task is not None and not call.task.done():
            call.task.cancel()

    def _abandon(self, call: _Call) -> None:
        """The client is gone (reset or disconnect): cancel the handler, send nothing."""
        call.finished = True
        if call.deadline_handle is not None:
            call.deadline_handle.cancel()
        if call.task is not None and not call.task.done():
            call.task.cancel()
        if call.messages is not None:
            call.messages.put_nowait(_EOF)
        call.context._finish(cancelled=True)
        self._forget(call)

    def _forget(self, call: _Call) -> None:
        if self.calls.pop(call.stream_id, None) is not None and not self.calls:
            self.server._session_idle()

    def _trailers_only(self, stream_id: int, code: grpc.StatusCode, details: str) -> None:
        self.conn.send_trailers(stream_id, code.value[0], details)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        if self._closed or self._eof_sent or self.transport is None:
            return
        data = self.conn.output()
        if data:
            self.transport.write(data)
        if self._draining:  # writing may have made room in a stream's queue
            self._wake_drained()
        if self.server._idle is not None and not self.calls:  # stopping: this may have been the last answer
            self.server._session_idle()
        if self.conn.wants_close:
            self._close_transport()

    def _close_transport(self) -> None:
        """Close after what is written; reading goes on until the client closes too (or `_LINGER_S` ends).

        Closing a socket the client still writes to (a WINDOW_UPDATE for the last answer, a PING) makes the
        kernel reset the connection, and a reset can destroy answers the client has received but not read.
        """
        transport = self.transport
        if transport is None or self._closed or self._eof_sent:
            return
        self._eof_sent = True
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(_LINGER_S, self.abort)
        else:
            transport.close()

    def shutdown(self) -> None:
        """Tell the client no new calls are taken here; calls already running finish."""
        self.conn.shutdown(graceful=True)
        self.flush()
        if not self.calls and not self.conn.open_streams:
            self._close_transport()

    def abort(self) -> None:
        """Drop the connection now, with whatever is still unwritten."""
        if self.transport is not None and not self._closed:
            self.transport.abort()

    def cancel_all(self) -> None:
        for call in list(self.calls.values()):
            if not call.finished:
                self._fail(call, grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        self.flush()
        self._close_transport()


def _method_name(call: _Call) -> str:
    return getattr(call.method.unary_unary or call.method.unary_stream or call.method.stream_unary
                   or call.method.stream_stream, "__qualname__", "?")  # fmt: skip


class NativeServer:
    """Listens on TCP and/or unix sockets; `stop(grace)` lets running calls finish, then cuts the rest."""

    def __init__(self, *, max_receive_message_length: int = 4 << 20, so_reuseport: bool = True) -> None:
        self.max_receive_message_length = max_receive_message_length
        self.router = Router()
        self._reuseport = so_reuseport
        self._sockets: list[socket.socket] = []
        self._listeners: list[asyncio.AbstractServer] = []
        self._sessions: set[_Session] = set()
        self._stopping = False
        self._terminated: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None

    # -- grpc.aio.Server's registration surface

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.router.add_generic(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.router.add_registered(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        """Bind now (as grpcio does); returns the TCP port, 1 for a unix socket, 0 when binding failed."""
        try:
            if address.startswith("unix:"):
                self._sockets.append(_unix_listener(Path(address[len("unix:"):].removeprefix("//"))))
                return 1
            sock = _tcp_listener(address, reuseport=self._reuseport)
        except OSError as exc:
            log.warning("cannot bind gRPC to %s: %s", address, exc)
            return 0
        self._sockets.append(sock)
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._terminated = asyncio.Event()
        for sock in self._sockets:
            if sock.family == socket.AF_UNIX:
                listener = await loop.create_unix_server(lambda: _Session(self), sock=sock)
            else:
                listener = await loop.create_server(lambda: _Session(self), sock=sock)
            self._listeners.append(listener)

    async def stop(self, grace: float | None) -> None:
        """Stop accepting; with a grace period, wait up to it for running calls (and their answers to be
        written), then cancel what is left."""
        if self._stopping:
            if self._terminated is not None:
                await self._terminated.wait()
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        closing_until = loop.time() + max(grace or 0.0, _CLOSE_WAIT_S)
        for listener in self._listeners:
            listener.close()
        for session in list(self._sessions):
            session.shutdown()
        if grace and self._busy():
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for session in list(self._sessions):
            session.cancel_all()
        while self._sessions and loop.time() < closing_until:  # transports write what they hold, then close
            await asyncio.sleep(0.01)
        for session in list(self._sessions):  # a client that reads nothing would keep close() waiting forever
            session.abort()
        if self._sessions:
            await asyncio.sleep(0)  # connection_lost runs on the next turn of the loop
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                await listener.wait_closed()
        if self._terminated is not None:
            self._terminated.set()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        if self._terminated is None:
            return True
        try:
            await asyncio.wait_for(self._terminated.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- bookkeeping

    def _busy(self) -> bool:
        """A call runs, or a finished call's answer is not all written yet."""
        return any(session.calls or session.conn.open_streams for session in self._sessions)

    def _session_idle(self) -> None:
        if self._idle is not None and not self._busy():
            self._idle.set()



def _tcp_listener(address: str, *, reuseport: bool) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, int(port)))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock.bind(str(path))
        sock.listen(256)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# grpcio's helpers pick their asyncio servicers for a grpc.aio.Server (server reflection does so by isinstance).
grpc.aio.Server.register(NativeServer)

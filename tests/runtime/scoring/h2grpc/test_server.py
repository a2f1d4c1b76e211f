"""NativeServer against grpcio's own grpc.aio server: the same handlers on both, driven by real clients.

What a client can see (status codes, details, metadata, flow control) must not depend on the transport, so
most tests here run a call on both servers and compare. Servers listen on 127.0.0.1 only, each on its own
event loop thread (the native one on uvloop, as `edgewise-score` runs it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import select
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
import uvloop
from edgewise.runtime.scoring.h2grpc.server import NativeServer, Router

from tests.runtime.scoring.h2grpc.frames import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS_FRAME,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    WINDOW_UPDATE,
    frame,
    grpc_message,
    hpack_literal,
    parse_frames,
    request_headers,
)
from tests.support import wait_until

T = TypeVar("T")
SERVICE = "test.S"
WAIT_S = 60.0
LIMIT = 1 << 20  # max_receive_message_length of both servers
CHUNK = 64 * 1024  # size of each message the firehose streams
INTERNAL_ERROR = 2  # an HTTP/2 error code


class Handlers:
    """The servicer both servers run; it keeps what the tests look at afterwards."""

    def __init__(self) -> None:
        self.firehose_yielded = 0
        self.gate: asyncio.Event | None = None
        self.hang_read: asyncio.Future[bool] | None = None
        self.slow_started = threading.Event()

    async def echo(self, request: bytes, context: Any) -> bytes:
        return request

    async def boom(self, request: bytes, context: Any) -> bytes:
        raise ValueError("boom")

    async def bad_trailing(self, request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("x-city", "Zürich ☃"),))
        return request

    async def metadata(self, request: bytes, context: Any) -> bytes:
        seen = [(key, value if isinstance(value, str) else base64.b64encode(value).decode())
                for key, value in context.invocation_metadata()]  # fmt: skip
        return json.dumps(seen).encode()

    async def read_twice(self, request: Any, context: Any) -> bytes:
        count = 0
        while await context.read() is not grpc.aio.EOF:
            count += 1
        again = await context.read()
        return b"%d messages, then %s" % (count, b"EOF" if again is grpc.aio.EOF else b"more")

    async def firehose(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        """Streams int(request) messages as fast as the server takes them, never awaiting anything else."""
        for _ in range(int(request)):
            self.firehose_yielded += 1
            yield b"f" * CHUNK

    async def gated_sum(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        """Reads nothing until the test opens the gate, then counts the messages and their bytes."""
        assert self.gate is not None
        await self.gate.wait()
        count = size = 0
        async for message in requests:
            count += 1
            size += len(message)
        return b"%d %d" % (count, size)

    async def hang_in_read(self, request: Any, context: Any) -> bytes:
        loop = asyncio.get_running_loop()
        self.hang_read = loop.create_future()
        future = self.hang_read

        def finished(done: Any) -> None:
            if not future.done():
                future.set_result(done.cancelled())

        context.add_done_callback(finished)
        await context.read()
        await context.read()
        return b"unreachable"

    async def watch(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"serving"
        await asyncio.Event().wait()

    async def big(self, request: bytes, context: Any) -> bytes:
        return b"B" * (1 << 20)

    async def slow(self, request: bytes, context: Any) -> bytes:
        assert self.gate is not None
        self.slow_started.set()
        await self.gate.wait()
        return request

    def generic_handler(self) -> grpc.GenericRpcHandler:
        unary, unary_stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
        stream_unary = grpc.stream_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Echo": unary(self.echo), "Boom": unary(self.boom), "BadTrailing": unary(self.bad_trailing),
            "Metadata": unary(self.metadata), "ReadTwice": stream_unary(self.read_twice),
            "Firehose": unary_stream(self.firehose), "GatedSum": stream_unary(self.gated_sum),
            "HangInRead": stream_unary(self.hang_in_read), "Watch": unary_stream(self.watch),
            "Slow": unary(self.slow), "Big": unary(self.big),
        })  # fmt: skip


class Running:
    """One server (native or grpcio) with its handlers, on an event loop of its own in a thread."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.handlers = Handlers()
        self.loop = uvloop.new_event_loop() if engine == "native" else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"{engine}-grpc-server", daemon=True)
        self.server: Any = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT_S)

    async def _start(self) -> None:
        self.handlers.gate = asyncio.Event()
        if self.engine == "native":
            self.server = NativeServer(max_receive_message_length=LIMIT)
        else:
            self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", LIMIT)])
        self.server.add_generic_rpc_handlers((self.handlers.generic_handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    def start(self) -> Running:
        self.thread.start()
        self.run(self._start())
        return self

    def stop(self, grace: float | None = None) -> None:
        self.run(self.server.stop(grace))

    def open_gate(self) -> None:
        assert self.handlers.gate is not None
        self.loop.call_soon_threadsafe(self.handlers.gate.set)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()


@contextlib.contextmanager
def running(engine: str) -> Iterator[Running]:
    server = Running(engine).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Running]]:
    with running("native") as native, running("grpcio") as reference:
        yield {"native": native, "grpcio": reference}


@pytest.fixture(scope="module")
def native(servers: dict[str, Running]) -> Running:
    return servers["native"]


@contextlib.contextmanager
def channel_to(address: str) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
               ("grpc.enable_http_proxy", 0)]  # fmt: skip
    with grpc.insecure_channel(address, options=options) as channel:
        yield channel


def outcome(call: Callable[[grpc.Channel], Any], server: Running) -> tuple[Any, ...]:
    """(status code, details or response, trailing metadata) of one call, whether it fails or not."""
    with channel_to(server.address) as channel:
        try:
            response, done = call(channel)
        except grpc.RpcError as error:
            failed: Any = error
            return failed.code(), failed.details(), tuple(failed.trailing_metadata() or ())
    return done.code(), response, tuple(done.trailing_metadata() or ())


def unary(method: str, request: bytes = b"hello", **kwargs: Any) -> Callable[[grpc.Channel], Any]:
    def call(channel: grpc.Channel) -> Any:
        multicallable: Any = channel.unary_unary(f"/{SERVICE}/{method}")
        return multicallable.with_call(request, timeout=WAIT_S, **kwargs)

    return call


def same_on_both(servers: dict[str, Running], call: Callable[[grpc.Channel], Any]) -> tuple[Any, ...]:
    native, reference = outcome(call, servers["native"]), outcome(call, servers["grpcio"])
    assert native == reference
    return native


# ---- what a client sees, compared with grpcio


def test_a_handler_that_raises_is_reported_as_grpcio_reports_it(servers: dict[str, Running]) -> None:
    code, details, _ = same_on_both(servers, unary("Boom"))
    assert code == grpc.StatusCode.UNKNOWN and "boom" in details


def test_an_unknown_method_is_reported_as_grpcio_reports_it(servers: dict[str, Running]) -> None:
    code, _, _ = same_on_both(servers, unary("NoSuchMethod"))
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_a_message_over_the_limit_is_reported_as_grpcio_reports_it(servers: dict[str, Running]) -> None:
    code, details, _ = same_on_both(servers, unary("Echo", b"x" * (LIMIT + 1)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and str(LIMIT + 1) in details


def test_trailing_metadata_that_http2_cannot_carry_fails_the_call_instead_of_hanging_it(
    servers: dict[str, Running],
) -> None:
    code, details, _ = same_on_both(servers, unary("BadTrailing"))
    assert code == grpc.StatusCode.INTERNAL and details


def test_invocation_metadata_holds_what_the_caller_sent_and_not_the_transport_headers(
    servers: dict[str, Running],
) -> None:
    call = unary("Metadata", metadata=[("x-user", "alice"), ("x-token-bin", b"\x00\x01\xfe")])
    code, response, _ = same_on_both(servers, call)
    assert code == grpc.StatusCode.OK
    seen = dict(json.loads(response))
    assert seen["x-user"] == "alice" and base64.b64decode(seen["x-token-bin"]) == b"\x00\x01\xfe"
    assert not {"content-type", "te", "grpc-timeout", "grpc-accept-encoding"} & set(seen)


def test_metadata_over_the_size_limit_is_refused_with_resource_exhausted(servers: dict[str, Running]) -> None:
    call = unary("Echo", metadata=[("x-big", "v" * 20000)])
    codes = {engine: outcome(call, server)[0] for engine, server in servers.items()}
    assert codes == {"native": grpc.StatusCode.RESOURCE_EXHAUSTED, "grpcio": grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert outcome(unary("Echo", metadata=[("x-fits", "v" * 4000)]), servers["native"])[1] == b"hello"


def test_read_after_the_end_of_the_requests_returns_eof_again(servers: dict[str, Running]) -> None:
    def call(channel: grpc.Channel) -> Any:
        method: Any = channel.stream_unary(f"/{SERVICE}/ReadTwice")
        return method.with_call(iter([b"a", b"b"]), timeout=WAIT_S)

    code, response, _ = same_on_both(servers, call)
    assert (code, response) == (grpc.StatusCode.OK, b"2 messages, then EOF")


# ---- raw HTTP/2, for requests grpcio clients never send


class RawClient:
    """An HTTP/2 client made of frames on a socket to 127.0.0.1, for what no gRPC client does on purpose."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.pending = b""
        self.settings: dict[int, int] = {}

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def start(self, settings: bytes = b"") -> None:
        """Preface and SETTINGS both ways, so the server's settings (its stream window) are in force."""
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings))
        server_settings = self.read_until(lambda f: f[0] == SETTINGS and not f[1] & ACK)[-1][3]
        for offset in range(0, len(server_settings), 6):
            key, value = struct.unpack(">HI", server_settings[offset : offset + 6])
            self.settings[key] = value
        self.send(frame(SETTINGS, ACK, 0))

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        """The complete frames received so far (and not returned before)."""
        out = []
        while len(self.pending) >= 9:
            length = int.from_bytes(self.pending[:3], "big")
            if len(self.pending) < 9 + length:
                break
            out.extend(parse_frames(self.pending[: 9 + length]))
            self.pending = self.pending[9 + length :]
        return out

    def read_until(self, done: Callable[[tuple[int, int, int, bytes]], bool]) -> list[tuple[int, int, int, bytes]]:
        """Frames up to and including the first one `done` accepts."""
        seen: list[tuple[int, int, int, bytes]] = []
        while True:
            complete = self.frames()
            for index, received in enumerate(complete):
                seen.append(received)
                if done(received):  # what came after it is kept for the next read
                    self.pending = b"".join(frame(*later) for later in complete[index + 1 :]) + self.pending
                    return seen
            chunk = self.sock.recv(1 << 20)
            assert chunk, f"the server closed the connection; frames seen: {[f[:3] for f in seen]}"
            self.pending += chunk

    def round_trip(self, mark: int) -> list[tuple[int, int, int, bytes]]:
        """Every frame the server sent in answer to what this client sent before.

        Two PINGs: the server may put the first one's ACK ahead of other frames of the same write, but it
        writes everything it had to say about earlier frames before it even reads the second PING.
        """
        seen = []
        for second in (1, 2):
            opaque = struct.pack(">II", mark, second)
            self.send(frame(PING, 0, 0, opaque))
            seen += self.read_until(functools.partial(_is_ping_ack, opaque))
        return seen


def _is_ping_ack(opaque: bytes, received: tuple[int, int, int, bytes]) -> bool:
    return received[0] == PING and bool(received[1] & ACK) and received[3] == opaque


def raw_request(stream_id: int, path: str, fields: list[tuple[str, str]]) -> bytes:
    block = b"".join(hpack_literal(name, value) for name, value in [(":path", path), *fields])
    return frame(HEADERS_FRAME, END_HEADERS, stream_id, block)


@pytest.mark.parametrize(
    "fields",
    [
        [(":method", "GET"), (":scheme", "http"), (":authority", "x"), ("te", "trailers")],
        [(":method", "POST"), (":scheme", "http"), (":authority", "x"), ("content-type", "application/grpc")],
    ],
    ids=["GET", "no te: trailers"],
)
def test_a_request_that_is_not_grpc_is_refused_as_grpcio_refuses_it(
    servers: dict[str, Running], fields: list[tuple[str, str]]
) -> None:
    answers = {}
    for engine, server in servers.items():
        with RawClient(server.port) as client:
            client.start()
            client.send(raw_request(1, f"/{SERVICE}/Echo", fields) + frame(DATA, END_STREAM, 1, grpc_message(b"x")))
            seen = client.read_until(lambda f: f[2] == 1 and (f[0] == RST_STREAM or bool(f[1] & END_STREAM)))
            kind, _, _, payload = seen[-1]
            answers[engine] = (kind, payload)
    assert answers["native"] == answers["grpcio"] == (RST_STREAM, struct.pack(">I", INTERNAL_ERROR))


# ---- flow control and memory


def test_a_streaming_handler_that_never_awaits_waits_for_a_client_that_does_not_read(native: Running) -> None:
    native.handlers.firehose_yielded = 0
    with RawClient(native.port) as stuck:  # never reads, so never opens its window beyond HTTP/2's 64 KiB
        stuck.send(PREFACE + frame(SETTINGS, 0, 0) + request_headers(1, f"/{SERVICE}/Firehose")
                   + frame(DATA, END_STREAM, 1, grpc_message(b"2000")))  # fmt: skip
        wait_until(lambda: native.handlers.firehose_yielded > 0, timeout=WAIT_S, what="the firehose to start")
        with channel_to(native.address) as channel:
            echo: Any = channel.unary_unary(f"/{SERVICE}/Echo")
            # the server keeps serving others while the firehose runs...
            assert echo(b"still here", timeout=WAIT_S) == b"still here"
            assert echo(b"and here", timeout=WAIT_S) == b"and here"
        # ...and the handler is held back instead of queueing 2000 x 64 KiB for a client that takes none of it
        assert native.handlers.firehose_yielded < 100


def test_a_server_stream_reaches_a_client_that_reads_slowly_in_full_and_in_order(native: Running) -> None:
    with channel_to(native.address) as channel:
        method: Any = channel.unary_stream(f"/{SERVICE}/Firehose")
        stream = method(b"300", timeout=WAIT_S)
        received = [len(message) for message in stream]
    assert received == [CHUNK] * 300


def test_a_client_flooding_a_request_stream_is_held_back_until_the_handler_reads(native: Running) -> None:
    native.run(_new_gate(native))
    message = grpc_message(b"m" * 16379)  # 16 KiB on the wire
    with RawClient(native.port) as client:
        client.start()
        client.send(request_headers(1, f"/{SERVICE}/GatedSum"))
        stream_credit = client.settings[SETTINGS_INITIAL_WINDOW_SIZE]
        sent = 0
        for mark in range(64):  # send all the window allows, then see how much the server gives back
            if not stream_credit:
                break
            client.send(_data_frames(1, message, sent, stream_credit))
            sent += stream_credit
            stream_credit = sum(struct.unpack(">I", payload)[0] for kind, _, stream_id, payload
                                in client.round_trip(mark) if kind == WINDOW_UPDATE and stream_id == 1)  # fmt: skip
        assert stream_credit == 0, "the server kept opening the window of a stream nobody reads"
        assert sent <= 4 * client.settings[SETTINGS_INITIAL_WINDOW_SIZE]
        native.open_gate()  # the handler reads everything now, and the window opens again
        granted = client.read_until(lambda f: f[0] == WINDOW_UPDATE and f[2] == 1)[-1][3]
        rest = -sent % len(message)  # finish the message that was cut off
        assert struct.unpack(">I", granted)[0] >= rest
        client.send(_data_frames(1, message, sent, rest) + frame(DATA, END_STREAM, 1))
        sent += rest
        answer = client.read_until(lambda f: f[2] == 1 and f[0] == DATA)[-1][3]
    count = sent // len(message)
    assert answer == grpc_message(b"%d %d" % (count, count * (len(message) - 5)))


async def _new_gate(server: Running) -> None:
    server.handlers.gate = asyncio.Event()


def _data_frames(stream_id: int, message: bytes, offset: int, size: int) -> bytes:
    """DATA frames (16 KiB at most) carrying bytes offset..offset+size of an endless run of `message`."""
    wire = message * ((offset + size) // len(message) + 2)
    body = wire[offset % len(message) : offset % len(message) + size]
    return b"".join(frame(DATA, 0, stream_id, body[i : i + 16384]) for i in range(0, len(body), 16384))


# ---- the end of calls and of the server


def test_a_client_that_disconnects_while_the_handler_awaits_read_cancels_the_handler(native: Running) -> None:
    native.handlers.hang_read = None
    with RawClient(native.port) as client:
        client.start()
        client.send(request_headers(1, f"/{SERVICE}/HangInRead") + frame(DATA, 0, 1, grpc_message(b"one")))
        wait_until(lambda: native.handlers.hang_read is not None, timeout=WAIT_S, what="the handler to start")
    handler_ended = native.handlers.hang_read
    assert handler_ended is not None
    assert native.run(asyncio.wait_for(asyncio.shield(handler_ended), WAIT_S)) is True


def test_router_does_not_remember_paths_that_have_no_method() -> None:
    router = Router()
    router.add_generic([Handlers().generic_handler()])
    for number in range(1000):
        assert router.find(f"/{SERVICE}/Missing{number}", ()) is None
    assert router.find(f"/{SERVICE}/Echo", ()) is not None
    assert len(router._cache) <= 1


@pytest.mark.parametrize("engine", ["native", "grpcio"])
def test_stop_lets_running_calls_finish_and_ends_endless_streams_after_the_grace_period(engine: str) -> None:
    with running(engine) as server, channel_to(server.address) as channel:
        watching: Any = channel.unary_stream(f"/{SERVICE}/Watch")
        watch = watching(b"", timeout=WAIT_S)
        assert next(watch) == b"serving"
        slow_method: Any = channel.unary_unary(f"/{SERVICE}/Slow")
        slow = slow_method.future(b"in flight", timeout=WAIT_S)
        assert server.handlers.slow_started.wait(WAIT_S)
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(2.0), server.loop)
        server.open_gate()
        assert slow.result(WAIT_S) == b"in flight"
        with pytest.raises(grpc.RpcError) as ended:
            next(watch)
        stopping.result(WAIT_S)
    error: Any = ended.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_goaway_frames_are_only_sent_with_no_error_on_a_graceful_stop() -> None:
    with running("native") as server, RawClient(server.port) as client:
        client.start()
        client.send(request_headers(1, f"/{SERVICE}/Watch") + frame(DATA, END_STREAM, 1, grpc_message(b"")))
        client.read_until(lambda f: f[0] == DATA and f[2] == 1)
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(WAIT_S), server.loop)
        seen = client.read_until(lambda f: f[0] == GOAWAY)
        assert struct.unpack(">II", seen[-1][3][:8]) == ((1 << 31) - 1, 0)  # the notice: no stream refused yet
        pings = [f for f in seen if f[0] == PING and not f[1] & ACK]
        ping = pings[0] if pings else client.read_until(lambda f: f[0] == PING and not f[1] & ACK)[-1]
        client.send(frame(PING, ACK, 0, ping[3]))
        final = client.read_until(lambda f: f[0] == GOAWAY)[-1][3]
        assert struct.unpack(">II", final[:8]) == (1, 0)
        client.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))  # the client gives up its endless stream
        while client.sock.recv(1 << 16):  # until the server closes its side (the socket times out otherwise)
            pass
    stopping.result(WAIT_S)


def test_stop_lets_go_of_a_client_that_stopped_reading() -> None:
    with running("native") as server, RawClient(server.port) as client:
        # the client opens its windows wide and then reads nothing: what the server writes piles up in its socket
        client.start(struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, (1 << 31) - 1))
        client.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))
        client.send(request_headers(1, f"/{SERVICE}/Firehose") + frame(DATA, END_STREAM, 1, grpc_message(b"4000")))

        async def writes_are_paused() -> bool:
            return any(session._writable is not None for session in server.server._sessions)

        def paused() -> bool:
            return server.run(writes_are_paused())

        wait_until(paused, timeout=WAIT_S, what="the server's writes to back up")
        server.stop(0)

        async def sessions() -> int:
            return len(server.server._sessions)

        assert server.run(sessions()) == 0


def test_a_client_that_sends_requests_but_reads_no_answers_is_not_read_any_further(native: Running) -> None:
    """Answers the client does not take must not pile up: once they back up, the server stops taking requests."""
    payload = b"q" * (256 * 1024)
    body = grpc_message(payload)
    requests = 400  # 100 MiB of requests, and as much in answers
    wire = bytearray()
    for number in range(requests):
        stream_id = 2 * number + 1
        wire += request_headers(stream_id, f"/{SERVICE}/Echo")
        for offset in range(0, len(body), 16384):
            last = offset + 16384 >= len(body)
            wire += frame(DATA, END_STREAM if last else 0, stream_id, body[offset : offset + 16384])
    with RawClient(native.port) as client:
        client.start(struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, (1 << 31) - 1))
        client.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))  # windows wide open: answers flow
        client.sock.setblocking(False)
        sent = 0
        while sent < len(wire):
            _, writable, _ = select.select([], [client.sock], [], 5.0)
            if not writable:
                break  # the server has stopped reading
            with contextlib.suppress(BlockingIOError):
                sent += client.sock.send(wire[sent : sent + (1 << 20)])
    assert sent < len(wire), "the server kept reading requests while the client took none of their answers"


def test_stop_lets_an_answer_already_given_reach_a_client_that_reads_it_slowly() -> None:
    with running("native") as server, RawClient(server.port) as client:
        client.start()  # HTTP/2's default window of 64 KiB: the 1 MiB answer goes out as the client reads
        client.send(request_headers(1, f"/{SERVICE}/Big") + frame(DATA, END_STREAM, 1, grpc_message(b"")))
        received = client.read_until(lambda f: f[0] == DATA and f[2] == 1)
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(WAIT_S), server.loop)
        while not (received[-1][2] == 1 and received[-1][0] == HEADERS_FRAME and received[-1][1] & END_STREAM):
            kind, flags, _, payload = received[-1]
            if kind == DATA and payload:  # the client read it: the server may send as much again
                more = struct.pack(">I", len(payload))
                client.send(frame(WINDOW_UPDATE, 0, 0, more) + frame(WINDOW_UPDATE, 0, 1, more))
            elif kind == PING and not flags & ACK:
                client.send(frame(PING, ACK, 0, payload))
            received += client.read_until(lambda f: True)
    stopping.result(WAIT_S)
    body = b"".join(payload for kind, _, stream_id, payload in received if kind == DATA and stream_id == 1)
    assert body == grpc_message(b"B" * (1 << 20))

"""The native HTTP/2 + gRPC layer: a small asyncio server on it, driven by real grpcio clients and raw frames."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import queue
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from edgewise.runtime.scoring.h2grpc import native
from edgewise.runtime.scoring.h2grpc.connection import (
    CLOSED,
    END,
    MESSAGE,
    REQUEST,
    TOO_LARGE,
    Connection,
    Event,
    H2ProtocolError,
    percent_encode,
)

from tests.runtime.scoring.h2grpc.frames import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS_FRAME,
    PING,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    client_start,
    frame,
    grpc_message,
    hpack_integer,
    hpack_literal,
    parse_frames,
    request_headers,
)

ECHO = "/test.T/Echo"
FAIL = "/test.T/Fail"
HEADERS = "/test.T/Headers"
STREAM = "/test.T/Stream"
BIDI = "/test.T/Bidi"
HANG = "/test.T/Hang"
FAIL_STATUS = 5  # NOT_FOUND
FAIL_DETAILS = "kein Modell: 100% sicher, Größe ✓ %41"
RESOURCE_EXHAUSTED = 8
WAIT_S = 60.0  # how long a test waits for the server to see something before it gives up
BIG = 32 << 20


class _Session(asyncio.Protocol):
    """One connection of the test server: every event is recorded, the methods above are answered."""

    def __init__(self, server: EchoServer, number: int) -> None:
        self.server = server
        self.number = number
        self.conn = Connection(max_message_bytes=server.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.paths: dict[int, str] = {}
        self.messages: dict[int, list[bytes]] = {}
        self.finished: set[int] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive(data)
        except H2ProtocolError as exc:
            self.server.record_error(exc)
            self.flush()
            assert self.transport is not None
            self.transport.close()
            return
        self.handle(events)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()

    def handle(self, events: list[Event]) -> None:
        for event in events:
            self.server.record(self.number, event)
            kind, stream_id = event[0], event[1]
            if kind == REQUEST:
                self.paths[stream_id] = event[2]
                self.messages[stream_id] = []
            elif kind == MESSAGE:
                if self.paths.get(stream_id) == BIDI:
                    self.conn.send_message(stream_id, event[2])
                else:
                    self.messages[stream_id].append(event[2])
            elif kind == END:
                self.answer(stream_id)
            elif kind == TOO_LARGE:
                self.finished.add(stream_id)
                limit = self.server.max_message_bytes
                self.conn.send_trailers(stream_id, RESOURCE_EXHAUSTED, f"message of {event[2]} bytes > {limit}")
            elif kind == CLOSED:
                self.paths.pop(stream_id, None)
                self.messages.pop(stream_id, None)

    def answer(self, stream_id: int) -> None:
        if stream_id in self.finished:
            return
        self.finished.add(stream_id)
        path, messages = self.paths[stream_id], self.messages[stream_id]
        if path == ECHO:
            self.conn.send_message(stream_id, messages[-1])
            self.conn.send_trailers(stream_id, 0)
        elif path == FAIL:
            self.conn.send_trailers(stream_id, FAIL_STATUS, FAIL_DETAILS, [("x-reason", "no-model")])
        elif path == HEADERS:
            self.conn.send_initial_metadata(stream_id, [("x-initial", "first")])
            self.conn.send_message(stream_id, messages[-1])
            self.conn.send_trailers(stream_id, 0, metadata=[("x-trailing", "last")])
        elif path == STREAM:
            for i in range(int(messages[-1])):
                self.conn.send_message(stream_id, b"message %d" % i)
            self.conn.send_trailers(stream_id, 0)
        elif path == BIDI:
            self.conn.send_trailers(stream_id, 0)
        # HANG: never answers

    def flush(self) -> None:
        assert self.transport is not None
        while True:
            data = self.conn.output()
            if data:
                self.transport.write(data)
            closed = self.conn.receive(b"")  # streams that this output ended
            if not closed:
                break
            self.handle(closed)
        if self.conn.wants_close:
            self.transport.close()


class EchoServer:
    """The test server on 127.0.0.1 (port 0) or a unix socket, running its own event loop in a thread."""

    def __init__(self, *, max_message_bytes: int, unix_path: Path | None = None) -> None:
        self.max_message_bytes = max_message_bytes
        self.unix_path = unix_path
        self.events: list[tuple[int, Event]] = []
        self.errors: list[H2ProtocolError] = []
        self.changed = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="h2grpc-test-server", daemon=True)
        self._sessions = 0
        self._server: asyncio.AbstractServer | None = None
        self.address = ""

    def _session(self) -> _Session:
        self._sessions += 1
        return _Session(self, self._sessions)

    async def _listen(self) -> None:
        if self.unix_path is not None:
            self._server = await self.loop.create_unix_server(self._session, path=str(self.unix_path))
            self.address = f"unix:{self.unix_path}"
        else:
            self._server = await self.loop.create_server(self._session, "127.0.0.1", 0)
            self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def start(self) -> EchoServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(WAIT_S)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(WAIT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()

    def record(self, session: int, event: Event) -> None:
        with self.changed:
            self.events.append((session, event))
            self.changed.notify_all()

    def record_error(self, error: H2ProtocolError) -> None:
        with self.changed:
            self.errors.append(error)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, WAIT_S), "the server did not see what the test waited for"

    def requests(self, path: str) -> list[tuple[int, int, list[tuple[str, str]]]]:
        """(session, stream id, metadata) of every REQUEST for `path`."""
        with self.changed:
            return [(s, e[1], e[3]) for s, e in self.events if e[0] == REQUEST and e[2] == path]

    def stream_events(self, session: int, stream_id: int) -> list[Event]:
        with self.changed:
            return [e for s, e in self.events if s == session and e[1] == stream_id]


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[EchoServer]:
    server = EchoServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    with running(max_message_bytes=BIG) as started:
        yield started


@contextlib.contextmanager
def channel_to(address: str) -> Iterator[grpc.Channel]:
    options = [
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.enable_http_proxy", 0),  # straight to the local test server, whatever the environment says
    ]
    with grpc.insecure_channel(address, options=options) as channel:
        yield channel


def unary(channel: grpc.Channel, path: str) -> Any:
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def closed_code(server: EchoServer, session: int, stream_id: int) -> int:
    server.wait_for(lambda: any(e[0] == CLOSED for e in server.stream_events(session, stream_id)))
    codes = [e[2] for e in server.stream_events(session, stream_id) if e[0] == CLOSED]
    assert len(codes) == 1
    return int(codes[0])


def test_the_native_layer_builds_and_loads_here() -> None:
    assert native.available() is None
    assert native.load().nghttp2_version


def test_the_library_is_compiled_once_and_then_found_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    first, version = native.build()
    second, _ = native.build()
    assert first == second and first.parent == tmp_path
    assert [p.name for p in tmp_path.glob("*.so")] == [first.name]
    assert version == native.load().nghttp2_version


def test_a_missing_compiler_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "edgewise-no-such-compiler")
    with pytest.raises(native.NativeTransportUnavailable, match="install gcc"):
        native.build()


def test_a_compile_error_comes_back_with_the_compiler_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "h2grpc.c"
    broken.write_text("#include <nghttp2/nghttp2.h>\nint h2g_broken(void) { return undeclared_name; }\n")
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(native, "SOURCE", broken)
    with pytest.raises(native.NativeTransportUnavailable, match="undeclared_name") as raised:
        native.build()
    assert "compiling the native gRPC transport failed" in str(raised.value)
    assert not list((tmp_path / "cache").glob("*.so"))


@pytest.mark.parametrize("size", [0, 10, 20 << 20])
def test_unary_echo(server: EchoServer, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    with channel_to(server.address) as channel:
        response, call = unary(channel, ECHO).with_call(payload, timeout=WAIT_S)
    assert response == payload
    assert call.code() == grpc.StatusCode.OK


def test_every_request_gets_request_message_end_and_one_normal_close(server: EchoServer) -> None:
    with channel_to(server.address) as channel:
        assert unary(channel, ECHO)(b"events", timeout=WAIT_S, metadata=[("x-mark", "events")]) == b"events"
    session, stream_id = next((s, i) for s, i, m in server.requests(ECHO) if ("x-mark", "events") in m)
    assert closed_code(server, session, stream_id) == 0
    kinds = [e[0] for e in server.stream_events(session, stream_id)]
    assert kinds == [REQUEST, MESSAGE, END, CLOSED]
    message = next(e for e in server.stream_events(session, stream_id) if e[0] == MESSAGE)
    assert message[2:] == (b"events", False)


def test_error_status_and_details_round_trip_in_a_trailers_only_response(server: EchoServer) -> None:
    with channel_to(server.address) as channel, pytest.raises(grpc.RpcError) as raised:
        unary(channel, FAIL)(b"", timeout=WAIT_S)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == FAIL_DETAILS
    assert ("x-reason", "no-model") in tuple(error.trailing_metadata())


def test_initial_metadata_message_and_trailing_metadata(server: EchoServer) -> None:
    with channel_to(server.address) as channel:
        response, call = unary(channel, HEADERS).with_call(b"with headers", timeout=WAIT_S)
    assert response == b"with headers"
    assert ("x-initial", "first") in tuple(call.initial_metadata())
    assert ("x-trailing", "last") in tuple(call.trailing_metadata())


def test_server_streaming_of_100_messages(server: EchoServer) -> None:
    with channel_to(server.address) as channel:
        method: Any = channel.unary_stream(STREAM, request_serializer=None, response_deserializer=None)
        responses = list(method(b"100", timeout=WAIT_S))
    assert responses == [b"message %d" % i for i in range(100)]


def test_bidi_echo_of_50_interleaved_messages(server: EchoServer) -> None:
    echoed: queue.Queue[bytes] = queue.Queue()

    def requests() -> Iterator[bytes]:
        for i in range(50):
            yield b"bidi %d" % i
            assert echoed.get(timeout=WAIT_S) == b"bidi %d" % i  # the next one leaves only after this echo

    with channel_to(server.address) as channel:
        method: Any = channel.stream_stream(BIDI, request_serializer=None, response_deserializer=None)
        received = []
        for response in method(requests(), timeout=WAIT_S):
            received.append(response)
            echoed.put(response)
    assert received == [b"bidi %d" % i for i in range(50)]


def test_a_message_over_the_limit_is_discarded_and_answered_with_resource_exhausted() -> None:
    with running(max_message_bytes=1024) as small, channel_to(small.address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            unary(channel, ECHO)(b"y" * (4 << 20), timeout=WAIT_S)
        error: Any = raised.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == f"message of {4 << 20} bytes > 1024"
        assert unary(channel, ECHO)(b"z" * 1024, timeout=WAIT_S) == b"z" * 1024  # the connection carries on
        too_large = [e for _, e in small.events if e[0] == TOO_LARGE]
        assert [e[2] for e in too_large] == [4 << 20]
        assert not [e for _, e in small.events if e[0] == MESSAGE and len(e[2]) > 1024]


def test_client_cancel_closes_the_stream_with_an_error_code(server: EchoServer) -> None:
    with channel_to(server.address) as channel:
        future = unary(channel, HANG).future(b"cancel me", metadata=[("x-mark", "cancel")])
        server.wait_for(lambda: any(("x-mark", "cancel") in m for _, _, m in server.requests(HANG)))
        assert future.cancel()
        session, stream_id = next((s, i) for s, i, m in server.requests(HANG) if ("x-mark", "cancel") in m)
        assert closed_code(server, session, stream_id) != 0


def test_client_deadline_closes_the_stream_with_an_error_code(server: EchoServer) -> None:
    with channel_to(server.address) as channel, pytest.raises(grpc.RpcError) as raised:
        unary(channel, HANG)(b"too slow", timeout=0.5, metadata=[("x-mark", "deadline")])
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    session, stream_id = next((s, i) for s, i, m in server.requests(HANG) if ("x-mark", "deadline") in m)
    assert closed_code(server, session, stream_id) != 0


def test_200_concurrent_unary_calls_on_one_channel(server: EchoServer) -> None:
    with channel_to(server.address) as channel:
        method = unary(channel, ECHO)
        futures = [method.future(b"call %d" % i, timeout=WAIT_S) for i in range(200)]
        assert [f.result() for f in futures] == [b"call %d" % i for i in range(200)]


def test_client_metadata_shows_in_the_request(server: EchoServer) -> None:
    metadata = [("x-user", "alice"), ("x-token-bin", b"\x00\x01\xfe"), ("x-mark", "metadata")]
    with channel_to(server.address) as channel:
        unary(channel, ECHO)(b"m", timeout=WAIT_S, metadata=metadata)
    received = next(m for _, _, m in server.requests(ECHO) if ("x-mark", "metadata") in m)
    assert ("x-user", "alice") in received
    assert ("content-type", "application/grpc") in received
    encoded = next(value for name, value in received if name == "x-token-bin")
    assert base64.b64decode(encoded + "=" * (-len(encoded) % 4)) == b"\x00\x01\xfe"
    assert all(name == name.lower() and not name.startswith(":") for name, _ in received)


def test_a_client_that_does_not_speak_http2_gets_goaway() -> None:
    with running(max_message_bytes=1024) as plain:
        host, port = plain.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=WAIT_S) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            received = b""
            while chunk := client.recv(65536):
                received += chunk
        plain.wait_for(lambda: bool(plain.errors))
    assert "preface" in str(plain.errors[0])
    goaways = [payload for kind, _, _, payload in parse_frames(received) if kind == 7]
    assert goaways and struct.unpack(">I", goaways[0][4:8])[0] == 1  # PROTOCOL_ERROR


def test_unary_echo_over_a_unix_socket(tmp_path: Path) -> None:
    with running(max_message_bytes=BIG, unix_path=tmp_path / "grpc.sock") as local, channel_to(local.address) as ch:
        assert unary(ch, ECHO)(b"over unix", timeout=WAIT_S) == b"over unix"


# ---- raw HTTP/2 frames, for what grpcio does not show: frame layout, reassembly, shutdown


def test_trailers_only_is_one_headers_frame_and_a_message_comes_between_headers_and_trailers() -> None:
    conn = Connection(max_message_bytes=1024)
    try:
        events = conn.receive(client_start() + request_headers(1, FAIL, end_stream=True)
                              + request_headers(3, ECHO) + frame(DATA, END_STREAM, 3, grpc_message(b"hi")))  # fmt: skip
        assert [e[0] for e in events] == [REQUEST, END, REQUEST, MESSAGE, END]
        conn.send_trailers(1, FAIL_STATUS, "nope")
        conn.send_message(3, b"hi")
        conn.send_trailers(3, 0)
        frames = parse_frames(conn.output())
        first = [(kind, flags) for kind, flags, stream_id, _ in frames if stream_id == 1]
        assert first == [(HEADERS_FRAME, END_HEADERS | END_STREAM)]
        third = [(kind, flags, payload) for kind, flags, stream_id, payload in frames if stream_id == 3]
        assert [(kind, flags) for kind, flags, _ in third] == [
            (HEADERS_FRAME, END_HEADERS), (DATA, 0), (HEADERS_FRAME, END_HEADERS | END_STREAM)
        ]  # fmt: skip
        assert third[1][2] == grpc_message(b"hi")
        assert sorted(e[1:] for e in conn.receive(b"") if e[0] == CLOSED) == [(1, 0), (3, 0)]
        assert conn.open_streams == 0
    finally:
        conn.close()


def test_messages_are_reassembled_across_frames_and_reads() -> None:
    big = bytes(range(256)) * 300
    body = grpc_message(b"one") + grpc_message(b"", compressed=True) + grpc_message(big) + grpc_message(b"last")
    # prefixes and payloads split between DATA frames (of at most 16 KiB, HTTP/2's default limit)
    cuts = [0, 2, 9, 10, 5000, *range(20000, len(body) - 3, 16000), len(body) - 3, len(body)]
    data_frames = b"".join(frame(DATA, 0, 1, body[a:b]) for a, b in itertools.pairwise(cuts))
    wire = client_start() + request_headers(1, BIDI) + data_frames + frame(DATA, END_STREAM, 1)
    expected = [(MESSAGE, 1, b"one", False), (MESSAGE, 1, b"", True), (MESSAGE, 1, big, False),
                (MESSAGE, 1, b"last", False), (END, 1)]  # fmt: skip
    for step in (len(wire), 1, 7):  # all at once, byte by byte, in odd slices
        conn = Connection(max_message_bytes=1 << 20)
        try:
            events = [e for i in range(0, len(wire), step) for e in conn.receive(wire[i : i + step])]
        finally:
            conn.close()
        assert events[0][:3] == (REQUEST, 1, BIDI)
        assert events[1:] == expected


def test_too_large_skips_the_message_and_keeps_reading_the_next() -> None:
    conn = Connection(max_message_bytes=10)
    try:
        body = grpc_message(b"x" * 11) + grpc_message(b"ok")
        events = conn.receive(client_start() + request_headers(1, BIDI)
                              + frame(DATA, 0, 1, body[:7]) + frame(DATA, END_STREAM, 1, body[7:]))  # fmt: skip
        assert events[1:] == [(TOO_LARGE, 1, 11), (MESSAGE, 1, b"ok", False), (END, 1)]
    finally:
        conn.close()


def test_calls_on_unknown_or_finished_streams_are_ignored() -> None:
    conn = Connection(max_message_bytes=10)
    try:
        conn.receive(client_start() + request_headers(1, ECHO, end_stream=True))
        conn.send_trailers(1, 0)
        conn.send_message(1, b"late")
        conn.send_trailers(1, 0)
        conn.reset(1)
        conn.send_message(99, b"nobody")
        conn.reset(99)
        frames = parse_frames(conn.output())
        assert [kind for kind, _, stream_id, _ in frames if stream_id == 1] == [HEADERS_FRAME]
        assert not [f for f in frames if f[2] == 99]
    finally:
        conn.close()
    conn.send_message(1, b"after close")
    assert conn.receive(b"more") == []
    assert conn.output() == b""


def test_initial_metadata_goes_once() -> None:
    conn = Connection(max_message_bytes=10)
    try:
        conn.receive(client_start() + request_headers(1, HEADERS))
        conn.send_initial_metadata(1, [("X-Upper", "value")])
        with pytest.raises(ValueError, match="already sent"):
            conn.send_initial_metadata(1, [("x-again", "no")])
    finally:
        conn.close()


def test_reset_sends_rst_stream_and_closes_with_its_code() -> None:
    conn = Connection(max_message_bytes=10)
    try:
        conn.receive(client_start() + request_headers(1, HANG))
        assert conn.open_streams == 1
        conn.reset(1)
        frames = parse_frames(conn.output())
        assert [(kind, payload) for kind, _, stream_id, payload in frames if stream_id == 1] == [
            (RST_STREAM, struct.pack(">I", 8))
        ]
        assert conn.receive(b"") == [(CLOSED, 1, 8)]
        assert conn.open_streams == 0
    finally:
        conn.close()


def test_graceful_shutdown_lets_open_streams_finish_and_then_wants_close() -> None:
    conn = Connection(max_message_bytes=10)
    try:
        conn.receive(client_start() + request_headers(1, ECHO))
        conn.output()
        conn.shutdown(graceful=True)
        frames = parse_frames(conn.output())
        notice = next(payload for kind, _, _, payload in frames if kind == GOAWAY)
        assert struct.unpack(">II", notice[:8]) == ((1 << 31) - 1, 0)
        ping = next(payload for kind, flags, _, payload in frames if kind == PING and not flags & ACK)
        conn.receive(frame(PING, ACK, 0, ping))
        final = next(payload for kind, _, _, payload in parse_frames(conn.output()) if kind == GOAWAY)
        assert struct.unpack(">II", final[:8]) == (1, 0)
        conn.receive(request_headers(3, ECHO, end_stream=True))  # opened after the GOAWAY: not a call
        assert conn.open_streams == 1 and not conn.wants_close
        assert conn.receive(frame(DATA, END_STREAM, 1, grpc_message(b"go"))) == [
            (MESSAGE, 1, b"go", False), (END, 1)
        ]  # fmt: skip
        conn.send_message(1, b"go")
        conn.send_trailers(1, 0)
        conn.output()
        assert conn.receive(b"") == [(CLOSED, 1, 0)]
        assert conn.wants_close
    finally:
        conn.close()


def test_a_broken_frame_raises_and_leaves_a_goaway_to_send() -> None:
    conn = Connection(max_message_bytes=10)
    try:
        conn.output()
        with pytest.raises(H2ProtocolError, match="PROTOCOL_ERROR"):
            conn.receive(client_start() + frame(DATA, 0, 0, b"data on the connection stream"))
        goaway = next(payload for kind, _, _, payload in parse_frames(conn.output()) if kind == GOAWAY)
        assert struct.unpack(">I", goaway[4:8])[0] == 1  # PROTOCOL_ERROR
        assert conn.wants_close
        with pytest.raises(H2ProtocolError):
            conn.receive(frame(PING, 0, 0, b"8 bytes!"))
    finally:
        conn.close()


def test_shutdown_that_is_not_graceful_ends_the_connection_once_written() -> None:
    conn = Connection(max_message_bytes=10)
    try:
        conn.receive(client_start() + request_headers(1, HANG) + request_headers(3, HANG))
        conn.shutdown(graceful=False)
        goaway = next(payload for kind, _, _, payload in parse_frames(conn.output()) if kind == GOAWAY)
        assert struct.unpack(">II", goaway[:8]) == (3, 0)
        assert conn.wants_close
    finally:
        conn.close()


def test_grpc_message_percent_encoding() -> None:
    assert percent_encode("plain text") == "plain text"
    assert percent_encode("100%") == "100%25"
    assert percent_encode("Größe\n") == "Gr%C3%B6%C3%9Fe%0A"


RST_INTERNAL_ERROR = struct.pack(">I", 2)


def stream_window_updates(frames: list[tuple[int, int, int, bytes]], stream_id: int) -> int:
    return sum(struct.unpack(">I", p)[0] for kind, _, sid, p in frames if kind == WINDOW_UPDATE and sid == stream_id)


def test_the_stream_window_reopens_only_as_the_application_releases_what_it_read() -> None:
    window = 65535
    conn = Connection(max_message_bytes=1 << 20, stream_window=window)
    try:
        conn.output()
        message = grpc_message(b"r" * 995)  # 1000 bytes on the wire
        body = message * 1000
        conn.receive(client_start() + frame(SETTINGS, ACK, 0) + request_headers(1, BIDI))
        events: list[Event] = []
        sent, credit = 0, window
        for _ in range(50):  # the client sends whatever the server allows
            if not credit:
                break
            chunk = body[sent : sent + credit]
            events += conn.receive(
                b"".join(frame(DATA, 0, 1, chunk[i : i + 16384]) for i in range(0, len(chunk), 16384))
            )
            sent += len(chunk)
            credit = stream_window_updates(parse_frames(conn.output()), 1)
        assert credit == 0, "the window of a stream whose messages nobody took kept opening"
        assert sent <= 3 * window
        messages = [e for e in events if e[0] == MESSAGE]
        assert len(messages) == sent // len(message)
        # the connection window is not held back, so other streams of the connection still flow
        conn.receive(request_headers(3, ECHO) + frame(DATA, END_STREAM, 3, grpc_message(b"other")))
        # taking the messages gives the window back
        for event in messages:
            conn.release(1, 5 + len(event[2]))
        assert stream_window_updates(parse_frames(conn.output()), 1) > 0
    finally:
        conn.close()


def test_the_response_queue_of_a_stream_reports_when_it_is_over_its_limit() -> None:
    conn = Connection(max_message_bytes=1 << 20, send_queue_limit=100_000)
    try:
        conn.receive(client_start() + request_headers(1, STREAM, end_stream=True))
        assert conn.send_message(1, b"s" * 60_000) is False
        assert conn.queued(1) == 60_005
        assert conn.send_message(1, b"s" * 60_000) is True  # more than 100 000 bytes wait for the client
        conn.output()  # the client's initial window (65 535 bytes) lets part of it go
        assert conn.queued(1) == 2 * 60_005 - 65535
        conn.receive(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20))
                     + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 20)))  # fmt: skip
        conn.output()
        assert conn.queued(1) == 0
        conn.send_trailers(1, 0)
        conn.output()
        assert conn.receive(b"") == [(CLOSED, 1, 0)]
        assert conn.queued(1) == -1
    finally:
        conn.close()


def hpack_bomb(stream_id: int, path: str, copies: int) -> bytes:
    """A request whose one 4000-byte header is added to the HPACK table once, then referenced `copies` times."""
    fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
              ("content-type", "application/grpc"), ("te", "trailers")]  # fmt: skip
    block = b"".join(hpack_literal(name, value) for name, value in fields)
    value = b"b" * 4000
    block += b"\x40" + hpack_integer(5, 7) + b"x-big" + hpack_integer(len(value), 7) + value  # incremental indexing
    block += bytes([0x80 | 62]) * copies  # indexed: the entry just added, 4 KB each time
    return frame(HEADERS_FRAME, END_HEADERS, stream_id, block)


def test_a_header_list_over_16_kib_is_answered_without_a_request_event() -> None:
    conn = Connection(max_message_bytes=1024)
    try:
        events = conn.receive(client_start() + hpack_bomb(1, ECHO, copies=2000)  # 8 MB of headers, decoded
                              + frame(DATA, END_STREAM, 1, grpc_message(b"x")) + request_headers(3, ECHO))  # fmt: skip
        assert [e[0] for e in events] == [REQUEST]  # only stream 3
        assert events[0][1] == 3
        frames = parse_frames(conn.output())
        answer = [(kind, flags) for kind, flags, stream_id, _ in frames if stream_id == 1]
        assert answer[0] == (HEADERS_FRAME, END_HEADERS | END_STREAM)  # Trailers-Only
        assert conn.open_streams == 1
        assert conn.receive(b"") == []  # no CLOSED for a stream that never was a call
    finally:
        conn.close()


@pytest.mark.parametrize(
    "fields",
    [
        [(":method", "GET"), (":scheme", "http"), (":authority", "x"), ("te", "trailers")],
        [(":method", "PUT"), (":scheme", "http"), (":authority", "x"), ("te", "trailers")],
        [(":method", "POST"), (":scheme", "http"), (":authority", "x")],
    ],
    ids=["GET", "PUT", "without te"],
)
def test_a_request_that_is_not_a_grpc_post_is_reset_without_a_request_event(fields: list[tuple[str, str]]) -> None:
    conn = Connection(max_message_bytes=1024)
    try:
        block = b"".join(hpack_literal(name, value) for name, value in [(":path", ECHO), *fields])
        events = conn.receive(client_start() + frame(HEADERS_FRAME, END_HEADERS, 1, block)
                              + frame(DATA, END_STREAM, 1, grpc_message(b"x")))  # fmt: skip
        assert events == []
        answer = [(kind, payload) for kind, _, stream_id, payload in parse_frames(conn.output()) if stream_id == 1]
        assert answer == [(RST_STREAM, RST_INTERNAL_ERROR)]
        assert conn.open_streams == 0 and conn.receive(b"") == []
    finally:
        conn.close()

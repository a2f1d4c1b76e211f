"""The listening socket the REST side is served from: shared for handovers, and without Nagle's delay."""

from __future__ import annotations

import socket

from edgewise.runtime.scoring.server import _reuseport_socket


def test_reuseport_socket_is_tcp_without_nagle_and_shareable() -> None:
    first = _reuseport_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        # asyncio switches Nagle off only for sockets that declare IPPROTO_TCP; without it a response
        # written in two parts waits for the client's delayed ACK.
        assert first.proto == socket.IPPROTO_TCP
        assert first.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        second = _reuseport_socket("127.0.0.1", port)  # a newer server beside the old one
        second.close()
    finally:
        first.close()


def test_accepted_connections_have_nagle_off() -> None:
    listener = _reuseport_socket("127.0.0.1", 0)
    try:
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert client is not None
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        listener.close()

"""`edgewise-score`: serve a model repository over KServe v2 gRPC and REST."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from edgewise.runtime.scoring.settings import ServerSettings


class ArgumentsError(ValueError):
    """The arguments are not the scoring server's (`read_arguments`: the caller keeps the process alive)."""


class _Parser(argparse.ArgumentParser):
    """With `raising`, a usage error raises ArgumentsError instead of printing usage and exiting."""

    def __init__(self, *args: Any, raising: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raising = raising

    def error(self, message: str) -> NoReturn:
        if self._raising:
            raise ArgumentsError(message)
        super().error(message)


@functools.cache
def argument_parser(*, raising: bool = False) -> argparse.ArgumentParser:
    """The command line's parser (parsing leaves it unchanged, so one serves every call)."""
    parser = _Parser(prog="edgewise-score", description=__doc__, raising=raising, add_help=not raising)
    parser.add_argument("--model-repository", type=Path, required=True, help="DIR/{model}/{version}/model.onnx")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics", action="store_true", help="record Prometheus metrics, served at /metrics")
    parser.add_argument(
        "--repository-poll-secs", type=float, default=2.0,
        help="seconds between scans for new, changed or removed versions (0: scan once)",
    )
    parser.add_argument(
        "--strict-readiness", action="store_true", help="server is ready only when every model is ready"
    )
    parser.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--intra-op-threads", type=int, default=0, help="onnxruntime threads (0: auto)")
    parser.add_argument(
        "--intra-op-spinning", action="store_true",
        help="let onnxruntime's threads busy-wait between runs: a little lower latency for a CPU kept busy",
    )
    parser.add_argument(
        "--admin-socket-dir", type=Path, help="private HTTP (DIR/http.sock) and gRPC (DIR/grpc.sock) listeners"
    )
    parser.add_argument(
        "--defer-listen", action="store_true", help="open the public ports on POST /v2/admin/listen (admin socket)"
    )
    parser.add_argument(
        "--grpc-engine", default="auto", choices=["auto", "native", "grpcio"],
        help="gRPC transport: native (libnghttp2, compiled on first use), grpcio, or auto (native when it builds)",
    )
    parser.add_argument("--sample-file", type=Path, help="append sampled inputs and outputs here as JSON lines")
    parser.add_argument("--sample-rate", type=float, default=0.0, help="fraction of inferences to sample (0-1)")
    parser.add_argument("--sample-file-max-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    return parser


def parse_args(argv: list[str] | None = None) -> ServerSettings:
    parser = argument_parser()
    opts = parser.parse_args(argv)
    return _checked(_settings(opts), log_level=opts.log_level)


def read_arguments(argv: list[str]) -> dict[str, Any]:
    """The settings `argv` asks for, as JSON, not yet checked against the file system (the caller may see
    another one): a module launcher hands them to a forked server (`main_from`), which then does not parse its
    command line again. ArgumentsError when `argv` is not a valid command line."""
    opts = argument_parser(raising=True).parse_args(argv)
    return {**_settings(opts).to_json(), "log_level": opts.log_level}


def _settings(opts: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        model_repository=opts.model_repository,
        host=opts.host,
        grpc_port=opts.grpc_port,
        http_port=opts.http_port,
        metrics=opts.metrics,
        poll_interval=opts.repository_poll_secs,
        strict_readiness=opts.strict_readiness,
        max_message_bytes=opts.max_message_bytes,
        intra_op_threads=opts.intra_op_threads,
        intra_op_spinning=opts.intra_op_spinning,
        admin_socket_dir=opts.admin_socket_dir,
        defer_listen=opts.defer_listen,
        grpc_engine=opts.grpc_engine,
        sample_file=opts.sample_file,
        sample_rate=opts.sample_rate,
        sample_file_max_bytes=opts.sample_file_max_bytes,
    )


def _checked(settings: ServerSettings, *, log_level: str) -> ServerSettings:
    """Logging set up as asked, and what the parser alone cannot check: a usage error otherwise."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    parser = argument_parser()
    if settings.defer_listen and settings.admin_socket_dir is None:
        parser.error("--defer-listen needs --admin-socket-dir (the listen request arrives there)")
    if not settings.model_repository.is_dir():
        parser.error(f"model repository {settings.model_repository} is not a directory")
    return settings


def new_event_loop(grpc_engine: str) -> asyncio.AbstractEventLoop:
    """uvloop when installed and gRPC runs on the native transport (grpc.aio keeps asyncio's own loop)."""
    from edgewise.runtime.scoring.h2grpc import native

    if grpc_engine != "grpcio" and native.available() is None:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    serve(parse_args(argv))


def main_from(document: Mapping[str, Any]) -> None:
    """`main` for settings `read_arguments` made from the command line."""
    settings = ServerSettings.from_json({key: value for key, value in document.items() if key != "log_level"})
    serve(_checked(settings, log_level=str(document.get("log_level", "info"))))


def serve(settings: ServerSettings) -> None:
    from edgewise.runtime.scoring.server import run_server

    loop = new_event_loop(settings.grpc_engine)
    try:
        loop.run_until_complete(run_server(settings))
    finally:
        loop.close()  # does not wait for the executor: a model load can block on its file forever
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in stuck:
        thread.join(timeout=1.0)
    if any(t.is_alive() for t in stuck):
        logging.getLogger("edgewise.scoring").warning("exiting with a model load still running")
        logging.shutdown()
        os._exit(0)


if __name__ == "__main__":
    main()

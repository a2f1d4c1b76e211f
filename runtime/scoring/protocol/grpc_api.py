"""The gRPC adapter: `inference.GRPCInferenceService`, grpc.health.v1 and server reflection.

Handlers only unpack messages and call the dataplane; `_status` is the one place that turns
ScoringError into a gRPC status.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from edgewise.proto import inference_pb2 as pb
from edgewise.runtime.scoring.dataplane import DataPlane
from edgewise.runtime.scoring.errors import InvalidInputError, ScoringError
from edgewise.runtime.scoring.h2grpc import native
from edgewise.runtime.scoring.h2grpc.server import NativeServer
from edgewise.runtime.scoring.protocol.convert import request_from_proto, response_to_proto
from edgewise.runtime.scoring.stats import Duration, ModelStats
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

SERVICE = "inference.GRPCInferenceService"
log = logging.getLogger("edgewise.scoring.grpc")

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Any, Context], Awaitable[T]]


def _status(handler: Handler[T]) -> Handler[T]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Context) -> T:
        try:
            return await handler(self, request, context)
        except ScoringError as exc:
            await context.abort(grpc.StatusCode[exc.grpc_status], str(exc))
            raise  # unreachable: abort raises
    return wrapper


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics_to_proto(stats: ModelStats) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=stats.name,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for size, b in sorted(stats.batches.items())
        ],
    )


class InferenceServicer:
    def __init__(self, dataplane: DataPlane, *, max_message_bytes: int) -> None:
        self.dataplane = dataplane
        self.max_message_bytes = max_message_bytes

    async def _infer(self, data: bytes) -> pb.ModelInferResponse:
        if len(data) > self.max_message_bytes:
            raise InvalidInputError(
                f"request of {len(data)} bytes exceeds the limit of {self.max_message_bytes} bytes "
                "(--max-message-bytes)"
            )
        try:
            message = pb.ModelInferRequest.FromString(data)
        except Exception as exc:  # protobuf's DecodeError
            raise InvalidInputError(f"malformed ModelInferRequest: {exc}") from None
        response = await self.dataplane.infer(request_from_proto(message))
        return response_to_proto(response, raw=bool(message.raw_input_contents))

    @_status
    async def ModelInfer(self, data: bytes, context: Context) -> bytes:
        return (await self._infer(data)).SerializeToString()

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for data in requests:
            try:
                yield pb.ModelStreamInferResponse(infer_response=await self._infer(data))
            except ScoringError as exc:
                yield pb.ModelStreamInferResponse(error_message=str(exc))

    @_status
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @_status
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @_status
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    @_status
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        name, version, extensions = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    @_status
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        meta = self.dataplane.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    @_status
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        stats = self.dataplane.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[statistics_to_proto(s) for s in stats])

    @_status
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        entry = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                entry(name=e.name, version=e.version, state=e.state, reason=e.reason)
                for e in self.dataplane.repository_index(request.ready)
            ]
        )

    @_status
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        await self.dataplane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @_status
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def generic_handler(self) -> grpc.GenericRpcHandler:
        def unary(method: Any, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )

        methods = {
            "ServerLive": unary(self.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": unary(self.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": unary(
                self.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
            ),
            "ModelMetadata": unary(self.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            # Infer takes the undecoded bytes so that the size limit is checked before parsing.
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self.ModelInfer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self.ModelStreamInfer,
                response_serializer=pb.ModelStreamInferResponse.SerializeToString,
            ),
            "ModelStatistics": unary(
                self.ModelStatistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse
            ),
            "RepositoryIndex": unary(
                self.RepositoryIndex, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse
            ),
            "RepositoryModelLoad": unary(
                self.RepositoryModelLoad, pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse
            ),
            "RepositoryModelUnload": unary(
                self.RepositoryModelUnload, pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)


ENGINES = ("auto", "native", "grpcio")


class GrpcServer(Protocol):
    """What the scoring server needs of a gRPC server: both grpc.aio's and the native one have it."""

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None: ...
    def add_insecure_port(self, address: str) -> int: ...
    async def start(self) -> None: ...
    async def stop(self, grace: float | None) -> None: ...


class GrpcEngineError(ScoringError):
    """`--grpc-engine native` was asked for and the native transport cannot be built here."""


def _new_server(engine: str, transport_limit: int) -> GrpcServer:
    """The native HTTP/2 server unless grpcio is asked for or the native one cannot be built ("auto")."""
    if engine not in ENGINES:
        raise ValueError(f"unknown gRPC engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine != "grpcio":
        reason = native.available()
        if reason is None:
            return NativeServer(max_receive_message_length=transport_limit)
        if engine == "native":
            raise GrpcEngineError(f"the native gRPC transport is unavailable: {reason}")
        _warn_fallback(reason)
    server: GrpcServer = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", transport_limit),
            ("grpc.max_send_message_length", -1),
        ]
    )
    return server


def transport_name(server: GrpcServer) -> str:
    return "native" if isinstance(server, NativeServer) else "grpcio"


@functools.cache
def _warn_fallback(reason: str) -> None:
    log.warning("gRPC is served by grpcio, which costs more per call: %s", reason)


@functools.cache
def describe_all_services() -> None:
    """Reflection answers from the inference package's private pool, which also gets the health and reflection
    files so that every listed service can be described (once per process)."""
    for descriptor in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        with contextlib.suppress(TypeError):  # already there
            pb.POOL.AddSerializedFile(descriptor.serialized_pb)


def build_grpc_server(
    dataplane: DataPlane,
    *,
    host: str,
    port: int,
    max_message_bytes: int,
    listen_tcp: bool = True,
    unix_socket: Path | None = None,
    health_servicer: health.aio.HealthServicer | None = None,
    engine: str = "auto",
) -> tuple[GrpcServer, health.aio.HealthServicer, int]:
    """A gRPC server on host:port and/or a unix socket; SO_REUSEPORT lets a new server start beside an old one.

    Servers built with the same `health_servicer` report the same serving status (a private admin listener
    and the public one of one process). The returned port is 0 without `listen_tcp`.
    """
    # The transport accepts up to twice the limit so that oversized requests get a clear
    # INVALID_ARGUMENT from the servicer instead of a bare RESOURCE_EXHAUSTED.
    transport_limit = min(2 * max_message_bytes, 2**31 - 1)
    server = _new_server(engine, transport_limit)
    servicer = InferenceServicer(dataplane, max_message_bytes=max_message_bytes)
    server.add_generic_rpc_handlers((servicer.generic_handler(),))
    health_servicer = health_servicer or health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)  # type: ignore[arg-type]
    describe_all_services()
    names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=pb.POOL)  # type: ignore[arg-type]
    bound = 0
    if listen_tcp:
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
    if unix_socket is not None and server.add_insecure_port(f"unix:{unix_socket}") == 0:
        raise OSError(f"cannot bind gRPC to the unix socket {unix_socket}")
    return server, health_servicer, bound


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", SERVICE):
        await health_servicer.set(name, status)

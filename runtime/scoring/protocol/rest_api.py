"""The REST adapter: KServe v2 HTTP endpoints, Triton's statistics and repository routes, /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from edgewise.runtime.scoring.dataplane import DataPlane
from edgewise.runtime.scoring.errors import InvalidInputError, ScoringError
from edgewise.runtime.scoring.metrics import ServerMetrics
from edgewise.runtime.scoring.protocol.rest_codec import HEADER_LENGTH, decode_request, encode_response
from edgewise.runtime.scoring.stats import Duration, ModelStats
from edgewise.runtime.scoring.types import TensorSpec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

Endpoint = Callable[[Request], Awaitable[Response]]


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def _error(exc: ScoringError) -> Response:
    return _json({"error": str(exc)}, exc.http_status)


def _flag(value: bool) -> Response:
    """Health answers by status code alone, as the protocol says: 200 for true, 400 for false."""
    return Response(status_code=200 if value else 400)


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def statistics_json(stats: ModelStats) -> dict[str, Any]:
    return {
        "name": stats.name,
        "version": stats.version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            "compute_input": _duration(stats.compute_input),
            "compute_infer": _duration(stats.compute_infer),
            "compute_output": _duration(stats.compute_output),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(b.compute_input),
                "compute_infer": _duration(b.compute_infer),
                "compute_output": _duration(b.compute_output),
            }
            for size, b in sorted(stats.batches.items())
        ],
    }


def rest_routes(dataplane: DataPlane, *, metrics: ServerMetrics | None, max_message_bytes: int) -> list[BaseRoute]:
    """The KServe v2 routes of `dataplane`: one list may serve several apps (a server's admin and public one)."""

    def guarded(handler: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ScoringError as exc:
                return _error(exc)

        return endpoint

    def model_args(request: Request) -> tuple[str, str]:
        params = request.path_params
        return params["model"], params.get("version", "")

    async def live(request: Request) -> Response:
        return _flag(dataplane.live())

    async def ready(request: Request) -> Response:
        return _flag(dataplane.ready())

    async def server_metadata(request: Request) -> Response:
        name, version, extensions = dataplane.server_metadata()
        return _json({"name": name, "version": version, "extensions": list(extensions)})

    async def model_metadata(request: Request) -> Response:
        meta = dataplane.model_metadata(*model_args(request))
        return _json(
            {
                "name": meta.name,
                "versions": list(meta.versions),
                "platform": meta.platform,
                "inputs": [_tensor(t) for t in meta.inputs],
                "outputs": [_tensor(t) for t in meta.outputs],
            }
        )

    async def model_ready(request: Request) -> Response:
        return _flag(dataplane.model_ready(*model_args(request)))

    async def infer(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_message_bytes:
            raise InvalidInputError(
                f"request of {declared} bytes exceeds the limit of {max_message_bytes} bytes "
                "(--max-message-bytes)"
            )
        body = await request.body()
        if len(body) > max_message_bytes:
            raise InvalidInputError(f"request of {len(body)} bytes exceeds the limit of {max_message_bytes}")
        header = request.headers.get(HEADER_LENGTH)
        if header is not None and not header.isdigit():
            raise InvalidInputError(f"Inference-Header-Content-Length must be a number, got {header!r}")
        model, version = model_args(request)
        infer_request = decode_request(model, version, body, int(header) if header is not None else None)
        response = await dataplane.infer(infer_request)
        payload, json_length = encode_response(response, infer_request)
        if json_length is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    async def stats(request: Request) -> Response:
        name = request.path_params.get("model", "")
        version = request.path_params.get("version", "")
        return _json({"model_stats": [statistics_json(s) for s in dataplane.statistics(name, version)]})

    async def repository_index(request: Request) -> Response:
        body = await request.body()
        ready_only = False
        if body.strip():
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInputError(f"the request is not valid JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise InvalidInputError("the request must be a JSON object")
            ready_only = bool(doc.get("ready", False))
        return _json(
            [
                {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
                for e in dataplane.repository_index(ready_only)
            ]
        )

    async def load(request: Request) -> Response:
        await dataplane.load_model(request.path_params["model"])
        return Response(status_code=200)

    async def unload(request: Request) -> Response:
        await dataplane.unload_model(request.path_params["model"])
        return Response(status_code=200)

    async def prometheus(request: Request) -> Response:
        if metrics is None:
            return _json({"error": "metrics are off; start edgewise-score with --metrics"}, 404)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    routes: list[BaseRoute] = [
        Route("/v2/health/live", guarded(live)),
        Route("/v2/health/ready", guarded(ready)),
        Route("/v2", guarded(server_metadata)),
        Route("/v2/models/stats", guarded(stats)),
        Route("/v2/repository/index", guarded(repository_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", guarded(load), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", guarded(unload), methods=["POST"]),
        Route("/metrics", prometheus),
    ]
    for base in (model, versioned):
        routes += [
            Route(base, guarded(model_metadata)),
            Route(f"{base}/ready", guarded(model_ready)),
            Route(f"{base}/infer", guarded(infer), methods=["POST"]),
            Route(f"{base}/stats", guarded(stats)),
        ]
    return routes
